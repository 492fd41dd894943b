//! A read sees every write acknowledged before it began: a read of a WfRun that starts after
//! its RunWf was answered finds the run (progress 1 or 2), whichever node serves it. The
//! workload never deletes a WfRun, so not finding it then is a stale read: a node that served
//! state older than the leader's commit index (a deposed leader, a read index below what was
//! applied somewhere, a follower that did not wait for it).
//!
//! `monotonic_reads` compares reads with reads; this compares reads with acknowledged writes.

use super::super::oracle::Oracle;

pub fn check(o: &Oracle) -> Result<(), String> {
    for r in &o.reads {
        let Some(acked) = o.run_acked_at.get(&r.wf) else {
            continue;
        };
        if r.started > *acked && r.progress == 0 {
            return Err(format!(
                "read of {} by client {} did not find it, though its RunWf was acknowledged \
                 before the read began",
                r.wf, r.client
            ));
        }
    }
    Ok(())
}
