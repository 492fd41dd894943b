//! How the leader confirms a linearizable read (`docs/reads.md`).
//!
//! A read needs an index that covers every write any client could have seen before the read
//! began, and proof that no newer leader existed at some instant after it began. The proof
//! usually comes from the saved votes of a quorum (`raft/read_fence.rs`): the leader's own, a
//! follower's that came with its `ReadIndex` request, and, for the leader's own reads, the
//! other voters' answers to `SavedVote`, which they give from memory. Only when that does not
//! make a quorum (a voter does not answer, or reports a later term, or the leader has not yet
//! applied an entry of its own term) does the read fall back to openraft's round of heartbeats,
//! which waits for each follower's log write in progress.
//!
//! Every instant relied on is after the reads arrived: the leader reads its own vote and the
//! commit bound when the round starts (or when a follower's request arrives, after the
//! follower read its vote), and asks the others after that. Votes only grow, so at the
//! earliest of these instants every node of the quorum was at or below the leader's term.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use halter_api::halter::Empty;
use openraft::error::RaftError;
use tonic::Status;

use crate::proposer::{NodeCtx, ReadRound};
use crate::raft::read_fence::{counts_for, is_quorum};
use crate::raft::{NodeId, StoredMembership};

/// How long a voter has to answer `SavedVote` before the round falls back to heartbeats.
const SAVED_VOTE_TIMEOUT: Duration = Duration::from_millis(250);

/// What the leader knows, at one instant, that a read confirmation starts from.
struct Start {
    term: u64,
    index: u64,
    configs: Vec<BTreeSet<NodeId>>,
    /// Where the other voters' addresses are, for the reads that ask them.
    membership: Arc<StoredMembership>,
}

impl Start {
    /// Each voter other than `me`, with its peer address.
    fn other_voters(&self, me: NodeId) -> Vec<(NodeId, String)> {
        let membership = self.membership.membership();
        membership
            .voter_ids()
            .filter(|id| *id != me)
            .map(|id| {
                let addr = membership
                    .get_node(&id)
                    .map(|n| n.peer_addr.clone())
                    .unwrap_or_default();
                (id, addr)
            })
            .collect()
    }
}

impl NodeCtx {
    /// The leader's term, the read index and the membership, if this node leads and can
    /// confirm reads from votes; `None`: use the heartbeat round.
    fn start(&self) -> Option<Start> {
        let term = self.fence.leading_term(self.id)?;
        // Every entry committed by earlier leaders is below the first entry of this term, so
        // once one entry of this term is applied, the commit bound is above all of them.
        let applied = (*self.sm.applied.borrow())?;
        if applied.leader_id.term != term {
            return None;
        }
        let index = self.fence.commit_bound().max(self.read_floor);
        let m = self.raft.server_metrics();
        let m = m.borrow();
        if m.current_leader != Some(self.id) {
            return None;
        }
        let membership = Arc::clone(&m.membership_config);
        let configs = membership.membership().get_joint_config().clone();
        Some(Start {
            term,
            index,
            configs,
            membership,
        })
    }

    /// A follower's `ReadIndex` confirmed by its own vote and the leader's, when the two are a
    /// quorum (a three-voter cluster); `None`: it joins the next round.
    pub(crate) fn confirm_with(&self, (follower, term): (NodeId, Option<u64>)) -> Option<u64> {
        let start = self.start()?;
        if !counts_for(start.term, term) {
            return None;
        }
        let granted = BTreeSet::from([self.id, follower]);
        is_quorum(&start.configs, &granted).then_some(start.index)
    }

    /// One round of `SavedVote` questions; `None` when they did not make a quorum.
    pub(crate) async fn confirm_by_votes(&self) -> Option<ReadRound> {
        let start = self.start()?;
        let mut granted = BTreeSet::from([self.id]);
        if is_quorum(&start.configs, &granted) {
            return Some(ReadRound::Index(start.index));
        }
        let mut asks: FuturesUnordered<_> = start
            .other_voters(self.id)
            .into_iter()
            .filter_map(|(id, addr)| {
                let mut client = self.peer(&addr).ok()?;
                Some(async move {
                    let answer =
                        tokio::time::timeout(SAVED_VOTE_TIMEOUT, client.saved_vote(Empty {})).await;
                    (id, answer)
                })
            })
            .collect();
        while let Some((id, answer)) = asks.next().await {
            let term = match answer {
                // Only from the voter asked: an address may since belong to another node.
                Ok(Ok(reply)) if reply.get_ref().node_id == id => reply.into_inner().term,
                _ => continue,
            };
            if term.is_some_and(|t| t > start.term) {
                // A newer term exists: let openraft's round find out and step down.
                return None;
            }
            if counts_for(start.term, term) {
                granted.insert(id);
                if is_quorum(&start.configs, &granted) {
                    return Some(ReadRound::Index(start.index));
                }
            }
        }
        None
    }

    /// openraft's own confirmation: heartbeats to a quorum, then its applied index.
    pub(crate) async fn heartbeat_round(&self) -> ReadRound {
        match self.raft.ensure_linearizable().await {
            // The floor matters only right after a restart (`proposer.rs`'s module comment).
            Ok(log_id) => ReadRound::Index(log_id.map_or(0, |l| l.index).max(self.read_floor)),
            Err(RaftError::APIError(_)) => ReadRound::NotLeader,
            Err(e) => ReadRound::Failed(format!("raft: {e}")),
        }
    }

    /// Waits until this node's state machine has applied `index`.
    pub(crate) async fn applied_up_to(&self, index: u64) -> Result<(), Status> {
        let mut applied = self.sm.applied.subscribe();
        applied
            .wait_for(|a| a.map_or(0, |l| l.index) >= index)
            .await
            .map(|_| ())
            .map_err(|_| Status::unavailable("node is shutting down"))
    }
}
