//! What a leader needs to confirm a linearizable read without a heartbeat round through
//! openraft (`docs/reads.md`, "Confirming reads from saved votes").
//!
//! openraft 0.9 confirms leadership by sending AppendEntries without entries and waiting for a
//! quorum of answers. A follower's core answers one only after it has finished the log write
//! in progress (the core writes and fsyncs the log itself), so under load a read waits for a
//! follower's fsync. Two facts recorded here, outside openraft's core, let a read be
//! confirmed without that wait:
//!
//! - **The vote a node saves.** A node can help elect a leader of a later term only by a vote
//!   it has saved first: openraft answers a vote request, and a candidate asks for votes, only
//!   after `save_vote` returned. The vote is recorded here *before* it is written. So if a
//!   node's recorded vote is at term `T` or lower at some instant, it had not helped elect any
//!   leader of a term above `T` by then. A leader of term `T` whose own recorded vote is still
//!   its committed vote of `T`, together with followers that report a term of at most `T`,
//!   forming a quorum, shows that no newer leader existed at the earliest of those instants:
//!   a newer leader needs a quorum of votes, and two quorums share a node. If every instant is
//!   after the read arrived, that is Raft's ReadIndex confirmation.
//! - **An upper bound of the commit index anyone has seen.** A follower applies an entry only
//!   after it learned that the entry is committed, from an AppendEntries' `leader_commit`; the
//!   leader applies it only after `save_committed`. Both are recorded here *before* the send
//!   or the save. So this value, read after a read arrived, is at or above every entry applied
//!   anywhere by then (in this leader's term): a read that waits for it sees everything any
//!   client could have seen before it began, including through another node.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use openraft::Vote;

use super::NodeId;

#[derive(Default)]
pub struct ReadFence {
    /// The last vote this node started to save; `None` until the log store recorded one.
    vote: Mutex<Option<Vote<NodeId>>>,
    /// The highest commit index this node has passed to `save_committed` (recorded on every
    /// call, though only some are written) or sent to a follower, or found on disk at start.
    commit_seen: AtomicU64,
}

impl ReadFence {
    /// Called by the log store before it writes `vote`.
    pub fn saving_vote(&self, vote: Vote<NodeId>) {
        *self.vote.lock().unwrap_or_else(|e| e.into_inner()) = Some(vote);
    }

    /// The vote this node last started to save.
    pub fn vote(&self) -> Option<Vote<NodeId>> {
        *self.vote.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The term of the vote this node last started to save, as it reports it to a leader.
    pub fn vote_term(&self) -> Option<u64> {
        self.vote().map(|v| v.leader_id().get_term())
    }

    /// Called before a commit index is saved or sent in an AppendEntries.
    pub fn commit_seen(&self, index: u64) {
        self.commit_seen.fetch_max(index, Ordering::SeqCst);
    }

    /// At or above every commit index saved or sent so far.
    pub fn commit_bound(&self) -> u64 {
        self.commit_seen.load(Ordering::SeqCst)
    }

    /// `Some(term)` when this node's recorded vote is its own committed vote: it leads term
    /// `term` and has not saved any later vote.
    pub fn leading_term(&self, me: NodeId) -> Option<u64> {
        let v = self.vote()?;
        (v.is_committed() && v.leader_id().voted_for() == Some(me))
            .then(|| v.leader_id().get_term())
    }
}

/// Whether the nodes in `granted` form a quorum of `configs` (a joint membership is one
/// config per half): a majority of every config, as openraft counts it.
pub fn is_quorum(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|c| c.intersection(granted).count() * 2 > c.len())
}

/// Whether a follower's reported vote term lets it count for a leader of `term`: it had not
/// saved a vote of any later term when it answered. `None`: the follower knows no vote yet,
/// which proves nothing (it may have just restarted from an empty record).
pub fn counts_for(term: u64, reported: Option<u64>) -> bool {
    matches!(reported, Some(t) if t <= term)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_majority_of_every_half_is_needed() {
        let one = vec![set(&[1, 2, 3])];
        assert!(!is_quorum(&one, &set(&[1])));
        assert!(is_quorum(&one, &set(&[1, 2])));
        assert!(is_quorum(&one, &set(&[2, 3])));
        // Nodes outside the config do not count.
        assert!(!is_quorum(&one, &set(&[1, 4, 5])));
        let joint = vec![set(&[1, 2, 3]), set(&[1, 4, 5])];
        assert!(!is_quorum(&joint, &set(&[1, 2])));
        assert!(!is_quorum(&joint, &set(&[1, 4])));
        assert!(is_quorum(&joint, &set(&[1, 2, 4])));
        let five = vec![set(&[1, 2, 3, 4, 5])];
        assert!(!is_quorum(&five, &set(&[1, 2])));
        assert!(is_quorum(&five, &set(&[1, 2, 5])));
        assert!(!is_quorum(&[], &set(&[1])));
    }

    #[test]
    fn only_a_known_vote_at_or_below_the_term_counts() {
        assert!(counts_for(5, Some(5)));
        assert!(counts_for(5, Some(3)));
        assert!(!counts_for(5, Some(6)));
        assert!(!counts_for(5, None));
    }

    #[test]
    fn a_node_leads_only_while_its_last_vote_is_its_own_committed_one() {
        let f = ReadFence::default();
        assert_eq!(f.leading_term(1), None);
        f.saving_vote(Vote::new(4, 1));
        assert_eq!(f.leading_term(1), None, "a candidate does not lead yet");
        f.saving_vote(Vote::new_committed(4, 1));
        assert_eq!(f.leading_term(1), Some(4));
        assert_eq!(f.leading_term(2), None, "node 2 does not lead term 4");
        f.saving_vote(Vote::new(5, 2));
        assert_eq!(f.leading_term(1), None, "a vote for a later term ends it");
    }

    #[test]
    fn the_commit_bound_only_grows() {
        let f = ReadFence::default();
        f.commit_seen(7);
        f.commit_seen(3);
        assert_eq!(f.commit_bound(), 7);
        f.commit_seen(9);
        assert_eq!(f.commit_bound(), 9);
    }
}
