//! Where CHAP secrets come from besides the command line, where every user of the machine
//! sees them (`ps`, `/proc/PID/cmdline`): the environment, with libiscsi's names so
//! scripts written for its tools and for QEMU work unchanged, and files.
//!
//! libiscsi reads `LIBISCSI_CHAP_USERNAME` and `LIBISCSI_CHAP_PASSWORD` (one-way CHAP),
//! `LIBISCSI_CHAP_TARGET_USERNAME` and `LIBISCSI_CHAP_TARGET_PASSWORD` (mutual CHAP), and
//! lets credentials in the URL override them; our tools do the same, with their options
//! above both.

use std::path::Path;

pub const CHAP_USERNAME_ENV: &str = "LIBISCSI_CHAP_USERNAME";
pub const CHAP_PASSWORD_ENV: &str = "LIBISCSI_CHAP_PASSWORD";
pub const CHAP_TARGET_USERNAME_ENV: &str = "LIBISCSI_CHAP_TARGET_USERNAME";
pub const CHAP_TARGET_PASSWORD_ENV: &str = "LIBISCSI_CHAP_TARGET_PASSWORD";

/// Shortest secret RFC 7143 section 12.1.3 allows (96 bits); targets may refuse shorter.
pub const MIN_CHAP_SECRET_BYTES: usize = 12;

/// CHAP credentials found in the environment (libiscsi's variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvChap {
    pub user: Option<String>,
    pub secret: Option<String>,
    pub target_user: Option<String>,
    pub target_secret: Option<String>,
}

impl EnvChap {
    pub fn from_env() -> EnvChap {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        EnvChap {
            user: var(CHAP_USERNAME_ENV),
            secret: var(CHAP_PASSWORD_ENV),
            target_user: var(CHAP_TARGET_USERNAME_ENV),
            target_secret: var(CHAP_TARGET_PASSWORD_ENV),
        }
    }
}

/// Reads a secret from a file: its content without one trailing line end. An empty
/// secret is an error.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the secret in {}: {e}", path.display()))?;
    let secret = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(format!("{} holds no secret", path.display()));
    }
    Ok(secret.to_string())
}

/// A warning for an initiator whose secret is shorter than RFC 7143 asks, or `None`.
pub fn short_secret_warning(what: &str, secret: &[u8]) -> Option<String> {
    (secret.len() < MIN_CHAP_SECRET_BYTES).then(|| {
        format!(
            "{what} is {} bytes; RFC 7143 section 12.1.3 asks for at least \
             {MIN_CHAP_SECRET_BYTES}, and targets may refuse it",
            secret.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_loses_its_line_end_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("datapath-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "twelve-bytes-plus\r\n").unwrap();
        assert_eq!(read_secret_file(&file).unwrap(), "twelve-bytes-plus");
        std::fs::write(&file, "no-line-end").unwrap();
        assert_eq!(read_secret_file(&file).unwrap(), "no-line-end");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_secret_file(&file)
            .unwrap_err()
            .contains("holds no secret"));
        assert!(read_secret_file(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn short_secrets_are_warned_about() {
        assert!(short_secret_warning("CHAP secret", b"short")
            .unwrap()
            .contains("5 bytes"));
        assert!(short_secret_warning("CHAP secret", b"twelve-bytes").is_none());
    }
}
