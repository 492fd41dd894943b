//! openraft's state machine: applies committed entries through `halter_state_machine::apply`,
//! a whole batch in one redb write transaction, and builds and installs snapshots.
//!
//! The last applied log id and the membership live in the same database as the state tables
//! (table `raft_sm`), so a snapshot's data, applied index and membership are read in one
//! consistent read transaction and installed in one write transaction.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use halter_api::halter::{Command, StateSnapshot};
use halter_state_machine::{apply, Effect};
use halter_storage::{snapshot, Store, Tables};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageError};
use prost::Message;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{
    io_read, io_write, CommandOutcome, HalterNode, LogCommand, LogId, NodeId, StoredMembership,
    TypeConfig,
};

const RAFT_SM: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_sm");
const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";

#[derive(Clone, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, HalterNode>,
    data: Vec<u8>,
}

#[derive(Clone)]
pub struct StateMachineStore {
    pub store: Arc<Store>,
    /// Where the current snapshot is kept (`None`: in memory only).
    snapshot_path: Option<PathBuf>,
    current: Arc<std::sync::Mutex<Option<SnapshotFile>>>,
    /// Woken when an applied entry armed a timer, so the leader's timer service re-plans.
    pub timers_changed: Arc<Notify>,
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
                let bytes = std::fs::read(p).map_err(io_read)?;
                Some(serde_json::from_slice::<SnapshotFile>(&bytes).map_err(io_read)?)
            }
            _ => None,
        };
        Ok(Self {
            store,
            snapshot_path,
            current: Arc::new(std::sync::Mutex::new(current)),
            timers_changed: Arc::new(Notify::new()),
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

    fn persist_snapshot(&self, file: SnapshotFile) -> Result<(), StorageError<NodeId>> {
        if let Some(p) = &self.snapshot_path {
            let tmp = p.with_extension("tmp");
            let bytes = serde_json::to_vec(&file).map_err(io_write)?;
            std::fs::write(&tmp, bytes).map_err(io_write)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_write)?;
            std::fs::rename(&tmp, p).map_err(io_write)?;
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(())
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
        // Data, applied index and membership from one read transaction: one consistent point.
        let txn = self.store.begin_read().map_err(io_read)?;
        let (last_applied, membership) = {
            let t = txn.open_table(RAFT_SM).map_err(io_read)?;
            let la: Option<LogId> = read_json(&t, LAST_APPLIED)?;
            let m: Option<StoredMembership> = read_json(&t, MEMBERSHIP)?;
            (la, m.unwrap_or_default())
        };
        let data = snapshot::export(&txn).map_err(io_read)?.encode_to_vec();
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.persist_snapshot(SnapshotFile {
            meta: meta.clone(),
            data: data.clone(),
        })?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
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
        let txn = self.store.begin_write().map_err(io_write)?;
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
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, HalterNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let snap = StateSnapshot::decode(data.as_slice()).map_err(io_read)?;
        let txn = self.store.begin_write().map_err(io_write)?;
        snapshot::import(&txn, &snap).map_err(io_write)?;
        {
            let mut sm = txn.open_table(RAFT_SM).map_err(io_write)?;
            let la = serde_json::to_vec(&meta.last_log_id).map_err(io_write)?;
            sm.insert(LAST_APPLIED, la.as_slice()).map_err(io_write)?;
            let m = serde_json::to_vec(&meta.last_membership).map_err(io_write)?;
            sm.insert(MEMBERSHIP, m.as_slice()).map_err(io_write)?;
        }
        txn.commit().map_err(io_write)?;
        self.persist_snapshot(SnapshotFile {
            meta: meta.clone(),
            data,
        })?;
        self.timers_changed.notify_one();
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let cur = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(cur.map(|f| Snapshot {
            meta: f.meta,
            snapshot: Box::new(Cursor::new(f.data)),
        }))
    }
}
