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
//! [`SYNC_EVERY_APPLIES`] is durable, so the replay stays short and redb can reuse freed pages
//! (it reuses pages freed by non-durable commits only after a durable one). Reads must then not
//! trust the restored commit index alone: see `NodeCtx`'s read floor.

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
use tokio::sync::{watch, Notify};

use super::snapshot_data::SnapshotData;

use super::{
    io_read, io_write, CommandOutcome, HalterNode, LogCommand, LogId, NodeId, StoredMembership,
    TypeConfig,
};

const RAFT_SM: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_sm");
const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";

/// One apply transaction in this many is fsynced (see the module comment).
pub const SYNC_EVERY_APPLIES: u32 = 64;

/// The snapshot openraft sees as current: its meta, and its bytes when there is no file.
#[derive(Clone)]
struct Current {
    meta: SnapshotMeta<NodeId, HalterNode>,
    /// `None`: the bytes are in the snapshot file.
    memory: Option<Arc<Vec<u8>>>,
}

#[derive(Clone)]
pub struct StateMachineStore {
    pub store: Arc<Store>,
    /// Where the current snapshot is kept (`None`: in memory only). Snapshots being built and
    /// received are written next to it and renamed into place.
    snapshot_path: Option<PathBuf>,
    current: Arc<std::sync::Mutex<Option<Current>>>,
    /// Woken when an applied entry armed a timer, so the leader's timer service re-plans.
    pub timers_changed: Arc<Notify>,
    /// Bumped when an applied entry queued a task attempt (or a snapshot was installed), so
    /// the polls this node holds look for work again.
    pub tasks_queued: Arc<watch::Sender<u64>>,
    /// Apply transactions committed without fsync since the last durable one.
    unsynced_applies: u32,
}

impl StateMachineStore {
    pub fn new(
        store: Arc<Store>,
        snapshot_path: Option<PathBuf>,
    ) -> Result<Self, StorageError<NodeId>> {
        let txn = store.begin_write().map_err(io_write)?;
        txn.open_table(RAFT_SM).map_err(io_write)?;
        txn.commit().map_err(io_write)?;
        let current = match &snapshot_path {
            Some(p) if p.exists() => {
                let mut f = std::io::BufReader::new(std::fs::File::open(p).map_err(io_read)?);
                let meta = snapshot::read_meta(&mut f).map_err(io_read)?;
                Some(Current {
                    meta: serde_json::from_slice(&meta).map_err(io_read)?,
                    memory: None,
                })
            }
            _ => None,
        };
        Ok(Self {
            store,
            snapshot_path,
            current: Arc::new(std::sync::Mutex::new(current)),
            timers_changed: Arc::new(Notify::new()),
            tasks_queued: Arc::new(watch::channel(0).0),
            unsynced_applies: 0,
        })
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

    /// Makes `new` the current snapshot, moving its file (if any) into place, unless the current
    /// one is newer (a snapshot built from an older state can finish after one was installed).
    fn set_current(&self, new: Current, file: Option<PathBuf>) -> Result<(), StorageError<NodeId>> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur
            .as_ref()
            .is_some_and(|c| c.meta.last_log_id > new.meta.last_log_id)
        {
            if let Some(f) = file {
                let _ = std::fs::remove_file(f);
            }
            return Ok(());
        }
        if let (Some(from), Some(to)) = (file, &self.snapshot_path) {
            std::fs::rename(&from, to).map_err(io_write)?;
            sync_dir(to).map_err(io_write)?;
        }
        *cur = Some(new);
        Ok(())
    }

    /// Opens the current snapshot's bytes for reading.
    fn open_current(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        // The file is opened under the lock that `set_current` renames under, so the meta and
        // the bytes returned are always of the same snapshot (a newer file renamed in between
        // would otherwise be sent under the older meta, and applied twice by its receiver).
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let Some(cur) = cur.as_ref() else {
            return Ok(None);
        };
        let data = match (&cur.memory, &self.snapshot_path) {
            (Some(bytes), _) => SnapshotData::Memory(Cursor::new(bytes.as_ref().clone())),
            (None, Some(p)) => {
                SnapshotData::file(std::fs::File::open(p).map_err(io_read)?, p.clone())
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(Snapshot {
            meta: cur.meta.clone(),
            snapshot: Box::new(data),
        }))
    }
}

/// fsyncs the directory holding `file`, so a rename into it survives a power cut.
fn sync_dir(file: &std::path::Path) -> std::io::Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

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
        let store = self.store.clone();
        let tmp = self.side_path("tmp");
        let (meta, memory, rows) = blocking(move || {
            // Data, applied index and membership from one read transaction: one consistent
            // point.
            let txn = store.begin_read().map_err(io_read)?;
            // Applies are mostly unsynced; once this snapshot exists the log behind it may be
            // purged, so the state it was read from must survive a power cut. A durable commit
            // makes every earlier commit durable, including all that `txn` sees.
            store
                .begin_write()
                .and_then(|w| w.commit().map_err(Into::into))
                .map_err(io_write)?;
            let (last_applied, membership) = {
                let t = txn.open_table(RAFT_SM).map_err(io_read)?;
                let la: Option<LogId> = read_json(&t, LAST_APPLIED)?;
                let m: Option<StoredMembership> = read_json(&t, MEMBERSHIP)?;
                (la, m.unwrap_or_default())
            };
            let snapshot_id = match last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
                None => "empty".to_string(),
            };
            let meta = SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id,
            };
            let meta_json = serde_json::to_vec(&meta).map_err(io_write)?;
            match tmp {
                Some(tmp) => {
                    let file = std::fs::File::create(&tmp).map_err(io_write)?;
                    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
                    let rows = snapshot::write(&txn, &meta_json, &mut w).map_err(io_write)?;
                    let file = w.into_inner().map_err(|e| io_write(e.into_error()))?;
                    file.sync_all().map_err(io_write)?;
                    Ok((meta, None, rows))
                }
                None => {
                    let mut bytes = Vec::new();
                    let rows = snapshot::write(&txn, &meta_json, &mut bytes).map_err(io_write)?;
                    Ok((meta, Some(Arc::new(bytes)), rows))
                }
            }
        })
        .await?;
        self.set_current(
            Current {
                meta: meta.clone(),
                memory,
            },
            self.side_path("tmp"),
        )?;
        tracing::info!(snapshot = %meta.snapshot_id, rows, "built snapshot");
        self.open_current()?
            .ok_or_else(|| io_read(std::io::Error::other("snapshot vanished")))
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
        let mut timers_armed = false;
        let mut tasks_queued = false;
        let mut txn = self.store.begin_write().map_err(io_write)?;
        self.unsynced_applies += 1;
        if self.unsynced_applies < SYNC_EVERY_APPLIES {
            txn.set_durability(redb::Durability::None)
                .map_err(io_write)?;
        } else {
            self.unsynced_applies = 0;
        }
        {
            let mut tables = Tables::open(&txn).map_err(io_write)?;
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
                            LogCommand::Batch(cs) => cs,
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
        }
        txn.commit().map_err(io_write)?;
        if timers_armed {
            self.timers_changed.notify_one();
        }
        if tasks_queued {
            self.tasks_queued.send_modify(|n| *n += 1);
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
        let (memory, file) = blocking(move || {
            let (memory, file) = match *snapshot {
                SnapshotData::Memory(c) => (Some(Arc::new(c.into_inner())), None),
                SnapshotData::File { file, path, .. } => {
                    file.sync_all().map_err(io_write)?;
                    (None, Some((file, path)))
                }
            };
            let txn = store.begin_write().map_err(io_write)?;
            let rows = match (&memory, &file) {
                (Some(bytes), _) => import(&txn, &mut bytes.as_slice()),
                (None, Some((f, _))) => {
                    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
                    r.seek(std::io::SeekFrom::Start(0)).map_err(io_read)?;
                    import(&txn, &mut r)
                }
                (None, None) => unreachable!("a snapshot is in memory or in a file"),
            }?;
            {
                let mut sm = txn.open_table(RAFT_SM).map_err(io_write)?;
                let la = serde_json::to_vec(&owned_meta.last_log_id).map_err(io_write)?;
                sm.insert(LAST_APPLIED, la.as_slice()).map_err(io_write)?;
                let m = serde_json::to_vec(&owned_meta.last_membership).map_err(io_write)?;
                sm.insert(MEMBERSHIP, m.as_slice()).map_err(io_write)?;
            }
            txn.commit().map_err(io_write)?;
            tracing::debug!(rows, "snapshot rows installed");
            Ok((memory, file.map(|(_, p)| p)))
        })
        .await?;
        self.set_current(
            Current {
                meta: meta.clone(),
                memory,
            },
            file,
        )?;
        self.timers_changed.notify_one();
        self.tasks_queued.send_modify(|n| *n += 1);
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.open_current()
    }
}

/// Reads a snapshot stream (header, then rows) into `txn`.
fn import(
    txn: &redb::WriteTransaction,
    input: &mut impl Read,
) -> Result<u64, StorageError<NodeId>> {
    snapshot::read_meta(input).map_err(io_read)?;
    snapshot::read_rows(txn, input).map_err(io_read)
}
