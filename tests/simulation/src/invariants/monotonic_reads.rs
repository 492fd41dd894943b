//! Linearizable reads never go back in time: a read that starts after another read ended sees
//! at least as much progress of the same WfRun, whichever nodes served the two.

use super::super::oracle::Oracle;

pub fn check(o: &Oracle) -> Result<(), String> {
    for a in &o.reads {
        for b in &o.reads {
            if a.wf == b.wf && b.started > a.ended && b.progress < a.progress {
                return Err(format!(
                    "read of {} by client {} saw progress {} after client {}'s read had seen {}",
                    a.wf, b.client, b.progress, a.client, a.progress
                ));
            }
        }
    }
    Ok(())
}
