//! The leader's new entries go to the followers while the leader fsyncs them.
//!
//! openraft 0.9 awaits the leader's own log flush inside its core task before it sends the
//! entries anywhere (`RaftCore::append_to_log`), so a write waits for two fsyncs one after the
//! other: the leader's, then a follower's. Raft does not need that order: a leader may write
//! to its disk in parallel with replicating (Ongaro's thesis, 10.2.1), and etcd does. So the
//! log store hands each batch the leader appends to this module *before* its fsync, and the
//! batch goes out at once as an ordinary AppendEntries of the leader's, on connections of its
//! own. A follower appends (and fsyncs) it as it would any AppendEntries of its leader; when
//! openraft's own replication brings the same entries a moment later they match what the
//! follower has, and it answers without appending again.
//!
//! Why this is safe:
//! - Nothing is counted from these calls; their answers are dropped. openraft commits only on
//!   its own replication's answers, which a follower gives after its append has fsynced, and
//!   counts the leader only after the leader's own flush. A write is still acknowledged only
//!   once it is durable on a quorum.
//! - Each request is one the same leader would send: its vote, entries it has just assigned
//!   log ids to, the log id before them, and no commit index (`leader_commit: None`), so a
//!   follower never learns of a commit from it.
//! - A follower may end up holding entries the leader loses in a crash before its fsync.
//!   Raft allows that for any uncommitted entry; no client was answered for them.
//! - A request from a deposed leader carries an older vote and is refused by the follower's
//!   vote check; one that does not follow on from the follower's log is refused by the
//!   `prev_log_id` check, and openraft's replication repairs the log as usual.
//!
//! Best effort throughout: a follower that is slow or unreachable simply gets fewer of these
//! (a full queue drops them, a failed call drops what queued behind it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::AppendEntriesRequest;
use openraft::{RaftMetrics, Vote};
use tokio::sync::{mpsc, watch};

use super::network::{Network, PeerConn};
use super::{HalterNode, NodeId, TypeConfig};

/// A batch of the leader's, as the AppendEntries it will become.
pub type Batch = Arc<AppendEntriesRequest<TypeConfig>>;

/// Batches waiting for the speculator to fan them out.
const QUEUE: usize = 64;
/// Batches waiting for one follower's connection; more are dropped.
const PER_PEER: usize = 16;
/// Most entries in one merged request, as openraft's `max_payload_entries` (server.rs).
const MAX_MERGED_ENTRIES: usize = 16;
/// How long one speculative append may take before it is given up.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The log store's end: offers each batch the leader appends.
#[derive(Clone)]
pub struct Speculator {
    me: NodeId,
    tx: mpsc::Sender<Batch>,
}

/// A speculator for node `me` and the receiver to give [`run`].
pub fn channel(me: NodeId) -> (Speculator, mpsc::Receiver<Batch>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Speculator { me, tx }, rx)
}

impl Speculator {
    /// The AppendEntries for `entries`, which the log store is about to append after
    /// `prev_log_id`, if they are this node's own entries as leader under `vote`: the vote is
    /// committed (a leader's), names this node, and every entry was proposed under it.
    /// A follower's appends (entries of another leader) give `None`.
    pub fn request(
        &self,
        vote: &Vote<NodeId>,
        prev_log_id: Option<super::LogId>,
        entries: &[openraft::Entry<TypeConfig>],
    ) -> Option<AppendEntriesRequest<TypeConfig>> {
        let leader = vote.leader_id();
        let ours = vote.is_committed()
            && leader.node_id == self.me
            && !entries.is_empty()
            && entries.iter().all(|e| e.log_id.leader_id == *leader);
        ours.then(|| AppendEntriesRequest {
            vote: *vote,
            prev_log_id,
            entries: entries.to_vec(),
            leader_commit: None,
        })
    }

    /// Queues `req` for the followers; dropped if the queue is full.
    pub fn offer(&self, req: AppendEntriesRequest<TypeConfig>) {
        let _ = self.tx.try_send(Arc::new(req));
    }

    /// Whether a batch could be queued now: the log store looks up the previous log id only
    /// then.
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 0
    }
}

/// Starts [`run`] where the leader's blocking fsync cannot hold it up.
///
/// The log store offers a batch from inside openraft's core task, just before the `fdatasync`
/// that blocks that task's worker thread. A task woken from a Tokio worker goes to that
/// worker's LIFO slot, which no other worker takes from, so a speculator spawned on the node's
/// runtime would only start sending once the fsync is over (seen in `strace`). On its own
/// thread it is woken across threads and sends during the fsync. The simulator has one
/// deterministic executor and no blocking disk, so there it is an ordinary task.
pub fn start(
    me: NodeId,
    metrics: watch::Receiver<RaftMetrics<NodeId, HalterNode>>,
    rx: mpsc::Receiver<Batch>,
) -> std::io::Result<()> {
    #[cfg(not(madsim))]
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("halter-speculate".into())
            .spawn(move || rt.block_on(run(me, metrics, rx)))?;
    }
    #[cfg(madsim)]
    tokio::spawn(run(me, metrics, rx));
    Ok(())
}

/// Fans the leader's batches out to every other member of the current membership (from
/// `metrics`), one connection and queue per follower. Ends when the log store is dropped.
async fn run(
    me: NodeId,
    metrics: watch::Receiver<RaftMetrics<NodeId, HalterNode>>,
    mut rx: mpsc::Receiver<Batch>,
) {
    let mut network = Network::default();
    let mut peers: BTreeMap<NodeId, (HalterNode, mpsc::Sender<Batch>)> = BTreeMap::new();
    while let Some(batch) = rx.recv().await {
        let members: Vec<(NodeId, HalterNode)> = metrics
            .borrow()
            .membership_config
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        peers.retain(|id, (node, _)| members.iter().any(|(m, n)| m == id && n == node));
        for (id, node) in members {
            let tx = match peers.get(&id) {
                Some((_, tx)) => tx.clone(),
                None => {
                    let (tx, peer_rx) = mpsc::channel(PER_PEER);
                    let conn = network.new_client(id, &node).await;
                    tokio::spawn(follow(conn, peer_rx));
                    peers.insert(id, (node, tx.clone()));
                    tx
                }
            };
            let _ = tx.try_send(batch.clone());
        }
    }
}

/// Sends one follower its batches in order, merging those that queued up behind each other.
async fn follow(mut conn: PeerConn, mut rx: mpsc::Receiver<Batch>) {
    let option = RPCOption::new(TIMEOUT);
    while let Some(first) = rx.recv().await {
        let mut queued = vec![first];
        while let Ok(next) = rx.try_recv() {
            queued.push(next);
        }
        for req in merge(queued) {
            if let Err(e) = conn.send_append(&req, &option).await {
                tracing::debug!(error = %e, "a speculative append failed");
                // What queued behind it would not follow on from the follower's log either.
                while rx.try_recv().is_ok() {}
                break;
            }
        }
    }
}

/// Consecutive batches (same vote, each starting where the one before ended) as one request
/// each run, up to [`MAX_MERGED_ENTRIES`] entries.
fn merge(queued: Vec<Batch>) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::with_capacity(queued.len());
    for next in queued {
        if let Some(cur) = out.last_mut() {
            let follows = cur.vote == next.vote
                && cur.entries.last().map(|e| e.log_id) == next.prev_log_id
                && cur.entries.len() + next.entries.len() <= MAX_MERGED_ENTRIES;
            if follows {
                let mut merged = (**cur).clone();
                merged.entries.extend(next.entries.iter().cloned());
                *cur = Arc::new(merged);
                continue;
            }
        }
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::LogCommand;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    fn entry(term: u64, leader: NodeId, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
            payload: EntryPayload::Normal(LogCommand::One(vec![index as u8])),
        }
    }

    fn batch(term: u64, prev: Option<u64>, indexes: std::ops::RangeInclusive<u64>) -> Batch {
        Arc::new(AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: prev.map(|i| LogId::new(CommittedLeaderId::new(term, 1), i)),
            entries: indexes.map(|i| entry(term, 1, i)).collect(),
            leader_commit: None,
        })
    }

    #[test]
    fn only_a_leaders_own_entries_are_sent() {
        let (spec, _rx) = channel(1);
        let entries = vec![entry(3, 1, 7), entry(3, 1, 8)];
        let prev = Some(LogId::new(CommittedLeaderId::new(2, 2), 6));

        let req = spec
            .request(&Vote::new_committed(3, 1), prev, &entries)
            .expect("the leader's own batch");
        assert_eq!(req.prev_log_id, prev);
        assert_eq!(req.entries, entries);
        assert_eq!(
            req.leader_commit, None,
            "never tells a follower of a commit"
        );

        // A candidate's vote (not committed), another leader's vote, or entries of an
        // earlier term (a follower being repaired) are not this node's to send.
        assert!(spec.request(&Vote::new(3, 1), prev, &entries).is_none());
        assert!(spec
            .request(&Vote::new_committed(3, 2), prev, &entries)
            .is_none());
        assert!(spec
            .request(&Vote::new_committed(4, 1), prev, &entries)
            .is_none());
        assert!(spec
            .request(&Vote::new_committed(3, 1), prev, &[])
            .is_none());
    }

    #[test]
    fn consecutive_batches_merge_and_gaps_do_not() {
        let merged = merge(vec![
            batch(3, Some(4), 5..=6),
            batch(3, Some(6), 7..=7),
            // Does not follow on from 7: starts a request of its own.
            batch(3, Some(9), 10..=10),
            batch(3, Some(10), 11..=12),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].prev_log_id.map(|l| l.index), Some(4));
        let idx: Vec<u64> = merged[0].entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(idx, vec![5, 6, 7]);
        let idx: Vec<u64> = merged[1].entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(idx, vec![10, 11, 12]);

        // A new term never merges into the old one's request.
        assert_eq!(
            merge(vec![batch(3, Some(4), 5..=5), batch(4, Some(5), 6..=6)]).len(),
            2
        );
        // Nor past the size of one openraft payload.
        let big = merge(vec![batch(3, Some(0), 1..=10), batch(3, Some(10), 11..=20)]);
        assert_eq!(big.len(), 2);
    }
}
