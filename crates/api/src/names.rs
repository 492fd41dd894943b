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

/// Checks a name against `[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?` and the length limit.
pub fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            value: shown(value),
            max: MAX_NAME_LEN,
        });
    }
    let bytes = value.as_bytes();
    let ok_inner = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-');
    let ok_ends =
        bytes[0].is_ascii_alphanumeric() && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if ok_inner && ok_ends {
        Ok(())
    } else {
        Err(NameError::BadChars {
            what,
            value: shown(value),
        })
    }
}

/// Checks a client-chosen guid: the name rule, plus `_` allowed (UUID-like and hex ids pass).
pub fn check_guid(value: &str) -> Result<(), NameError> {
    let what = "guid";
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > MAX_GUID_LEN {
        return Err(NameError::TooLong {
            what,
            value: shown(value),
            max: MAX_GUID_LEN,
        });
    }
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(NameError::BadChars {
            what,
            value: shown(value),
        })
    }
}

/// Checks a free-form key (a CorrelatedEvent key): not empty, bounded, without `/` or `~`.
pub fn check_key(what: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            value: shown(value),
            max: MAX_NAME_LEN,
        });
    }
    if value.contains(['/', '~']) || value.chars().any(char::is_control) {
        return Err(NameError::BadChars {
            what,
            value: shown(value),
        });
    }
    Ok(())
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
