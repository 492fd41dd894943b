//! Name rules shared by every object a client names.

use crate::limits::{MAX_GUID_LEN, MAX_NAME_LEN};

/// Why a name was refused; the message names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} '{value}' is longer than {max} characters")]
    TooLong {
        what: &'static str,
        value: String,
        max: usize,
    },
    #[error(
        "{what} '{value}' is not a valid name: use letters, digits and '-', starting and ending with a letter or digit"
    )]
    BadChars { what: &'static str, value: String },
}

fn shown(value: &str) -> String {
    value.chars().take(MAX_NAME_LEN + 8).collect()
}

/// The checks every kind of name shares: not empty, at most `max` bytes, and `allowed`.
fn check(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: impl Fn(&str) -> bool,
) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > max {
        return Err(NameError::TooLong {
            what,
            value: shown(value),
            max,
        });
    }
    if allowed(value) {
        Ok(())
    } else {
        Err(NameError::BadChars {
            what,
            value: shown(value),
        })
    }
}

/// Checks a name against `[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?` and the length limit.
pub fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    check(what, value, MAX_NAME_LEN, |v| {
        let b = v.as_bytes();
        b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
    })
}

/// Checks a client-chosen guid: letters, digits, `-` and `_` (UUIDs and hex ids pass).
pub fn check_guid(value: &str) -> Result<(), NameError> {
    check("guid", value, MAX_GUID_LEN, |v| {
        v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Checks a name local to a spec (thread, node, variable, failure): LittleHorse's SDKs generate
/// names such as `1-wait-for-payment-EXTERNAL_EVENT`, so any text without `/` or control
/// characters is allowed.
pub fn check_local_name(what: &'static str, value: &str) -> Result<(), NameError> {
    check(what, value, MAX_NAME_LEN, |v| {
        !v.contains('/') && !v.chars().any(char::is_control)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        for good in ["a", "A1", "doc-signed", "x-y-z", "0"] {
            assert_eq!(check_name("name", good), Ok(()), "{good}");
        }
        for bad in ["", "-a", "a-", "a_b", "a b", "a.b", "é", "a/b"] {
            assert!(check_name("name", bad).is_err(), "{bad}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            check_name("name", &long),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn error_message_names_the_value() {
        let err = check_name("ExternalEventDef name", "bad name").unwrap_err();
        assert!(err.to_string().contains("'bad name'"), "{err}");
    }

    #[test]
    fn guids_allow_underscores_but_not_slashes() {
        assert_eq!(check_guid("0123abcd_ef-9"), Ok(()));
        assert!(check_guid("a/b").is_err());
        assert!(check_guid("").is_err());
    }
}
