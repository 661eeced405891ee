//! iSCSI names (RFC 7143 section 4.2.7, RFC 3722 for their string profile): the checks a
//! name must pass before a target or initiator uses it.
//!
//! - `iqn.YYYY-MM.reversed.domain[:anything]`: lower case (RFC 3722 folds case, so an upper
//!   case name would be a different string on the wire from the one another node
//!   normalised), ASCII letters, digits, `-`, `.` and `:` (this implementation does not
//!   apply the Unicode part of the profile, so it accepts ASCII only).
//! - `eui.` and 16 hex digits (an EUI-64).
//! - `naa.` and 16 or 32 hex digits (RFC 3980).
//!
//! At most 223 bytes; no spaces anywhere.
#![forbid(unsafe_code)]

/// Longest iSCSI name, in bytes (RFC 7143 section 4.2.7.1).
pub const MAX_NAME_BYTES: usize = 223;

/// Why a name is not an iSCSI name: a sentence that says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not an iSCSI name: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: String,
}

/// Checks `name` against the rules in the module docs.
pub fn check_iscsi_name(name: &str) -> Result<(), NameError> {
    let fail = |reason: String| NameError {
        name: name.chars().take(80).collect(),
        reason,
    };
    if name.len() > MAX_NAME_BYTES {
        return Err(fail(format!("longer than {MAX_NAME_BYTES} bytes")));
    }
    if let Some(rest) = name.strip_prefix("iqn.") {
        return check_iqn(rest).map_err(fail);
    }
    if let Some(hex) = name.strip_prefix("eui.") {
        return check_hex(hex, &[16]).map_err(fail);
    }
    if let Some(hex) = name.strip_prefix("naa.") {
        return check_hex(hex, &[16, 32]).map_err(fail);
    }
    let lower = name.to_ascii_lowercase();
    if ["iqn.", "eui.", "naa."]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err(fail(format!(
            "the type prefix is lower case: {}{}",
            &lower[..4],
            &name[4..]
        )));
    }
    Err(fail(
        "expected iqn.YYYY-MM.reversed.domain[:identifier] (e.g. iqn.2026-11.com.example:disk1), \
         eui.<16 hex digits> or naa.<16 or 32 hex digits>"
            .into(),
    ))
}

fn check_iqn(rest: &str) -> Result<(), String> {
    let date_ok = rest.len() >= 8
        && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && rest.as_bytes()[4] == b'-'
        && rest.as_bytes()[5..7].iter().all(u8::is_ascii_digit)
        && matches!(rest[5..7].parse::<u8>(), Ok(1..=12))
        && rest.as_bytes()[7] == b'.';
    if !date_ok {
        return Err(
            "after iqn. comes the year and month the naming authority owned its domain, then \
             a dot: iqn.YYYY-MM.reversed.domain"
                .into(),
        );
    }
    let authority = rest[8..].split(':').next().unwrap_or("");
    if authority.is_empty() || authority.starts_with('.') || authority.ends_with('.') {
        return Err("the reversed domain name after iqn.YYYY-MM. is missing".into());
    }
    if let Some(bad) = rest
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':')))
    {
        let hint = if bad.is_ascii_uppercase() {
            format!(
                "upper case {bad:?}: iSCSI names are lower case (RFC 3722), write iqn.{}",
                rest.to_ascii_lowercase()
            )
        } else if bad == ' ' {
            "spaces are not allowed".into()
        } else {
            format!("{bad:?} is not allowed (letters a-z, digits, '-', '.', ':')")
        };
        return Err(hint);
    }
    Ok(())
}

fn check_hex(hex: &str, lengths: &[usize]) -> Result<(), String> {
    if !lengths.contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let lengths: Vec<String> = lengths.iter().map(usize::to_string).collect();
        return Err(format!(
            "expected {} hex digits after the prefix",
            lengths.join(" or ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_three_formats_pass() {
        for name in [
            "iqn.2026-11.io.iscsi-uring:target",
            "iqn.2001-04.com.example",
            "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309",
            "eui.02004567A425678D",
            "naa.52004567BA64678D",
            "naa.62004567BA64678D0123456789ABCDEF",
        ] {
            assert_eq!(check_iscsi_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn malformed_names_are_refused_with_what_to_write() {
        let reason = |name: &str| check_iscsi_name(name).unwrap_err().to_string();
        assert!(reason("notaniqn").contains("expected iqn.YYYY-MM"));
        assert!(reason("iqn.2026-11.com.example:My Disk").contains("upper case 'M'"));
        assert!(reason("iqn.2026-11.com.example:my disk").contains("spaces"));
        assert!(reason("IQN.2026-11.com.example:d").contains("type prefix is lower case"));
        assert!(reason("iqn.2026-13.com.example").contains("year and month"));
        assert!(reason("iqn.26-11.com.example").contains("year and month"));
        assert!(reason("iqn.2026-11.:x").contains("reversed domain"));
        assert!(reason("iqn.2026-11.a_b").contains("'_' is not allowed"));
        assert!(reason("eui.0200").contains("16 hex digits"));
        assert!(reason("naa.52004567BA64678").contains("16 or 32 hex digits"));
        assert!(reason(&format!("iqn.2026-11.com.example:{}", "a".repeat(220))).contains("223"));
    }
}
