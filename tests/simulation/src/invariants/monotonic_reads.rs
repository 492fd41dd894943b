//! Linearizable reads never go back in time: a read that starts after another read ended sees
//! at least as much progress of the same WfRun, whichever nodes served the two. The one way back
//! is a RescueThreadRun (an ended run runs again): a later read may see less progress only if a
//! rescue of that run was sent before that read ended.

use super::super::oracle::Oracle;

pub fn check(o: &Oracle) -> Result<(), String> {
    for a in &o.reads {
        for b in &o.reads {
            let rescued_before_b = o
                .rescues_sent
                .get(&a.wf)
                .is_some_and(|sent| sent.iter().any(|s| *s < b.ended));
            if a.wf == b.wf && b.started > a.ended && b.progress < a.progress && !rescued_before_b {
                return Err(format!(
                    "read of {} by client {} saw progress {} after client {}'s read had seen {}",
                    a.wf, b.client, b.progress, a.client, a.progress
                ));
            }
        }
    }
    Ok(())
}
