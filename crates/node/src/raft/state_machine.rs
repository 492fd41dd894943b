//! openraft's state machine: applies committed entries through `halter_state_machine::apply`,
//! a whole batch in one redb write transaction, and builds and installs snapshots.
//!
//! The last applied log id and the membership live in the same database as the state tables
//! (table `raft_sm`), so a snapshot's data, applied index and membership are read in one
//! consistent read transaction and installed in one write transaction.
//!
//! Applying does not fsync every time: an entry is applied only once it is committed, which
//! means it is already durable in a quorum's logs, so after a power cut the state is rebuilt by
//! applying again from the last durable `last_applied` (apply is deterministic). One apply in
//! `sync_state_every_applies` (default [`SYNC_EVERY_APPLIES`]) is durable, so the replay stays
//! bounded and redb can reuse the pages it freed (a page written durably and then replaced is
//! reused only after the next durable commit). Reads must then not trust the restored commit
//! index alone: see `NodeCtx`'s read floor.
//!
//! Why 1,024 and not fewer: redb keeps the pages of non-durable commits in memory and writes
//! them out at the next durable one. A page replaced before then is never written, so the rarer
//! the durable commits, the fewer times a hot B-tree leaf is written. Under W2 at 64 clients, one
//! durable commit in 64 wrote about 4,200 pages (16 MiB) per node each time, 3-4 % of a node's
//! time stalled in them; one in 1,024 stalls each node about a third as long in all
//! (`docs/bench/analysis.md`, fifteenth session).

use std::collections::BTreeSet;
use std::io::{Cursor, Read, Seek};
use std::path::PathBuf;
use std::sync::Arc;

use halter_api::halter::Command;
use halter_state_machine::{apply, Effect};
use halter_storage::{snapshot, Store, Tables};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageError};
use prost::Message;
use redb::{ReadableTable, TableDefinition};
use tokio::sync::{broadcast, watch, Notify};

use super::answers::Answers;
use super::snapshot_data::{PendingExport, SnapshotData};

use super::{
    io_read, io_write, CommandOutcome, HalterNode, LogCommand, LogId, NodeId, StoredMembership,
    TypeConfig,
};

const RAFT_SM: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_sm");
const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
/// `(last log id, snapshot id)` of the last snapshot installed here.
const SNAPSHOT_ID: &str = "snapshot_id";

/// One apply transaction in this many is fsynced unless configured otherwise (see the module
/// comment).
pub const SYNC_EVERY_APPLIES: u32 = 1024;

/// One apply transaction's thrown WorkflowEvents, by WfRun id (`None`: look again, all of you).
pub type Thrown = Option<Arc<BTreeSet<String>>>;

/// Apply transactions whose throws a held call may fall behind on before it just looks again.
const THROWN_BACKLOG: usize = 256;

#[derive(Clone)]
pub struct StateMachineStore {
    pub store: Arc<Store>,
    /// Where snapshots are exported to when sent and written to when received, under other
    /// extensions (`None`: in memory). No snapshot is kept: the state tables are one, made
    /// durable when openraft builds a snapshot and exported when a peer needs it.
    snapshot_path: Option<PathBuf>,
    /// Woken when an applied entry armed a timer, so the leader's timer service re-plans.
    pub timers_changed: Arc<Notify>,
    /// Bumped when an applied entry queued a task attempt (or a snapshot was installed), so
    /// the polls this node holds look for work again.
    pub tasks_queued: Arc<watch::Sender<u64>>,
    /// The WfRuns each apply transaction threw WorkflowEvents in (`None` after a snapshot was
    /// installed: everything may have changed), so the `AwaitWorkflowEvent` calls this node
    /// holds for those WfRuns look again and the others stay asleep. Every node applies every
    /// entry, so a call is woken on whichever node holds it.
    pub workflow_events: broadcast::Sender<Thrown>,
    /// Apply transactions committed without fsync since the last durable one.
    unsynced_applies: u32,
    /// One apply transaction in this many is durable.
    sync_every: u32,
    /// This node's proposals waiting for their outcomes, answered right after the commit.
    pub answers: Answers,
    /// The index of the last entry applied, set as soon as its transaction committed and
    /// before anyone is answered from it: reads wait on it (`proposer.rs`), not on openraft's
    /// metrics, which move later.
    pub applied: Arc<watch::Sender<Option<LogId>>>,
}

impl StateMachineStore {
    pub fn new(
        store: Arc<Store>,
        snapshot_path: Option<PathBuf>,
    ) -> Result<Self, StorageError<NodeId>> {
        let txn = store.begin_write().map_err(io_write)?;
        txn.open_table(RAFT_SM).map_err(io_write)?;
        build_missing_indexes(&txn)?;
        txn.commit().map_err(io_write)?;
        if let Some(p) = &snapshot_path {
            // Kept by older versions, which exported a snapshot every `snapshot_after_logs`.
            for stale in [p.clone(), p.with_extension("tmp")] {
                let _ = std::fs::remove_file(stale);
            }
        }
        let sm = Self {
            store,
            snapshot_path,
            timers_changed: Arc::new(Notify::new()),
            tasks_queued: Arc::new(watch::channel(0).0),
            workflow_events: broadcast::channel(THROWN_BACKLOG).0,
            unsynced_applies: 0,
            sync_every: SYNC_EVERY_APPLIES,
            answers: Answers::random(),
            applied: Arc::new(watch::channel(None).0),
        };
        sm.applied.send_replace(sm.last_applied()?);
        Ok(sm)
    }

    /// Makes one apply transaction in `n` durable (0 counts as 1: every one).
    pub fn sync_every(mut self, n: u32) -> Self {
        self.sync_every = n.max(1);
        self
    }

    /// The index of the last entry applied to this replica's state.
    pub fn last_applied(&self) -> Result<Option<LogId>, StorageError<NodeId>> {
        let txn = self.store.begin_read().map_err(io_read)?;
        let t = txn.open_table(RAFT_SM).map_err(io_read)?;
        read_json(&t, LAST_APPLIED)
    }

    /// The last applied log id and a digest of every state table, from one read transaction.
    pub fn digest(&self) -> Result<(Option<LogId>, String), StorageError<NodeId>> {
        let txn = self.store.begin_read().map_err(io_read)?;
        let t = txn.open_table(RAFT_SM).map_err(io_read)?;
        let applied = read_json(&t, LAST_APPLIED)?;
        let digest = halter_storage::digest::digest(&txn).map_err(io_read)?;
        Ok((applied, digest))
    }

    fn side_path(&self, ext: &str) -> Option<PathBuf> {
        self.snapshot_path.as_ref().map(|p| p.with_extension(ext))
    }

    /// The state as a snapshot: its meta and the rows, read lazily, from one read transaction.
    /// `None` before anything was applied.
    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let s = self.snapshot_at(self.store.begin_read().map_err(io_read)?)?;
        Ok(s.filter(|s| s.meta.last_log_id.is_some()))
    }

    fn snapshot_at(
        &self,
        txn: redb::ReadTransaction,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let meta = meta_of(&txn)?;
        let meta_json = serde_json::to_vec(&meta).map_err(io_write)?;
        let file = self.side_path(&format!(
            "send-{}",
            SEND_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::Lazy(Some(PendingExport {
                txn,
                meta_json,
                file,
            }))),
        }))
    }
}

/// The Raft meta of the state `txn` sees: its last applied log id and membership, and a
/// snapshot id.
fn meta_of(
    txn: &redb::ReadTransaction,
) -> Result<SnapshotMeta<NodeId, HalterNode>, StorageError<NodeId>> {
    let t = txn.open_table(RAFT_SM).map_err(io_read)?;
    let last: Option<LogId> = read_json::<Option<LogId>>(&t, LAST_APPLIED)?.flatten();
    let membership: Option<StoredMembership> = read_json(&t, MEMBERSHIP)?;
    // The id a snapshot installed at this very point was given, so openraft
    // sees the same snapshot again; otherwise one named after the log id.
    let snapshot_id = match (read_json::<(LogId, String)>(&t, SNAPSHOT_ID)?, last) {
        (Some((at, id)), Some(l)) if at == l => id,
        (_, Some(l)) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
        (_, None) => "empty".to_string(),
    };
    Ok(SnapshotMeta {
        last_log_id: last,
        last_membership: membership.unwrap_or_default(),
        snapshot_id,
    })
}

/// What an online backup exports: a read transaction over the state, and the state's Raft
/// meta (last applied log id, membership), encoded as a snapshot's.
pub struct BackupSource {
    pub applied: Option<LogId>,
    pub meta_json: Vec<u8>,
    pub txn: redb::ReadTransaction,
}

impl StateMachineStore {
    /// The state as it is now, for a backup. Applies go on meanwhile.
    pub fn backup_source(&self) -> Result<BackupSource, StorageError<NodeId>> {
        let txn = self.store.begin_read().map_err(io_read)?;
        let meta = meta_of(&txn)?;
        let meta_json = serde_json::to_vec(&meta).map_err(io_write)?;
        Ok(BackupSource {
            applied: meta.last_log_id,
            meta_json,
            txn,
        })
    }
}

/// Fills the empty state `store` from a backup stream (an exported snapshot) as the state of
/// a new one-voter cluster whose only member is `id` at `node`: the backup's membership names
/// the old cluster's nodes, which the restored node must not wait for. The state keeps its
/// last applied log id, so openraft starts the restored node with its log purged up to there.
/// Returns the backup's last applied log id and the rows read. One durable transaction: all
/// or nothing.
pub fn restore_backup(
    store: &Store,
    input: &mut impl Read,
    id: NodeId,
    node: HalterNode,
) -> Result<(LogId, u64), StorageError<NodeId>> {
    let txn = store.begin_write().map_err(io_write)?;
    let meta_json = snapshot::read_meta(input).map_err(io_read)?;
    let meta: SnapshotMeta<NodeId, HalterNode> =
        serde_json::from_slice(&meta_json).map_err(io_read)?;
    let Some(last) = meta.last_log_id else {
        return Err(io_read(std::io::Error::other(
            "the backup holds no applied state",
        )));
    };
    let rows = snapshot::read_rows(&txn, input).map_err(io_read)?;
    build_missing_indexes(&txn)?;
    {
        let membership = openraft::Membership::new(
            vec![BTreeSet::from([id])],
            std::collections::BTreeMap::from([(id, node)]),
        );
        let stored = StoredMembership::new(Some(last), membership);
        let mut sm = txn.open_table(RAFT_SM).map_err(io_write)?;
        let la = serde_json::to_vec(&Some(last)).map_err(io_write)?;
        sm.insert(LAST_APPLIED, la.as_slice()).map_err(io_write)?;
        let m = serde_json::to_vec(&stored).map_err(io_write)?;
        sm.insert(MEMBERSHIP, m.as_slice()).map_err(io_write)?;
    }
    txn.commit().map_err(io_write)?;
    Ok((last, rows))
}

/// Names the files of concurrent exports apart.
static SEND_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs long synchronous storage work (a whole-state export or import) off the async
/// workers; under the simulator, where there are no blocking threads, in place.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError<NodeId>> + Send + 'static,
) -> Result<T, StorageError<NodeId>> {
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(f).await.map_err(io_write)?
    }
    #[cfg(madsim)]
    {
        f()
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StorageError<NodeId>> {
    match t.get(key).map_err(io_read)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(io_read),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Applies are mostly unsynced; once openraft has this snapshot it may purge the log
        // behind it, so the state must survive a power cut up to here. A durable commit makes
        // every earlier commit durable. Nothing is exported: a peer that needs the snapshot
        // gets the state as it is then (`get_current_snapshot`). The read comes first: the
        // durable commit after it covers everything it sees (applies go on meanwhile).
        let txn = self.store.begin_read().map_err(io_read)?;
        let store = self.store.clone();
        blocking(move || {
            store
                .begin_write()
                .and_then(|w| w.commit().map_err(Into::into))
                .map_err(io_write)
        })
        .await?;
        let snapshot = self
            .snapshot_at(txn)?
            .ok_or_else(|| io_read(std::io::Error::other("no state to snapshot")))?;
        tracing::info!(snapshot = %snapshot.meta.snapshot_id, "snapshot point made durable");
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let txn = self.store.begin_read().map_err(io_read)?;
        let t = txn.open_table(RAFT_SM).map_err(io_read)?;
        Ok((
            read_json(&t, LAST_APPLIED)?,
            read_json(&t, MEMBERSHIP)?.unwrap_or_default(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        // Outcomes of this node's tagged proposals, by position in `out`.
        let mut tagged = Vec::new();
        let mut timers_armed = false;
        let mut tasks_queued = false;
        let mut thrown = BTreeSet::new();
        let mut txn = self.store.begin_write().map_err(io_write)?;
        self.unsynced_applies += 1;
        let durable = self.unsynced_applies >= self.sync_every;
        if durable {
            self.unsynced_applies = 0;
        } else {
            txn.set_durability(redb::Durability::None)
                .map_err(io_write)?;
        }
        let last_applied = {
            let mut tables = Tables::new(&txn);
            let mut sm = txn.open_table(RAFT_SM).map_err(io_write)?;
            let mut last = None;
            for entry in entries {
                last = Some(entry.log_id);
                let outcome = match entry.payload {
                    EntryPayload::Blank => CommandOutcome::default(),
                    EntryPayload::Membership(m) => {
                        let stored = StoredMembership::new(Some(entry.log_id), m);
                        let bytes = serde_json::to_vec(&stored).map_err(io_write)?;
                        sm.insert(MEMBERSHIP, bytes.as_slice()).map_err(io_write)?;
                        CommandOutcome::default()
                    }
                    EntryPayload::Normal(cmd) => {
                        let cmds = match cmd {
                            LogCommand::One(c) => vec![c],
                            LogCommand::Batch(commands) => commands,
                            LogCommand::Tagged { commands, proposal } => {
                                tagged.push((out.len(), proposal));
                                commands
                            }
                        };
                        let mut results = Vec::with_capacity(cmds.len());
                        for bytes in cmds {
                            let result = match Command::decode(bytes.as_slice()) {
                                Err(e) => Err(halter_state_machine::Rejection::InvalidArgument(
                                    format!("undecodable command: {e}"),
                                )),
                                Ok(cmd) => {
                                    let applied = apply(&mut tables, &cmd).map_err(|e| {
                                        tracing::error!(error = %e, index = entry.log_id.index, "apply failed");
                                        StorageError::from(openraft::StorageIOError::apply(
                                            entry.log_id,
                                            openraft::AnyError::new(&e),
                                        ))
                                    })?;
                                    timers_armed |= applied
                                        .effects
                                        .iter()
                                        .any(|e| matches!(e, Effect::TimerArmed { .. }));
                                    tasks_queued |= applied
                                        .effects
                                        .iter()
                                        .any(|e| matches!(e, Effect::TaskQueued { .. }));
                                    for e in &applied.effects {
                                        if let Effect::WorkflowEventThrown { wf_run_id } = e {
                                            thrown.insert(wf_run_id.clone());
                                        }
                                    }
                                    applied.response
                                }
                            };
                            results.push(result);
                        }
                        CommandOutcome { results }
                    }
                };
                out.push(outcome);
            }
            if let Some(l) = last {
                let bytes = serde_json::to_vec(&l).map_err(io_write)?;
                sm.insert(LAST_APPLIED, bytes.as_slice())
                    .map_err(io_write)?;
            }
            last
        };
        // Every apply behind a durable commit waits for it: at 256 W1 clients ~50 ms, W1's p99.
        let started = durable.then(std::time::Instant::now);
        txn.commit().map_err(io_write)?;
        if let Some(started) = started {
            tracing::debug!(
                entries = out.len(),
                ms = started.elapsed().as_millis() as u64,
                "durable apply commit"
            );
        }
        if last_applied.is_some() {
            self.applied.send_replace(last_applied);
        }
        // Committed: the proposers waiting here get their outcomes now (see `answers`).
        for (at, tag) in tagged {
            if let Some(outcome) = out.get_mut(at) {
                if let Some(back) = self
                    .answers
                    .answer(tag, std::mem::take(&mut outcome.results))
                {
                    outcome.results = back;
                }
            }
        }
        if timers_armed {
            self.timers_changed.notify_one();
        }
        if tasks_queued {
            self.tasks_queued.send_modify(|n| *n += 1);
        }
        if !thrown.is_empty() {
            // No receiver (no call held here) is not an error.
            let _ = self.workflow_events.send(Some(Arc::new(thrown)));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotData>, StorageError<NodeId>> {
        Ok(Box::new(match self.side_path("recv") {
            None => SnapshotData::Memory(Cursor::new(Vec::new())),
            Some(p) => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&p)
                    .map_err(io_write)?;
                SnapshotData::file(file, p)
            }
        }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, HalterNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError<NodeId>> {
        let store = self.store.clone();
        let owned_meta = meta.clone();
        blocking(move || {
            // A snapshot handed over in-process (openraft's tests do) may still be unexported.
            let mut snapshot = *snapshot;
            snapshot.materialize().map_err(io_read)?;
            let txn = store.begin_write().map_err(io_write)?;
            let (rows, file) = match snapshot {
                SnapshotData::Memory(c) => (import(&txn, &mut c.get_ref().as_slice())?, None),
                SnapshotData::File { file, path, .. } => {
                    let mut r = std::io::BufReader::with_capacity(1 << 20, &file);
                    r.seek(std::io::SeekFrom::Start(0)).map_err(io_read)?;
                    (import(&txn, &mut r)?, Some(path))
                }
                SnapshotData::Lazy(_) => {
                    return Err(io_read(std::io::Error::other("snapshot not exported")))
                }
            };
            build_missing_indexes(&txn)?;
            {
                let mut sm = txn.open_table(RAFT_SM).map_err(io_write)?;
                let la = serde_json::to_vec(&owned_meta.last_log_id).map_err(io_write)?;
                sm.insert(LAST_APPLIED, la.as_slice()).map_err(io_write)?;
                let m = serde_json::to_vec(&owned_meta.last_membership).map_err(io_write)?;
                sm.insert(MEMBERSHIP, m.as_slice()).map_err(io_write)?;
                if let Some(last) = owned_meta.last_log_id {
                    let id =
                        serde_json::to_vec(&(last, &owned_meta.snapshot_id)).map_err(io_write)?;
                    sm.insert(SNAPSHOT_ID, id.as_slice()).map_err(io_write)?;
                }
            }
            // Durable: the log behind the snapshot may be purged from here on.
            txn.commit().map_err(io_write)?;
            if let Some(path) = file {
                let _ = std::fs::remove_file(path);
            }
            tracing::debug!(rows, "snapshot rows installed");
            Ok(())
        })
        .await?;
        self.applied.send_replace(meta.last_log_id);
        self.timers_changed.notify_one();
        self.tasks_queued.send_modify(|n| *n += 1);
        let _ = self.workflow_events.send(None);
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.current_snapshot()
    }
}

/// Builds the indexes a state from an older build lacks (its data directory, or a snapshot an
/// older node took), inside `txn`. Each is a function of the other tables, so replicas agree.
fn build_missing_indexes(txn: &redb::WriteTransaction) -> Result<(), StorageError<NodeId>> {
    let mut tables = Tables::new(txn);
    if halter_state_machine::indexes::build_if_missing(&mut tables).map_err(io_write)? {
        tracing::info!("built the search indexes from the stored rows");
    }
    Ok(())
}

/// Reads a snapshot stream (header, then rows) into `txn`.
fn import(
    txn: &redb::WriteTransaction,
    input: &mut impl Read,
) -> Result<u64, StorageError<NodeId>> {
    snapshot::read_meta(input).map_err(io_read)?;
    snapshot::read_rows(txn, input).map_err(io_read)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use halter_api::halter::command::Kind;
    use halter_api::littlehorse::PutExternalEventDefRequest;
    use halter_state_machine::Response;
    use openraft::CommittedLeaderId;

    fn def(name: &str) -> Vec<u8> {
        Command {
            format_version: halter_api::LOG_FORMAT_VERSION,
            proposed_at_ms: 1,
            kind: Some(Kind::PutExternalEventDef(PutExternalEventDefRequest {
                name: name.into(),
                ..Default::default()
            })),
        }
        .encode_to_vec()
    }

    fn entry(index: u64, commands: Vec<Vec<u8>>, proposal: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: openraft::LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(if proposal == 0 {
                LogCommand::Batch(commands)
            } else {
                LogCommand::Tagged { commands, proposal }
            }),
        }
    }

    /// A tagged entry's outcomes go to the proposal waiting here, once the apply is committed;
    /// entries nobody here waits for (untagged, or tagged by another process) keep theirs for
    /// openraft's answer.
    #[tokio::test]
    async fn a_waiting_proposal_gets_its_outcomes_from_the_apply() {
        let mut sm = StateMachineStore::new(Arc::new(Store::in_memory().unwrap()), None).unwrap();
        let (tag, mut answer) = sm.answers.register();
        let out = sm
            .apply(vec![
                entry(1, vec![def("a"), def("b")], tag),
                entry(2, vec![def("c")], 0),
                entry(3, vec![def("d")], tag.wrapping_add(7)),
            ])
            .await
            .unwrap();

        let got = answer.try_recv().unwrap();
        assert_eq!(got.len(), 2);
        assert!(
            matches!(&got[1], Ok(Response::ExternalEventDef(d)) if d.id.as_ref().unwrap().name == "b"),
            "{got:?}"
        );
        assert!(out[0].results.is_empty(), "answered once, not twice");
        assert_eq!(out[1].results.len(), 1);
        assert_eq!(out[2].results.len(), 1);
        // The apply is committed by the time it returns: the state a read sees has it.
        assert_eq!(sm.last_applied().unwrap().map(|l| l.index), Some(3));
        assert_eq!(sm.answers.waiting_count(), 0);
    }
}
