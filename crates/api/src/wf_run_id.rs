//! A WfRun's storage key and its [`WfRunId`].
//!
//! A child WfRun's id is its own id plus its parent's WfRunId. Halter stores every object of a
//! WfRun under one string key, LittleHorse's own text form of the id: the ancestors' ids and
//! the run's own, joined with `_` (`order-7_payment-1`). WfRun ids may hold letters, digits
//! and `-` only, so the key splits back unambiguously, and a parent's children sort right
//! after `{parent}_` in every table keyed by it.

use std::borrow::Cow;

use crate::littlehorse::WfRunId;
use crate::names::{check_name, NameError};

/// What separates a parent's key from its child's id in a child's key.
pub const CHILD_SEPARATOR: char = '_';

/// The key the WfRun `id` is stored under.
pub fn wf_run_key(id: &WfRunId) -> String {
    match &id.parent_wf_run_id {
        None => id.id.clone(),
        Some(p) => format!("{}{CHILD_SEPARATOR}{}", wf_run_key(p), id.id),
    }
}

/// [`wf_run_key`] without a copy for a WfRun that has no parent (nearly every one).
pub fn key_of(id: &WfRunId) -> Cow<'_, str> {
    match id.parent_wf_run_id {
        None => Cow::Borrowed(id.id.as_str()),
        Some(_) => Cow::Owned(wf_run_key(id)),
    }
}

/// The WfRunId stored under `key` (the inverse of [`wf_run_key`]).
pub fn wf_run_id_of(key: &str) -> WfRunId {
    match key.rsplit_once(CHILD_SEPARATOR) {
        None => WfRunId {
            id: key.to_string(),
            parent_wf_run_id: None,
        },
        Some((parent, own)) => WfRunId {
            id: own.to_string(),
            parent_wf_run_id: Some(Box::new(wf_run_id_of(parent))),
        },
    }
}

/// The parent's key of the WfRun stored under `key`, if it is a child.
pub fn parent_key(key: &str) -> Option<&str> {
    key.rsplit_once(CHILD_SEPARATOR).map(|(p, _)| p)
}

/// Checks every id in `id` (its own and its ancestors') against the name rules, and returns
/// its key.
pub fn checked_wf_run_key(id: &WfRunId) -> Result<String, NameError> {
    check_name("WfRun id", &id.id)?;
    match &id.parent_wf_run_id {
        None => Ok(id.id.clone()),
        Some(p) => Ok(format!(
            "{}{CHILD_SEPARATOR}{}",
            checked_wf_run_key(p)?,
            id.id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(own: &str, parent: Option<WfRunId>) -> WfRunId {
        WfRunId {
            id: own.into(),
            parent_wf_run_id: parent.map(Box::new),
        }
    }

    #[test]
    fn keys_round_trip_through_any_depth() {
        let top = id("order-7", None);
        let child = id("pay-1", Some(top.clone()));
        let grandchild = id("x", Some(child.clone()));
        for (wf, key) in [
            (&top, "order-7"),
            (&child, "order-7_pay-1"),
            (&grandchild, "order-7_pay-1_x"),
        ] {
            assert_eq!(wf_run_key(wf), key);
            assert_eq!(checked_wf_run_key(wf).as_deref(), Ok(key));
            assert_eq!(&wf_run_id_of(key), wf);
        }
        assert_eq!(parent_key("order-7_pay-1_x"), Some("order-7_pay-1"));
        assert_eq!(parent_key("order-7"), None);
    }

    #[test]
    fn an_id_with_the_separator_is_refused_at_any_depth() {
        assert!(checked_wf_run_key(&id("a_b", None)).is_err());
        assert!(checked_wf_run_key(&id("c", Some(id("a_b", None)))).is_err());
        assert!(checked_wf_run_key(&id("c", Some(id("", None)))).is_err());
    }
}
