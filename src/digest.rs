//! Digests of JSON states that do not depend on key order: the expected- and actual-state
//! hashes of drift records, saved plans and review.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The hex sha256 of the compact JSON of `v` with keys sorted at every level: equal values hash equal on
/// every machine (serde_json prints numbers and strings one way only). Streamed into the hash,
/// without the sorted copy: an apply hashes every item's expected and actual state.
pub fn state_hash(v: &Value) -> String {
    let mut h = HashWriter(Sha256::new());
    // Writing JSON into a hash cannot fail.
    let _ = write_sorted(&mut h, v);
    hex::encode(h.0.finalize())
}

/// [`state_hash`] of the object with these entries.
pub fn entries_hash<'v>(entries: impl Iterator<Item = (&'v String, &'v Value)>) -> String {
    let mut h = HashWriter(Sha256::new());
    let _ = write_sorted_object(&mut h, entries);
    hex::encode(h.0.finalize())
}

/// Feeds written bytes or formatted text into a SHA-256 without building them in memory.
pub struct HashWriter(pub Sha256);

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// Lets a `#[derive(Hash)]` value stream every field into the SHA-256 (the judged digest of
/// 20,000 items spent most of its time formatting them with `{:?}`).
impl std::hash::Hasher for HashWriter {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// Not a digest: the first 8 bytes of the SHA-256 so far, for code that asks anyway.
    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }
}

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The compact JSON of `v` with keys sorted at every level, written without building it.
fn write_sorted(w: &mut impl std::io::Write, v: &Value) -> std::io::Result<()> {
    match v {
        Value::Object(m) => write_sorted_object(w, m.iter()),
        Value::Array(a) => {
            w.write_all(b"[")?;
            for (n, x) in a.iter().enumerate() {
                if n > 0 {
                    w.write_all(b",")?;
                }
                write_sorted(w, x)?;
            }
            w.write_all(b"]")
        }
        other => serde_json::to_writer(w, other).map_err(std::io::Error::from),
    }
}

fn write_sorted_object<'v>(
    w: &mut impl std::io::Write,
    entries: impl Iterator<Item = (&'v String, &'v Value)>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = entries.collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    w.write_all(b"{")?;
    for (n, (k, v)) in entries.into_iter().enumerate() {
        if n > 0 {
            w.write_all(b",")?;
        }
        serde_json::to_writer(&mut *w, k).map_err(std::io::Error::from)?;
        w.write_all(b":")?;
        write_sorted(w, v)?;
    }
    w.write_all(b"}")
}

/// `v` with every object's keys sorted, recursively; arrays keep their order (it means
/// something: a list of return codes, a command's words).
pub fn canonical(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut pairs: Vec<(String, Value)> = m.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(pairs.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}
