//! The vault's cryptography, all from RustCrypto: HKDF-SHA256 derives per-purpose keys and
//! deterministic values from a named key; XChaCha20-Poly1305 (random 24-byte nonce) encrypts.
//!
//! A ciphertext is one line of text: `cinch:v1:KEYNAME:FINGERPRINT:BASE64`, where the base64
//! holds nonce and sealed bytes. Name and version let keys rotate; the fingerprint (derived
//! from the key, revealing nothing about it) tells a wrong key apart from a tampered value.
//! The header is authenticated as associated data, so it cannot be swapped either.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use super::SecretError;

/// Bytes in a key.
pub const KEY_LEN: usize = 32;
/// The current ciphertext format version.
pub const VERSION: &str = "v1";
/// What every ciphertext starts with.
pub const PREFIX: &str = "cinch:v1:";
const NONCE_LEN: usize = 24;

/// Key names: letters, digits, `_` and `-` (they appear inside ciphertexts and `@NAME` ids).
pub fn check_key_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a key name has 1 to 64 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "key name {name:?} may only have letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

/// A named 256-bit key from the key file.
#[derive(Clone)]
pub struct Key {
    /// The name ciphertexts refer to it by (`default`, `db`, ...).
    pub name: String,
    /// The secret itself; never printed (Debug shows the fingerprint).
    pub bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}, {})", self.name, self.fingerprint())
    }
}

impl Key {
    /// A fresh random key.
    pub fn generate(name: &str) -> Key {
        let k = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&k);
        Key {
            name: name.to_string(),
            bytes,
        }
    }

    /// `len` bytes derived from the key for one purpose and id (HKDF-SHA256 expand; at most
    /// 8160 bytes, which callers stay under).
    pub fn derive(&self, purpose: &str, id: &str, len: usize) -> Vec<u8> {
        let hk = Hkdf::<Sha256>::new(Some(b"cinch secrets"), &self.bytes);
        let mut info = format!("cinch {purpose} {VERSION}").into_bytes();
        info.push(0);
        info.extend_from_slice(id.as_bytes());
        let mut out = vec![0u8; len.min(255 * 32)];
        // Only fails for lengths above 255 * 32, which `min` rules out.
        let _ = hk.expand(&info, &mut out);
        out
    }

    /// Eight hex digits naming this key in ciphertexts; derived, so it reveals nothing.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.derive("fingerprint", "", 4))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        let sub = self.derive("encrypt", "", KEY_LEN);
        XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&sub))
    }

    /// Encrypts `plain` into a one-line ciphertext naming this key.
    pub fn encrypt(&self, plain: &[u8]) -> String {
        let header = format!("{PREFIX}{}:{}", self.name, self.fingerprint());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plain,
            aad: header.as_bytes(),
        };
        // XChaCha20-Poly1305 encryption fails only for messages beyond 256 GiB.
        let sealed = self.cipher().encrypt(&nonce, payload).unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!("{header}:{}", B64.encode(blob))
    }

    /// Decrypts a parsed ciphertext made with this key.
    pub fn decrypt(&self, ct: &Ciphertext) -> Result<Vec<u8>, SecretError> {
        if ct.fingerprint != self.fingerprint() {
            return Err(SecretError::WrongKey {
                key: ct.key.clone(),
                theirs: ct.fingerprint.clone(),
                ours: self.fingerprint(),
            });
        }
        let blob = B64
            .decode(ct.blob.as_bytes())
            .map_err(|_| SecretError::Tampered {
                key: ct.key.clone(),
            })?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(SecretError::Tampered {
                key: ct.key.clone(),
            });
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let header = ct.header();
        let payload = Payload {
            msg: sealed,
            aad: header.as_bytes(),
        };
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SecretError::Tampered {
                key: ct.key.clone(),
            })
    }
}

/// A ciphertext split into its parts (not yet authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext {
    /// The name of the key it was encrypted with.
    pub key: String,
    /// That key's fingerprint, to tell a wrong key from a tampered value.
    pub fingerprint: String,
    /// Base64 of nonce and sealed bytes.
    pub blob: String,
}

impl Ciphertext {
    /// Splits `text` (surrounding whitespace ignored) or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Ciphertext, SecretError> {
        let text = text.trim();
        let bad = |why: &str| SecretError::Malformed(why.to_string());
        let Some(rest) = text.strip_prefix("cinch:") else {
            return Err(bad("it does not start with `cinch:v1:`"));
        };
        let mut parts = rest.splitn(4, ':');
        let version = parts.next().unwrap_or_default();
        if version != VERSION {
            return Err(bad(&format!(
                "format version `{version}` is not known (this cinch reads `{VERSION}`)"
            )));
        }
        let (Some(key), Some(fpr), Some(blob)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected cinch:v1:KEY:FINGERPRINT:DATA"));
        };
        if check_key_name(key).is_err() {
            return Err(bad("the key name is not valid"));
        }
        if fpr.len() != 8 || !fpr.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the key fingerprint is not 8 hex digits"));
        }
        Ok(Ciphertext {
            key: key.to_string(),
            fingerprint: fpr.to_ascii_lowercase(),
            blob: blob.to_string(),
        })
    }

    /// The authenticated part before the data.
    pub fn header(&self) -> String {
        format!("{PREFIX}{}:{}", self.key, self.fingerprint)
    }

    /// A short, stable name for masking (`KEY/abcd1234`), from the data, never the value.
    pub fn label(&self) -> String {
        use sha2::Digest as _;
        let h = Sha256::digest(self.blob.as_bytes());
        format!("{}/{}", self.key, hex::encode(&h[..4]))
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Deterministic alphanumeric password of `length` characters for `id`.
pub fn password(key: &Key, id: &str, length: usize) -> String {
    let stream = key.derive("password_for", id, length * 2 + 64);
    // Rejection sampling keeps every character equally likely (248 = 4 * 62).
    let mut out: String = stream
        .iter()
        .filter(|b| **b < 248)
        .take(length)
        .map(|b| ALNUM[(*b % 62) as usize] as char)
        .collect();
    let mut extra = stream.iter().cycle();
    while out.len() < length {
        let b = extra.next().copied().unwrap_or(0);
        out.push(ALNUM[(b % 62) as usize] as char);
    }
    out
}

/// Deterministic pronounceable password for `id`: four capitalised syllable pairs and two
/// digits, e.g. `Kabo-Rute-Mifa-Doze-42` (about 70 bits).
pub fn human_password(key: &Key, id: &str) -> String {
    const CONS: &[u8] = b"bcdfghjklmnprstvwxz";
    const VOW: &[u8] = b"aeiou";
    let s = key.derive("human_password_for", id, 32);
    let mut words = Vec::new();
    for w in 0..4 {
        let b = &s[w * 4..w * 4 + 4];
        let mut word = String::new();
        word.push((CONS[b[0] as usize % CONS.len()] as char).to_ascii_uppercase());
        word.push(VOW[b[1] as usize % VOW.len()] as char);
        word.push(CONS[b[2] as usize % CONS.len()] as char);
        word.push(VOW[b[3] as usize % VOW.len()] as char);
        words.push(word);
    }
    words.push(format!("{:02}", u16::from_be_bytes([s[16], s[17]]) % 100));
    words.join("-")
}

/// `n` deterministic bytes for `id`, base64.
pub fn random_bytes_b64(key: &Key, id: &str, n: usize) -> String {
    B64.encode(key.derive("random_bytes", id, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_decrypt_round_trip_and_fresh_nonces() {
        let k = Key::generate("default");
        let a = k.encrypt(b"hunter2");
        let b = k.encrypt(b"hunter2");
        assert_ne!(a, b, "each encryption uses a fresh nonce");
        let ct = Ciphertext::parse(&a).expect("parses");
        assert_eq!(ct.key, "default");
        assert_eq!(k.decrypt(&ct).expect("decrypts"), b"hunter2");
    }

    #[test]
    fn tampered_ciphertext_is_refused_not_garbled() {
        let k = Key::generate("default");
        let good = k.encrypt(b"a secret value");
        let (head, data) = good.rsplit_once(':').expect("has data");
        let mut bytes = B64.decode(data).expect("b64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let bad = format!("{head}:{}", B64.encode(bytes));
        let err = k.decrypt(&Ciphertext::parse(&bad).expect("parses"));
        assert!(matches!(err, Err(SecretError::Tampered { .. })), "{err:?}");
        // A header renamed to another key with the same fingerprint fails authentication.
        let renamed = good.replacen(":default:", ":db:", 1);
        let mut db = k.clone();
        db.name = "db".into();
        let err = db.decrypt(&Ciphertext::parse(&renamed).expect("parses"));
        assert!(matches!(err, Err(SecretError::Tampered { .. })), "{err:?}");
    }

    #[test]
    fn wrong_key_is_named_as_such() {
        let k = Key::generate("default");
        let other = Key::generate("default");
        let ct = Ciphertext::parse(&k.encrypt(b"x")).expect("parses");
        let err = other.decrypt(&ct);
        assert!(matches!(err, Err(SecretError::WrongKey { .. })), "{err:?}");
    }

    #[test]
    fn derived_values_are_deterministic_per_key_and_id() {
        let k = Key::generate("default");
        let p = password(&k, "mysql", 32);
        assert_eq!(p.len(), 32);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(p, password(&k, "mysql", 32));
        assert_ne!(p, password(&k, "postgres", 32));
        assert_ne!(p, password(&Key::generate("default"), "mysql", 32));
        assert_eq!(password(&k, "x", 1000).len(), 1000);
        let h = human_password(&k, "mysql");
        assert_eq!(h.split('-').count(), 5, "{h}");
        assert_eq!(h, human_password(&k, "mysql"));
        let r = random_bytes_b64(&k, "id", 16);
        assert_eq!(B64.decode(&r).expect("b64").len(), 16);
    }

    #[test]
    fn malformed_ciphertexts_say_why() {
        for bad in [
            "hello",
            "cinch:v9:default:00000000:AAAA",
            "cinch:v1:default",
        ] {
            let err = Ciphertext::parse(bad);
            assert!(
                matches!(err, Err(SecretError::Malformed(_))),
                "{bad}: {err:?}"
            );
        }
    }
}
