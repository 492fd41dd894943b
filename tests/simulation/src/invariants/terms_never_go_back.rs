//! No node's term ever goes back, across crashes too: its vote is durable (Raft's persistence
//! rule), as sampled by the monitor from every node's own status during the whole run; and the
//! monitor saw a leader.
//!
//! Not "one leader per term": openraft without its `single-term-leader` feature orders leaders
//! by (term, node id), so a candidate with a higher node id may win a term another node already
//! led (seed 324 elects nodes 4 and then 5 in term 2). Its log ids carry the leader's node id,
//! and what safety rests on is checked by the other invariants: acknowledged events never
//! lost, claimed once, reads never going back, replicas agreeing.

use crate::oracle::Oracle;

pub fn check(o: &Oracle) -> Result<(), String> {
    // The monitor records a violation as soon as it sees a node's term go back.
    match o
        .violations
        .iter()
        .find(|v| v.contains("went back from term"))
    {
        Some(v) => Err(v.clone()),
        None if o.leaders.is_empty() => Err("the monitor never saw a leader".into()),
        None => Ok(()),
    }
}
