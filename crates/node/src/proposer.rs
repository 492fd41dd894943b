//! The write path and the read barrier, shared by both gRPC services.
//!
//! Writes: the node that receives a request fills in generated ids, then either proposes it
//! (when it leads) or forwards it to the leader's `Cluster/Propose`. Only the leader stamps
//! time into a command, and its stamps never go backwards. A client gets an answer only after
//! the entry is committed and applied, or an `UNAVAILABLE` when there is no leader or no quorum
//! within the deadline (then the outcome is unknown and retrying with the same ids is safe).
//!
//! Reads are linearizable: the leader confirms that it still leads from the votes a quorum has
//! saved, or else with openraft's heartbeat round (`reads.rs`); a follower asks the leader for
//! a read index and waits until it has applied it locally.
//!
//! The read index is never below the node's *read floor*, its last log index when it started.
//! Applies and the committed index are not fsynced every time, so after a whole-cluster power
//! cut a node restarts with a commit index restored from an older point. When a node that led
//! before could restart as leader of the same term (openraft 0.9 does so when its saved vote
//! is committed), openraft's read index (that index, or the first entry of the term) could then
//! be below entries that were applied and read before the cut; simulation seed 307 found it.
//! The log store now hands the vote back uncommitted (`LogStore::read_vote`), so a restarted
//! leader must win a new term and commit its first entry before any read, and that entry is
//! above every committed one. The floor stays as a second guard that costs nothing after
//! start-up: every entry this node committed as leader is in its own log (openraft counts the
//! leader's copy only once it is flushed), so waiting for the floor covers them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use halter_api::halter::{
    cluster_client::ClusterClient, command::Kind, command_result::Result as R, ClaimResult,
    Command, CommandResult, Empty, ProposeBatchRequest, ReadIndexRequest, RejectionInfo,
};
use halter_state_machine::{error::Outcome, Rejection, Response};
use halter_storage::ReadTables;
use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::raft::answers::{Answers, Outcomes};
use crate::raft::read_fence::ReadFence;
use crate::raft::{
    network, state_machine::StateMachineStore, HalterNode, LogCommand, NodeId, Raft,
};
use crate::status::to_status;

pub struct NodeCtx {
    pub id: NodeId,
    pub raft: Raft,
    pub sm: StateMachineStore,
    /// How long a write or a read barrier may take before the client gets `UNAVAILABLE`.
    pub deadline: Duration,
    peers: Mutex<BTreeMap<String, ClusterClient<Channel>>>,
    batcher: mpsc::UnboundedSender<Queued>,
    reads: mpsc::UnboundedSender<ReadWaiter>,
    follower_reads: mpsc::UnboundedSender<FollowerReadWaiter>,
    forwarder: mpsc::UnboundedSender<Forwarded>,
    /// This node's saved vote and commit bound, for confirming reads (`reads.rs`).
    pub fence: Arc<ReadFence>,
    /// The last log index when this node started (see the module comment).
    pub(crate) read_floor: u64,
    /// How this node connects to its peers (plain, or TLS).
    connector: network::PeerConnector,
}

type FollowerReadWaiter = oneshot::Sender<Result<u64, Status>>;

/// A follower's side of read coalescing: the reads queued while one `ReadIndex` call to the
/// leader is in flight share the next call. The call is made after they arrived, and the
/// leader answers it from a confirmation round that starts after the call arrives, so each
/// read still gets an index confirmed after it began.
async fn run_follower_reads(
    ctx: std::sync::Weak<NodeCtx>,
    mut rx: mpsc::UnboundedReceiver<FollowerReadWaiter>,
) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        let result = ctx.leader_read_index().await;
        drop(ctx);
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// The outcome of one leadership confirmation: the index a read must see, or why not.
#[derive(Clone)]
pub(crate) enum ReadRound {
    Index(u64),
    NotLeader,
    Failed(String),
}

type ReadWaiter = oneshot::Sender<ReadRound>;

/// Coalesces linearizable reads on the leader: every read queued while a confirmation round
/// is in flight joins the next round, so a thousand concurrent reads cost one round, not a
/// thousand. A read only joins a round that starts after it arrived, so the leadership it
/// relies on was confirmed after the read began.
async fn run_read_rounds(
    ctx: std::sync::Weak<NodeCtx>,
    mut rx: mpsc::UnboundedReceiver<ReadWaiter>,
) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        let round = match ctx.confirm_by_votes().await {
            Some(round) => round,
            None => ctx.heartbeat_round().await,
        };
        drop(ctx);
        for w in waiters {
            let _ = w.send(round.clone());
        }
    }
}

/// A command waiting for the batcher, and where its outcome goes.
type Queued = (Command, Reply);

/// One command's outcome, or why it has none.
type Answer = Result<Result<Response, Rejection>, ProposeError>;

/// Where one command's outcome goes.
type Reply = oneshot::Sender<Answer>;

pub type OutcomeRx = oneshot::Receiver<Answer>;

/// The outcome of a command queued with [`NodeCtx::queue_local`].
pub async fn outcome(rx: OutcomeRx) -> Result<Result<Response, Rejection>, ProposeError> {
    rx.await
        .map_err(|_| ProposeError::Status(Status::unavailable("node is shutting down")))?
}

/// A command a follower forwards, and where the leader's answer goes (`UNAVAILABLE`: forward
/// it again).
type Forwarded = (
    Command,
    oneshot::Sender<Result<Result<Response, Rejection>, Status>>,
);

/// Most batches a follower has in flight to the leader at once (as the leader's batcher).
const FORWARD_IN_FLIGHT: usize = 4;

/// A follower's forwarder: the commands queued while earlier batches are in flight go to the
/// leader in one `ProposeBatch` call, so a follower's many clients cost the leader one request,
/// not one each.
async fn run_forwarder(ctx: std::sync::Weak<NodeCtx>, mut rx: mpsc::UnboundedReceiver<Forwarded>) {
    let permits = Arc::new(Semaphore::new(FORWARD_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let queued = gather(first, &mut rx);
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let (commands, replies): (Vec<_>, Vec<_>) = queued.into_iter().unzip();
            let sent = match ctx.leader() {
                // Bounded by the deadline: a call hanging on an unreachable leader would hold
                // its slot after its callers gave up (they are not there to cancel it).
                Some((id, node)) if id != ctx.id => match ctx.peer(&node.peer_addr) {
                    Ok(mut client) => {
                        to_leader(
                            ctx.deadline,
                            client.propose_batch(ProposeBatchRequest { commands }),
                        )
                        .await
                    }
                    Err(s) => Err(s),
                },
                // Leads now, or no leader: the callers look again.
                _ => Err(Status::unavailable("leadership changed")),
            };
            match sent {
                Err(s) => {
                    for tx in replies {
                        let _ = tx.send(Err(s.clone()));
                    }
                }
                Ok(reply) => {
                    let retry: std::collections::BTreeSet<u32> = reply.retry.into_iter().collect();
                    let mut results = reply.results.into_iter();
                    for (i, tx) in replies.into_iter().enumerate() {
                        let r = results.next();
                        let _ = tx.send(match r {
                            Some(_) if retry.contains(&(i as u32)) => {
                                Err(Status::unavailable("the leader moved"))
                            }
                            Some(r) => Ok(from_result(r)),
                            None => Err(Status::internal("the leader answered fewer commands")),
                        });
                    }
                }
            }
        });
    }
}

/// Group commit: most commands in one log entry, most bytes of them, and how many entries may
/// be in the pipeline (appended, replicating or applying) at once. While that many are in
/// flight, new commands queue up and leave together in the next entry, so the fsyncs per
/// command fall as the load rises, while a lone command still leaves at once.
///
/// One entry at a time. openraft 0.9's core appends (and fsyncs) each client write as it takes
/// it from its queue, and handles its replication streams' progress only once that queue is
/// empty; with 8 entries in flight the leader's core spent ~40 % of its time in fsyncs of small
/// entries, and every follower's answer waited behind them (a replication round trip of 3.5 ms
/// took 7.7 ms per cycle at 256 W1 clients). With one, each fsync carries everything that
/// queued meanwhile. Interleaved runs (`docs/bench/analysis.md`, ninth session): W1 at 16
/// clients 3,045 and 2,952 against 2,070 and 2,015 writes/s, at 256 clients 8,818, 9,192 and
/// 8,427 against 7,395, 7,908 and 8,059; W2 at 64 clients 1,600 and 1,469 against 1,462 and
/// 1,253 workflows/s.
const MAX_BATCH: usize = 1024;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
const IN_FLIGHT: usize = 1;

/// `first` and whatever else is already queued behind it, up to [`MAX_BATCH`] commands and about
/// [`MAX_BATCH_BYTES`]: one batch (the leader's entry, or a follower's `ProposeBatch`).
fn gather<R>(
    first: (Command, R),
    rx: &mut mpsc::UnboundedReceiver<(Command, R)>,
) -> Vec<(Command, R)> {
    let mut bytes = first.0.encoded_len();
    let mut queued = vec![first];
    while queued.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(q) => {
                bytes += q.0.encoded_len();
                queued.push(q);
            }
            Err(_) => break,
        }
    }
    queued
}

/// A follower's call to the leader, bounded by `deadline` (`UNAVAILABLE` when it runs out).
async fn to_leader<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(Status::unavailable("the leader did not answer")))
        .map(tonic::Response::into_inner)
}

/// A timestamp for a new entry: the wall clock, but never earlier than the last one.
fn stamp_from(last: &AtomicI64) -> i64 {
    let now = wall_clock_ms();
    let prev = last.fetch_max(now, Ordering::SeqCst);
    now.max(prev)
}

/// The leader's batcher: gathers the commands queued while earlier entries are in flight into
/// one entry. Every command of an entry gets the same timestamp, taken when the entry is formed,
/// so time in the log never goes backwards.
///
/// Each entry carries a tag from `answers`, and its outcomes come from the state machine as soon
/// as it has committed the apply (`raft::answers`); openraft's own answer to `client_write`
/// still ends the wait when it comes first, and is the only one for its errors. The wait is
/// bounded by `deadline`: openraft 0.9 never answers an entry that a snapshot installed over
/// it, and the one permit must not stay taken.
async fn run_batcher(
    raft: Raft,
    answers: Answers,
    deadline: Duration,
    last_stamp: Arc<AtomicI64>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let queued = gather(first, &mut rx);
        let stamp = stamp_from(&last_stamp);
        let (mut commands, mut replies) = (
            Vec::with_capacity(queued.len()),
            Vec::with_capacity(queued.len()),
        );
        for (mut cmd, tx) in queued {
            cmd.proposed_at_ms = stamp;
            commands.push(cmd.encode_to_vec());
            replies.push(tx);
        }
        let (proposal, answer) = answers.register();
        // Freed when the entry commits (`raft::answers`), or when `settle` is done with it.
        answers.hold(proposal, permit);
        let payload = LogCommand::Tagged { commands, proposal };
        let raft = raft.clone();
        let answers = answers.clone();
        // The span is attached to the task (`instrument`), not entered across its awaits: an
        // entered span would stay current on the worker thread while the task waits and tag
        // whatever else ran there.
        let span = tracing::debug_span!("propose", commands = replies.len());
        let write = async move {
            let entry = Entry {
                answers,
                proposal,
                answer,
                replies,
            };
            settle(entry, raft.client_write(payload), deadline).await;
        };
        tokio::spawn(tracing::Instrument::instrument(write, span));
    }
}

/// An entry the batcher proposed, waiting for its outcomes.
struct Entry {
    answers: Answers,
    proposal: u64,
    answer: oneshot::Receiver<Outcomes>,
    replies: Vec<Reply>,
}

/// Why openraft's `client_write` failed.
type WriteError = RaftError<NodeId, ClientWriteError<NodeId, HalterNode>>;

/// What openraft's `client_write` resolves to.
type Written = Result<openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>, WriteError>;

/// Answers `entry`'s callers once its outcomes are known (or `deadline` passed), then releases
/// its pipeline slot if its commit has not; when the state machine answered first, it still
/// takes openraft's answer.
async fn settle(
    entry: Entry,
    written: impl std::future::Future<Output = Written>,
    deadline: Duration,
) {
    let Entry {
        answers,
        proposal,
        answer,
        replies,
    } = entry;
    tokio::pin!(written);
    let outcome = tokio::time::timeout(
        deadline,
        wait_for_outcomes(&answers, proposal, answer, &mut written),
    )
    .await;
    let answered_first = matches!(outcome, Ok(WaitEnd::Answered(_)));
    let outcome = match outcome {
        Ok(WaitEnd::Answered(results) | WaitEnd::Written(Ok(results))) => Ok(results),
        Ok(WaitEnd::Written(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))))) => {
            Err(ProposeError::NotLeader)
        }
        Ok(WaitEnd::Written(Err(e))) => Err(ProposeError::Status(Status::unavailable(format!(
            "raft: {e}"
        )))),
        Err(_) => {
            answers.forget(proposal);
            Err(ProposeError::Status(Status::unavailable(
                "the entry was not applied in time; its outcome is unknown",
            )))
        }
    };
    match outcome {
        Ok(results) => {
            let mut results = results.into_iter();
            for tx in replies {
                let _ = tx.send(Ok(results.next().unwrap_or(Ok(Response::Empty))));
            }
        }
        Err(e) => {
            for tx in replies {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
    // Usually freed already, when the entry committed.
    answers.release(proposal);
    if answered_first {
        // openraft answers this entry too, a little later; it warns about every answer nobody
        // receives, so the receiver waits for it (bounded, as above).
        let _ = tokio::time::timeout(deadline, &mut written).await;
    }
}

/// How a proposal's wait ended.
enum WaitEnd {
    /// The state machine handed over the outcomes.
    Answered(Outcomes),
    /// openraft answered first: the outcomes, or why there are none.
    Written(Result<Outcomes, WriteError>),
}

/// Waits for the outcomes of the entry tagged `proposal`: from the state machine (`answer`)
/// or from openraft (`written`), whichever comes first. `written` is left to the caller, which
/// keeps awaiting it when the state machine answered first.
async fn wait_for_outcomes(
    answers: &Answers,
    proposal: u64,
    mut answer: oneshot::Receiver<Outcomes>,
    written: &mut std::pin::Pin<&mut impl std::future::Future<Output = Written>>,
) -> WaitEnd {
    tokio::select! {
        biased;
        Ok(results) = &mut answer => WaitEnd::Answered(results),
        w = written.as_mut() => {
            answers.forget(proposal);
            // The state machine answers before its apply returns, so after a success its
            // outcomes are here already (openraft's copy is then empty).
            WaitEnd::Written(match (w, answer.try_recv()) {
                (_, Ok(results)) => Ok(results),
                (Ok(resp), Err(_)) => Ok(resp.data.results),
                (Err(e), Err(_)) => Err(e),
            })
        }
    }
}

/// The wall clock in milliseconds: the leader's proposer stamps entries with it, the timer
/// service and the metrics page compare due times with it. The state machine never reads it.
pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl NodeCtx {
    /// Must be called inside the runtime: it starts the batcher task. `read_floor` is the
    /// last log index in this node's log when it started (see the module comment).
    pub fn new(
        id: NodeId,
        raft: Raft,
        sm: StateMachineStore,
        deadline: Duration,
        read_floor: u64,
        fence: Arc<ReadFence>,
        connector: network::PeerConnector,
    ) -> Arc<Self> {
        let last_stamp = Arc::new(AtomicI64::new(0));
        let (batcher, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_batcher(
            raft.clone(),
            sm.answers.clone(),
            deadline,
            last_stamp,
            rx,
        ));
        let (reads, reads_rx) = mpsc::unbounded_channel();
        let (follower_reads, follower_rx) = mpsc::unbounded_channel();
        let (forwarder, forward_rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(Self {
            id,
            raft,
            sm,
            deadline,
            peers: Mutex::new(BTreeMap::new()),
            batcher,
            reads,
            follower_reads,
            forwarder,
            fence,
            read_floor,
            connector,
        });
        tokio::spawn(run_read_rounds(Arc::downgrade(&ctx), reads_rx));
        tokio::spawn(run_follower_reads(Arc::downgrade(&ctx), follower_rx));
        tokio::spawn(run_forwarder(Arc::downgrade(&ctx), forward_rx));
        ctx
    }

    /// One `ReadIndex` call to the leader (see `run_follower_reads`).
    async fn leader_read_index(&self) -> Result<u64, Status> {
        match self.leader() {
            Some((id, _)) if id == self.id => Err(Status::unavailable("this node leads now")),
            Some((_, node)) => {
                let mut client = self.peer(&node.peer_addr)?;
                // Taken now, after the reads this call serves arrived (`reads.rs`).
                let request = ReadIndexRequest {
                    follower_id: self.id,
                    follower_vote_term: self.fence.vote_term(),
                };
                // Bounded, or one hanging call would hold every read of this node behind it.
                to_leader(self.deadline, client.read_index(request))
                    .await
                    .map(|r| r.index)
            }
            None => Err(self.no_leader()),
        }
    }

    /// A cached client to a peer's cluster service.
    pub fn peer(&self, addr: &str) -> Result<ClusterClient<Channel>, Status> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let ch = self
            .connector
            .channel(addr)
            .map_err(|e| Status::unavailable(format!("bad peer address {addr}: {e}")))?;
        let c = ClusterClient::new(ch)
            .max_decoding_message_size(network::MAX_PEER_MESSAGE)
            .max_encoding_message_size(network::MAX_PEER_MESSAGE);
        peers.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The current leader and its addresses, as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, HalterNode)> {
        // Asked on every request: borrow the small server metrics, clone only the leader's node.
        let rx = self.raft.server_metrics();
        let m = rx.borrow();
        let id = m.current_leader?;
        let node = m
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
            .unwrap_or_default();
        Some((id, node))
    }

    fn no_leader(&self) -> Status {
        Status::unavailable(
            "no leader right now (election in progress or no quorum); retry shortly",
        )
    }

    /// Proposes `kind` and returns its outcome after commit and apply.
    pub async fn propose(&self, kind: Kind) -> Result<Response, Status> {
        let cmd = Command {
            format_version: halter_api::LOG_FORMAT_VERSION,
            proposed_at_ms: 0,
            kind: Some(kind),
        };
        let outcome = tokio::time::timeout(self.deadline, self.propose_cmd(cmd))
            .await
            .map_err(|_| match self.leader() {
                None => self.no_leader(),
                Some(_) => Status::unavailable(format!(
                    "not committed within {:?} (no quorum reachable?); the outcome is unknown, a retry with the same ids is safe",
                    self.deadline
                )),
            })??;
        outcome.map_err(|r| to_status(&r))
    }

    /// Tries until it gets an answer; the caller's deadline bounds it (elections take a few
    /// hundred milliseconds, and a client is better served waiting than failing fast).
    async fn propose_cmd(&self, cmd: Command) -> Result<Result<Response, Rejection>, Status> {
        loop {
            match self.leader() {
                Some((id, _)) if id == self.id => match self.propose_local(cmd.clone()).await {
                    // Metrics still say we lead but Raft says we do not: wait for them to agree
                    // (never spin: the simulation caught this loop burning a core).
                    Err(ProposeError::NotLeader) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(ProposeError::Status(s)) => return Err(s),
                    Ok(r) => return Ok(r),
                },
                Some(_) => {
                    let (tx, rx) = oneshot::channel();
                    if self.forwarder.send((cmd.clone(), tx)).is_err() {
                        return Err(Status::unavailable("node is shutting down"));
                    }
                    let answer = rx
                        .await
                        .unwrap_or_else(|_| Err(Status::unavailable("node is shutting down")));
                    match answer {
                        Ok(r) => return Ok(r),
                        // The leader moved while we forwarded; look again.
                        Err(s) if s.code() == Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Err(s) => return Err(s),
                    }
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Proposes on this node, which must be the leader: the batcher stamps the time and puts
    /// the command in the next log entry; this waits for its apply.
    pub async fn propose_local(
        &self,
        cmd: Command,
    ) -> Result<Result<Response, Rejection>, ProposeError> {
        outcome(self.queue_local(cmd)?).await
    }

    /// Hands `cmd` to this (leading) node's batcher; [`outcome`] waits for it.
    pub fn queue_local(&self, cmd: Command) -> Result<OutcomeRx, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.batcher
            .send((cmd, tx))
            .map_err(|_| ProposeError::Status(Status::unavailable("node is shutting down")))?;
        Ok(rx)
    }

    /// Waits until a read on this node reflects every write acknowledged before it started.
    pub async fn read_barrier(&self) -> Result<(), Status> {
        tokio::time::timeout(self.deadline, self.read_barrier_inner())
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "no quorum confirmed the read within {:?}",
                    self.deadline
                ))
            })?
    }

    async fn read_barrier_inner(&self) -> Result<(), Status> {
        loop {
            match self.leader() {
                Some((id, _)) if id == self.id => match self.read_round().await {
                    ReadRound::Index(index) => return self.applied_up_to(index).await,
                    ReadRound::NotLeader => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    ReadRound::Failed(e) => return Err(Status::unavailable(e)),
                },
                Some(_) => {
                    let (tx, rx) = oneshot::channel();
                    if self.follower_reads.send(tx).is_err() {
                        return Err(Status::unavailable("node is shutting down"));
                    }
                    let index = match rx
                        .await
                        .unwrap_or_else(|_| Err(Status::unavailable("node is shutting down")))
                    {
                        Ok(index) => index,
                        Err(s) if s.code() == Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Err(s) => return Err(s),
                    };
                    return self.applied_up_to(index).await;
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The leader's side of a follower's read barrier. `follower`: who asked, and the term of
    /// the vote it had saved when it asked, if it said.
    pub async fn read_index(&self, follower: Option<(NodeId, Option<u64>)>) -> Result<u64, Status> {
        if let Some(index) = follower.and_then(|f| self.confirm_with(f)) {
            return Ok(index);
        }
        match self.read_round().await {
            ReadRound::Index(i) => Ok(i),
            ReadRound::NotLeader => Err(Status::unavailable("not the leader")),
            ReadRound::Failed(e) => Err(Status::unavailable(format!("not the leader: {e}"))),
        }
    }

    /// Joins the next leadership confirmation round (see `run_read_rounds`).
    async fn read_round(&self) -> ReadRound {
        let (tx, rx) = oneshot::channel();
        if self.reads.send(tx).is_err() {
            return ReadRound::Failed("node is shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| ReadRound::Failed("node is shutting down".into()))
    }

    /// Runs a read over a consistent snapshot of this node's state.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTables) -> Result<T, Outcome>) -> Result<T, Status> {
        let txn = self
            .sm
            .store
            .begin_read()
            .map_err(|e| Status::internal(e.to_string()))?;
        let tables = ReadTables::new(&txn);
        f(&tables).map_err(|e| match e {
            Outcome::Rejected(r) => to_status(&r),
            Outcome::Fatal(e) => Status::internal(e.to_string()),
        })
    }
}

#[derive(Clone, Debug)]
pub enum ProposeError {
    NotLeader,
    Status(Status),
}

/// A command outcome as the leader sends it back to a forwarding follower.
pub fn to_result(r: Result<Response, Rejection>) -> CommandResult {
    let result = match r {
        Ok(Response::ExternalEventDef(d)) => R::ExternalEventDef(d),
        Ok(Response::ExternalEvent(e)) => R::ExternalEvent(e),
        Ok(Response::WfSpec(s)) => R::WfSpec(s),
        Ok(Response::WfRun(w)) => R::WfRun(w),
        Ok(Response::Empty) => R::Empty(Empty {}),
        Ok(Response::TimersFired(n)) => R::TimersFired(n as u64),
        Ok(Response::CorrelatedEvent(e)) => R::CorrelatedEvent(e),
        Ok(Response::TaskDef(d)) => R::TaskDef(d),
        Ok(Response::ScheduledTask(task)) => R::Claim(ClaimResult { task }),
        Ok(Response::WorkflowEventDef(d)) => R::WorkflowEventDef(d),
        Ok(Response::UserTaskDef(d)) => R::UserTaskDef(d),
        Ok(Response::UserTaskRun(r)) => R::UserTaskRun(r),
        Ok(Response::ScheduledWfRun(s)) => R::ScheduledWfRun(s),
        Ok(Response::PutCheckpoint(c)) => R::Checkpoint(c),
        Err(rej) => {
            let s = to_status(&rej);
            R::Rejection(RejectionInfo {
                code: s.code() as i32,
                message: s.message().to_string(),
            })
        }
    };
    CommandResult {
        result: Some(result),
    }
}

pub fn from_result(r: CommandResult) -> Result<Response, Rejection> {
    match r.result {
        Some(R::ExternalEventDef(d)) => Ok(Response::ExternalEventDef(d)),
        Some(R::ExternalEvent(e)) => Ok(Response::ExternalEvent(e)),
        Some(R::WfSpec(s)) => Ok(Response::WfSpec(s)),
        Some(R::WfRun(w)) => Ok(Response::WfRun(w)),
        Some(R::TimersFired(n)) => Ok(Response::TimersFired(n as usize)),
        Some(R::CorrelatedEvent(e)) => Ok(Response::CorrelatedEvent(e)),
        Some(R::TaskDef(d)) => Ok(Response::TaskDef(d)),
        Some(R::Claim(c)) => Ok(Response::ScheduledTask(c.task)),
        Some(R::WorkflowEventDef(d)) => Ok(Response::WorkflowEventDef(d)),
        Some(R::UserTaskDef(d)) => Ok(Response::UserTaskDef(d)),
        Some(R::UserTaskRun(r)) => Ok(Response::UserTaskRun(r)),
        Some(R::ScheduledWfRun(s)) => Ok(Response::ScheduledWfRun(s)),
        Some(R::Checkpoint(c)) => Ok(Response::PutCheckpoint(c)),
        Some(R::Empty(_)) | None => Ok(Response::Empty),
        Some(R::Rejection(info)) => Err(crate::status::from_code(info.code, info.message)),
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Callers for `n` commands, registered in `answers` with a permit taken from `permits`.
    async fn proposed(
        answers: &Answers,
        permits: &Arc<Semaphore>,
        n: usize,
    ) -> (Entry, u64, Vec<OutcomeRx>) {
        let (replies, rxs) = (0..n).map(|_| oneshot::channel()).unzip();
        let (proposal, answer) = answers.register();
        answers.hold(proposal, permits.clone().acquire_owned().await.unwrap());
        let entry = Entry {
            answers: answers.clone(),
            proposal,
            answer,
            replies,
        };
        (entry, proposal, rxs)
    }

    /// openraft 0.9 never answers an entry a snapshot was installed over: the callers get
    /// UNAVAILABLE after the deadline, and the batcher's permit is free again.
    #[tokio::test]
    async fn an_entry_nobody_answers_frees_the_batcher_after_the_deadline() {
        let answers = Answers::new(1);
        let permits = Arc::new(Semaphore::new(1));
        let (entry, _, rxs) = proposed(&answers, &permits, 2).await;
        assert_eq!(permits.available_permits(), 0);
        settle(
            entry,
            std::future::pending::<Written>(),
            Duration::from_millis(30),
        )
        .await;
        for rx in rxs {
            match rx.await.unwrap() {
                Err(ProposeError::Status(s)) => assert_eq!(s.code(), Code::Unavailable),
                other => panic!("expected UNAVAILABLE, got {other:?}"),
            }
        }
        assert_eq!(permits.available_permits(), 1);
        assert_eq!(answers.waiting_count(), 0);
    }

    /// The state machine's answer reaches the callers and frees the permit before openraft
    /// answers, and openraft's answer still finds its receiver (it warns when none is left).
    #[tokio::test]
    async fn openrafts_later_answer_still_finds_a_receiver() {
        let answers = Answers::new(1);
        let permits = Arc::new(Semaphore::new(1));
        let (entry, proposal, rxs) = proposed(&answers, &permits, 2).await;
        let (openraft_tx, openraft_rx) = oneshot::channel::<Written>();
        let written = async move { openraft_rx.await.unwrap() };
        let task = tokio::spawn(settle(entry, written, Duration::from_secs(5)));
        let rejected = Err(Rejection::NotFound("x".into()));
        assert!(answers
            .answer(proposal, vec![Ok(Response::Empty), rejected.clone()])
            .is_none());
        let mut rxs = rxs.into_iter();
        assert_eq!(
            rxs.next().unwrap().await.unwrap().unwrap(),
            Ok(Response::Empty)
        );
        assert_eq!(rxs.next().unwrap().await.unwrap().unwrap(), rejected);
        while permits.available_permits() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!task.is_finished(), "still waiting for openraft's answer");
        let late = openraft::raft::ClientWriteResponse {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
            data: crate::raft::CommandOutcome::default(),
            membership: None,
        };
        assert!(
            openraft_tx.send(Ok(late)).is_ok(),
            "the receiver is still there"
        );
        task.await.unwrap();
    }
}
