//! The leader's new entries go to the followers while the leader fsyncs them, and the
//! followers' answers to those early sends stand in for openraft's own replication of the same
//! entries.
//!
//! openraft 0.9 awaits the leader's own log flush inside its core task before it sends the
//! entries anywhere (`RaftCore::append_to_log`), so a write waits for two fsyncs one after the
//! other: the leader's, then a follower's. Raft does not need that order: a leader may write
//! to its disk in parallel with replicating (Ongaro's thesis, 10.2.1), and etcd does. So the
//! log store hands each batch the leader appends to this module *before* its fsync, and the
//! batch goes out at once as an ordinary AppendEntries of the leader's, on connections of its
//! own. A follower appends (and fsyncs) it as it would any AppendEntries of its leader.
//!
//! When openraft's replication then asks the network to send the same entries (after the
//! leader's fsync), the follower has usually answered already. [`Followers::answer`] gives
//! openraft that answer instead of sending the entries a second time: one round trip less on a
//! write's path and half the entry bytes on the wire. Entries the early send did not cover, or
//! did not get a success for, go out as before.
//!
//! Why this is safe:
//! - A follower answers an AppendEntries only after its append is durable (its log store
//!   fsyncs before it returns), and a success for (vote V, `prev_log_id` P, entries up to L)
//!   means its log matches this leader's up to L: the `prev_log_id` check proved the prefix up
//!   to P, and the entries after it are the leader's own. Only such a success, under the same
//!   vote as openraft's request, answers that request, and only when L reaches the request's
//!   last entry. Nothing else is counted: a failed or refused early send leaves openraft's
//!   request to go out normally.
//! - Such an answer is what the follower would give to openraft's request (its entries are
//!   already there). Raft counts an acknowledgement whenever it arrives, late or not; one that
//!   came over another connection is no different. A write is still acknowledged only once it
//!   is durable on a quorum, the leader counting itself only after its own flush.
//! - Each request is one the same leader would send: its vote, entries it has just assigned
//!   log ids to, the log id before them, and at most a commit index openraft itself sent. A
//!   request from a deposed leader carries an older vote and is refused by the follower's vote
//!   check; one that does not follow on from the follower's log is refused by the
//!   `prev_log_id` check, and openraft's replication repairs the log as usual.
//! - A follower may end up holding entries the leader loses in a crash before its fsync.
//!   Raft allows that for any uncommitted entry; no client was answered for them.
//! - A request openraft does not send carries a commit index; the follower still needs it to
//!   apply. When it is newer than the last one the follower was sent, a commit-only request
//!   (no entries, `prev_log_id` the last acknowledged entry) goes out in the same queue. A
//!   follower takes a commit index only up to the entries the request proved it holds.
//!
//! Best effort throughout: a follower that is slow or unreachable simply gets fewer of these
//! (a full queue drops them, a failed call drops what queued behind it), and openraft's own
//! replication carries the rest.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{RaftMetrics, Vote};
use tokio::sync::{mpsc, watch, Notify};

use super::network::{Network, PeerConn};
use super::read_fence::ReadFence;
use super::{HalterNode, LogId, NodeId, TypeConfig};

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
    followers: Followers,
}

/// A speculator for node `me` and the receiver to give [`start`].
pub fn channel(me: NodeId) -> (Speculator, mpsc::Receiver<Batch>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let followers = Followers::default();
    (Speculator { me, tx, followers }, rx)
}

impl Speculator {
    /// The AppendEntries for `entries`, which the log store is about to append after
    /// `prev_log_id`, if they are this node's own entries as leader under `vote`: the vote is
    /// committed (a leader's), names this node, and every entry was proposed under it.
    /// A follower's appends (entries of another leader) give `None`.
    pub fn request(
        &self,
        vote: &Vote<NodeId>,
        prev_log_id: Option<LogId>,
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

    /// The followers' queues and answers, for openraft's network to consult.
    pub fn followers(&self) -> Followers {
        self.followers.clone()
    }
}

/// Every follower the speculator sends to, by node id: shared between the speculator's thread
/// and openraft's replication (through [`Network`]).
#[derive(Clone, Default)]
pub struct Followers(Arc<Mutex<BTreeMap<NodeId, Arc<Follower>>>>);

impl Followers {
    fn get(&self, id: NodeId) -> Option<Arc<Follower>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// openraft's replication is about to send `req` to `target`: the follower's answer to the
    /// early send of the same entries, if it was a success that covers all of them. Waits (at
    /// most `wait`) while such a send is queued or in flight. `None`: send `req` as usual.
    ///
    /// A request without entries is never answered here: it is a heartbeat, and a leadership
    /// check (what a linearizable read waits for) needs the follower's answer to *this* request,
    /// given after it was sent, not an earlier one.
    pub async fn answer(
        &self,
        target: NodeId,
        req: &AppendEntriesRequest<TypeConfig>,
        wait: Duration,
    ) -> Option<AppendEntriesResponse<NodeId>> {
        let last = req.entries.last()?.log_id;
        let follower = self.get(target)?;
        let mut rx = follower.state.subscribe();
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            match rx.borrow_and_update().cover(&req.vote, last) {
                Cover::Acked => break,
                Cover::Coming => {}
                Cover::No => return None,
            }
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
        // The follower has the entries; it must still learn the commit index `req` carries.
        let mut told = true;
        let queued = follower.state.send_if_modified(|s| {
            if s.vote != Some(req.vote) || req.leader_commit <= s.commit {
                return false;
            }
            if s.queued.len() >= PER_PEER {
                told = false;
                return false;
            }
            s.commit = req.leader_commit;
            s.queued.push_back(Arc::new(AppendEntriesRequest {
                vote: req.vote,
                prev_log_id: Some(last),
                entries: Vec::new(),
                leader_commit: req.leader_commit,
            }));
            true
        });
        if queued {
            follower.wake.notify_one();
        }
        told.then_some(AppendEntriesResponse::Success)
    }

    /// openraft's replication sent `req` to `target` itself and it succeeded: the follower
    /// knows its commit index, so no commit-only request needs to repeat it.
    pub fn sent(&self, target: NodeId, req: &AppendEntriesRequest<TypeConfig>) {
        if let Some(follower) = self.get(target) {
            follower.state.send_if_modified(|s| {
                if s.vote == Some(req.vote) && req.leader_commit > s.commit {
                    s.commit = req.leader_commit;
                }
                false
            });
        }
    }
}

#[cfg(all(test, not(madsim)))]
impl Followers {
    /// Followers of which `id` acknowledged, under `vote`, the leader's log up to `acked`.
    pub(crate) fn acknowledged(id: NodeId, vote: Vote<NodeId>, acked: LogId) -> Self {
        let followers = Followers::default();
        let state = PeerState {
            vote: Some(vote),
            acked: Some(acked),
            commit: None,
            ..PeerState::default()
        };
        let node = HalterNode {
            peer_addr: String::new(),
            client_addr: String::new(),
        };
        let follower = Arc::new(Follower::new(node, state));
        followers
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, follower);
        followers
    }
}

/// One follower: its queue of early sends and what came of them.
pub struct Follower {
    node: HalterNode,
    state: watch::Sender<PeerState>,
    /// Wakes [`follow`] when something was queued.
    wake: Notify,
    /// Set when the node left the membership: [`follow`] ends.
    gone: AtomicBool,
}

impl Follower {
    fn new(node: HalterNode, state: PeerState) -> Self {
        Follower {
            node,
            state: watch::Sender::new(state),
            wake: Notify::new(),
            gone: AtomicBool::new(false),
        }
    }
}

/// What was sent to one follower early, under the vote of the batches.
#[derive(Default)]
struct PeerState {
    vote: Option<Vote<NodeId>>,
    /// The last log id the follower acknowledged; its log matches the leader's up to here.
    acked: Option<LogId>,
    /// Waiting to be sent, in log order.
    queued: VecDeque<Batch>,
    /// The end of what [`follow`] took from the queue and has not had answered yet.
    sending: Option<LogId>,
    /// The newest commit index the follower was sent.
    commit: Option<LogId>,
}

/// How far the early sends cover a request's last entry.
#[derive(Debug, PartialEq)]
enum Cover {
    /// The follower acknowledged it.
    Acked,
    /// A send that includes it is queued or in flight.
    Coming,
    /// Neither: openraft sends the request.
    No,
}

/// Where a request leaves the follower's log if it succeeds.
fn end_of(req: &AppendEntriesRequest<TypeConfig>) -> Option<LogId> {
    req.entries.last().map(|e| e.log_id).or(req.prev_log_id)
}

impl PeerState {
    fn cover(&self, vote: &Vote<NodeId>, last: LogId) -> Cover {
        if self.vote.as_ref() != Some(vote) {
            Cover::No
        } else if self.acked >= Some(last) {
            Cover::Acked
        } else if self.sending.max(self.queued.back().and_then(|b| end_of(b))) >= Some(last) {
            Cover::Coming
        } else {
            Cover::No
        }
    }

    /// Queues a new batch; a batch under a new vote starts afresh.
    fn push(&mut self, batch: Batch) {
        if self.vote != Some(batch.vote) {
            *self = PeerState {
                vote: Some(batch.vote),
                ..PeerState::default()
            };
        }
        if self.queued.len() < PER_PEER {
            self.queued.push_back(batch);
        }
    }

    /// Everything queued, now being sent.
    fn take(&mut self) -> Vec<Batch> {
        let taken: Vec<Batch> = self.queued.drain(..).collect();
        self.sending = taken.iter().filter_map(|b| end_of(b)).max();
        taken
    }

    /// The answer to `req`, one of what [`take`](Self::take) gave; `more` is whether the
    /// rest of it is still to be sent.
    fn answered(&mut self, req: &AppendEntriesRequest<TypeConfig>, ok: bool, more: bool) {
        if self.vote != Some(req.vote) {
            return;
        }
        if ok {
            self.acked = self.acked.max(end_of(req));
            self.commit = self.commit.max(req.leader_commit);
        } else {
            // What queued behind it would not follow on from the follower's log either.
            self.queued.clear();
        }
        if !ok || !more {
            self.sending = None;
        }
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
    spec: &Speculator,
    metrics: watch::Receiver<RaftMetrics<NodeId, HalterNode>>,
    rx: mpsc::Receiver<Batch>,
    fence: Arc<ReadFence>,
    connector: super::network::PeerConnector,
) -> std::io::Result<()> {
    let (me, followers) = (spec.me, spec.followers());
    let network = Network::fenced(fence, connector);
    #[cfg(not(madsim))]
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("halter-speculate".into())
            .spawn(move || rt.block_on(run(network, me, followers, metrics, rx)))?;
    }
    #[cfg(madsim)]
    tokio::spawn(run(network, me, followers, metrics, rx));
    Ok(())
}

/// Fans the leader's batches out to every other member of the current membership (from
/// `metrics`), one connection and queue per follower. Ends when the log store is dropped.
async fn run(
    mut network: Network,
    me: NodeId,
    followers: Followers,
    metrics: watch::Receiver<RaftMetrics<NodeId, HalterNode>>,
    mut rx: mpsc::Receiver<Batch>,
) {
    while let Some(batch) = rx.recv().await {
        let members: Vec<(NodeId, HalterNode)> = metrics
            .borrow()
            .membership_config
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        let mut to = Vec::with_capacity(members.len());
        let mut new = Vec::new();
        {
            let mut map = followers.0.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|id, f| {
                let stays = members.iter().any(|(m, n)| m == id && *n == f.node);
                if !stays {
                    f.gone.store(true, Ordering::Release);
                    f.wake.notify_one();
                }
                stays
            });
            for (id, node) in members {
                let f = map
                    .entry(id)
                    .or_insert_with(|| {
                        let f = Arc::new(Follower::new(node.clone(), PeerState::default()));
                        new.push((id, node, f.clone()));
                        f
                    })
                    .clone();
                to.push(f);
            }
        }
        for (id, node, f) in new {
            let conn = network.new_client(id, &node).await;
            tokio::spawn(follow(conn, f));
        }
        for f in to {
            f.state.send_modify(|s| s.push(batch.clone()));
            f.wake.notify_one();
        }
    }
}

/// Sends one follower its batches in order, merging those that queued up behind each other.
async fn follow(mut conn: PeerConn, follower: Arc<Follower>) {
    let option = RPCOption::new(TIMEOUT);
    while !follower.gone.load(Ordering::Acquire) {
        let mut queued = Vec::new();
        follower.state.send_modify(|s| queued = s.take());
        if queued.is_empty() {
            follower.wake.notified().await;
            continue;
        }
        let merged = merge(queued);
        let n = merged.len();
        for (i, req) in merged.into_iter().enumerate() {
            let ok = match conn.send_append(&req, &option).await {
                Ok(AppendEntriesResponse::Success) => true,
                Ok(other) => {
                    tracing::debug!(answer = %other, "a speculative append was refused");
                    false
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a speculative append failed");
                    false
                }
            };
            follower
                .state
                .send_modify(|s| s.answered(&req, ok, i + 1 < n));
            if !ok {
                break;
            }
        }
    }
}

/// Consecutive batches (same vote, each starting where the one before ended) as one request
/// each run, up to [`MAX_MERGED_ENTRIES`] entries. A commit-only request that follows
/// entries already in the run adds its commit index to the run instead.
fn merge(queued: Vec<Batch>) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::with_capacity(queued.len());
    for next in queued {
        if let Some(cur) = out.last_mut() {
            let same = cur.vote == next.vote;
            let commit_only = next.entries.is_empty() && next.prev_log_id <= end_of(cur);
            let follows = end_of(cur) == next.prev_log_id
                && cur.entries.len() + next.entries.len() <= MAX_MERGED_ENTRIES;
            if same && (commit_only || follows) {
                let merged = Arc::make_mut(cur);
                merged.entries.extend(next.entries.iter().cloned());
                merged.leader_commit = merged.leader_commit.max(next.leader_commit);
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

    trait Take {
        fn send_modify_take(&self) -> Vec<Batch>;
    }
    impl Take for watch::Sender<PeerState> {
        /// What the follower task would take to send.
        fn send_modify_take(&self) -> Vec<Batch> {
            let mut taken = Vec::new();
            self.send_modify(|s| taken = s.take());
            taken
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

    fn commit_only(term: u64, prev: u64, commit: u64) -> Batch {
        Arc::new(AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(term, 1), prev)),
            entries: Vec::new(),
            leader_commit: Some(LogId::new(CommittedLeaderId::new(term, 1), commit)),
        })
    }

    fn id(term: u64, index: u64) -> super::LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn a_commit_index_rides_on_the_entries_before_it() {
        let merged = merge(vec![
            batch(3, Some(4), 5..=6),
            commit_only(3, 5, 4),
            batch(3, Some(6), 7..=7),
            commit_only(3, 6, 5),
        ]);
        assert_eq!(merged.len(), 1, "{merged:?}");
        assert_eq!(end_of(&merged[0]), Some(id(3, 7)));
        assert_eq!(merged[0].leader_commit, Some(id(3, 5)), "the newest commit");

        // A commit-only request beyond the run's end is a request of its own: the follower
        // may not hold its prev_log_id yet when the run is sent.
        let apart = merge(vec![batch(3, Some(4), 5..=6), commit_only(3, 9, 8)]);
        assert_eq!(apart.len(), 2);
        assert_eq!(apart[0].leader_commit, None);

        // Entries that follow a commit-only request join it.
        let joined = merge(vec![commit_only(3, 6, 5), batch(3, Some(6), 7..=8)]);
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].prev_log_id, Some(id(3, 6)));
        assert_eq!(end_of(&joined[0]), Some(id(3, 8)));
    }

    /// Invariant: openraft's request is answered from an early send only once the follower
    /// acknowledged, under the request's vote, an entry at or after the request's last one; a
    /// refusal or a new vote makes the request go out as usual.
    #[test]
    fn only_an_acknowledged_send_covers_a_request() {
        let vote = Vote::new_committed(3, 1);
        let mut s = PeerState::default();
        assert_eq!(s.cover(&vote, id(3, 6)), Cover::No, "nothing sent");

        s.push(batch(3, Some(4), 5..=6));
        assert_eq!(s.cover(&vote, id(3, 6)), Cover::Coming, "queued");
        assert_eq!(s.cover(&vote, id(3, 7)), Cover::No, "beyond what is queued");
        assert_eq!(s.cover(&Vote::new_committed(4, 1), id(3, 6)), Cover::No);

        let taken = s.take();
        assert!(s.queued.is_empty());
        assert_eq!(s.cover(&vote, id(3, 6)), Cover::Coming, "in flight");
        s.answered(&taken[0], true, false);
        assert_eq!(s.cover(&vote, id(3, 5)), Cover::Acked);
        assert_eq!(s.cover(&vote, id(3, 6)), Cover::Acked);
        assert_eq!(s.cover(&vote, id(3, 7)), Cover::No);

        // A refused send clears what queued behind it, which would not follow on either.
        s.push(batch(3, Some(6), 7..=7));
        let taken = s.take();
        s.push(batch(3, Some(7), 8..=8));
        s.answered(&taken[0], false, false);
        assert_eq!(s.cover(&vote, id(3, 7)), Cover::No);
        assert_eq!(s.cover(&vote, id(3, 8)), Cover::No);
        assert!(s.queued.is_empty());
        assert_eq!(
            s.cover(&vote, id(3, 6)),
            Cover::Acked,
            "what was acknowledged stays"
        );

        // A new leader's first batch starts afresh; a late answer of the old one is ignored.
        s.push(batch(4, Some(8), 9..=9));
        s.answered(&batch(3, Some(8), 9..=12), true, false);
        assert_eq!(s.acked, None, "nothing acknowledged under the new vote");
        assert_eq!(s.cover(&Vote::new_committed(4, 1), id(4, 9)), Cover::Coming);
        assert_eq!(s.cover(&vote, id(3, 6)), Cover::No);
    }

    fn follower() -> (Followers, Arc<Follower>) {
        let node = HalterNode {
            peer_addr: "127.0.0.1:1".into(),
            client_addr: "127.0.0.1:2".into(),
        };
        let f = Arc::new(Follower::new(node, PeerState::default()));
        let followers = Followers::default();
        followers.0.lock().unwrap().insert(2, f.clone());
        (followers, f)
    }

    fn openraft_request(
        indexes: std::ops::RangeInclusive<u64>,
        commit: u64,
    ) -> AppendEntriesRequest<TypeConfig> {
        let mut req = (*batch(3, Some(*indexes.start() - 1), indexes)).clone();
        req.leader_commit = Some(id(3, commit));
        req
    }

    /// Follower 2's answer to `req`, asked for on a task of its own.
    fn answer_later(
        followers: &Followers,
        req: &AppendEntriesRequest<TypeConfig>,
    ) -> tokio::task::JoinHandle<Option<AppendEntriesResponse<NodeId>>> {
        let (followers, req) = (followers.clone(), req.clone());
        tokio::spawn(async move { followers.answer(2, &req, Duration::from_secs(5)).await })
    }

    #[tokio::test]
    async fn an_answer_waits_for_the_send_in_flight_and_passes_on_the_commit() {
        let (followers, f) = follower();
        f.state.send_modify(|s| s.push(batch(3, Some(4), 5..=6)));
        let sent = f.state.send_modify_take();
        let req = openraft_request(5..=6, 4);

        let answering = answer_later(&followers, &req);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !answering.is_finished(),
            "waits while the send is in flight"
        );
        f.state.send_modify(|s| s.answered(&sent[0], true, false));
        let answer = answering.await.unwrap();
        assert!(matches!(answer, Some(AppendEntriesResponse::Success)));

        // The follower still has to learn that entry 4 is committed: a commit-only request
        // after the entry it acknowledged.
        let queued: Vec<Batch> = f.state.borrow().queued.iter().cloned().collect();
        assert_eq!(queued.len(), 1);
        assert!(queued[0].entries.is_empty());
        assert_eq!(queued[0].prev_log_id, Some(id(3, 6)));
        assert_eq!(queued[0].leader_commit, Some(id(3, 4)));

        // The same commit index again, or one the follower got from openraft's own sends,
        // queues nothing more.
        assert!(followers.answer(2, &req, Duration::ZERO).await.is_some());
        followers.sent(2, &openraft_request(7..=7, 5));
        // A heartbeat is never answered here, however far the follower acknowledged: a
        // leadership check must hear from the follower itself.
        let heartbeat = AppendEntriesRequest {
            entries: Vec::new(),
            prev_log_id: Some(id(3, 5)),
            ..req.clone()
        };
        assert!(followers
            .answer(2, &heartbeat, Duration::ZERO)
            .await
            .is_none());
        assert!(followers
            .answer(2, &openraft_request(5..=6, 5), Duration::ZERO)
            .await
            .is_some());
        assert_eq!(f.state.borrow().queued.len(), 1);
    }

    #[tokio::test]
    async fn a_refused_or_unanswered_send_leaves_the_request_to_openraft() {
        let (followers, f) = follower();
        let req = openraft_request(5..=6, 4);
        for (target, why) in [(2, "nothing sent"), (3, "no such follower")] {
            let answer = followers.answer(target, &req, Duration::from_secs(5)).await;
            assert!(answer.is_none(), "{why}");
        }

        f.state.send_modify(|s| s.push(batch(3, Some(4), 5..=6)));
        let sent = f.state.send_modify_take();
        let answering = answer_later(&followers, &req);
        tokio::time::sleep(Duration::from_millis(20)).await;
        f.state.send_modify(|s| s.answered(&sent[0], false, false));
        assert!(answering.await.unwrap().is_none(), "refused");

        f.state.send_modify(|s| s.push(batch(3, Some(4), 5..=6)));
        let started = tokio::time::Instant::now();
        assert!(followers
            .answer(2, &req, Duration::from_millis(30))
            .await
            .is_none());
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "gave up only after waiting"
        );
    }
}
