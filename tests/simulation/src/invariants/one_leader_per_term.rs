//! At most one leader per term (Raft's election safety), as sampled by the monitor from every
//! node's own status during the whole run.

use crate::oracle::Oracle;

pub fn check(o: &Oracle) -> Result<(), String> {
    // The monitor records a violation as soon as it sees a second leader in a term.
    match o.violations.iter().find(|v| v.starts_with("two leaders")) {
        Some(v) => Err(v.clone()),
        None if o.leaders.is_empty() => Err("the monitor never saw a leader".into()),
        None => Ok(()),
    }
}
