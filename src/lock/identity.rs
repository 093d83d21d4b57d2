//! Who holds a lock: the identity written into lock files, and this machine's name.

use super::*;

/// The current time in UNIX seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Who we are in lock files, so ownership follows the person and not the checkout:
/// `$CINCH_IDENTITY`, else `user@hostname` (the user from `$USER`/`$LOGNAME`, else the password
/// database, as under cron or in containers). The git branch never takes part.
pub fn identity() -> String {
    if let Ok(id) = std::env::var("CINCH_IDENTITY")
        && !id.trim().is_empty()
    {
        return id;
    }
    format!("{}@{}", login_user(), hostname())
}

/// The user running cinch: `$USER`, else `$LOGNAME`, else the password database entry of our uid.
pub(super) fn login_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|u| !u.trim().is_empty())
        .or_else(passwd_user)
        // SAFETY: getuid cannot fail.
        .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }))
}

/// The password-database name of this process's uid.
pub(super) fn passwd_user() -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain old data; getpwuid_r writes strings only into `buf` (valid for its
    // length) and sets `result` to `&pw` or null.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::getuid(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pw.pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pw.pw_name).to_string_lossy();
        (!name.is_empty()).then(|| name.into_owned())
    }
}

/// This machine's host name, part of the default identity and of a hard lock's holder.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length and gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
