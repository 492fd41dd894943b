//! The Raft log on redb, in its own database file so appends and heartbeats never wait behind
//! state-machine transactions or snapshots.
//!
//! Entries are stored as protobuf `halter.RaftEntry` (versioned, readable by newer nodes); the
//! vote, the committed log id and the last purged log id are JSON in a small meta table. Every
//! append commits with redb's default immediate durability (fsync) before openraft is told the
//! entries are flushed.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use halter_api::halter::{raft_entry::Payload, CommandBatch, Empty, RaftEntry};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, EntryPayload, RaftLogReader, StorageError, Vote};
use prost::Message;
use redb::{backends::InMemoryBackend, Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{io_read, io_write, LogCommand, LogId, NodeId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

const LOG_CACHE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// The log is written at its tail and read near it (replication, apply), so a small page
    /// cache serves it; redb's 1 GiB default would only grow the node's memory.
    pub fn open(path: &Path) -> Result<Self, StorageError<NodeId>> {
        Self::init(
            Database::builder()
                .set_cache_size(LOG_CACHE_BYTES)
                .create(path)
                .map_err(io_write)?,
        )
    }

    pub fn in_memory() -> Result<Self, StorageError<NodeId>> {
        Self::with_backend(InMemoryBackend::new())
    }

    /// The log on any redb backend (simulations use a disk that can lose unsynced writes).
    pub fn with_backend(backend: impl redb::StorageBackend) -> Result<Self, StorageError<NodeId>> {
        Self::init(
            Database::builder()
                .create_with_backend(backend)
                .map_err(io_write)?,
        )
    }

    fn init(db: Database) -> Result<Self, StorageError<NodeId>> {
        let txn = db.begin_write().map_err(io_write)?;
        txn.open_table(LOG).map_err(io_write)?;
        txn.open_table(META).map_err(io_write)?;
        txn.commit().map_err(io_write)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(io_read)?;
        let table = txn.open_table(META).map_err(io_read)?;
        match table.get(key).map_err(io_read)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(io_read),
        }
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        durable: bool,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(value).map_err(io_write)?;
        let mut txn = self.db.begin_write().map_err(io_write)?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(io_write)?;
        }
        txn.open_table(META)
            .map_err(io_write)?
            .insert(key, bytes.as_slice())
            .map_err(io_write)?;
        txn.commit().map_err(io_write)
    }
}

pub fn encode_entry(e: &Entry<TypeConfig>) -> Result<Vec<u8>, serde_json::Error> {
    let payload = match &e.payload {
        EntryPayload::Blank => Payload::Blank(Empty {}),
        EntryPayload::Normal(LogCommand::One(cmd)) => Payload::Command(cmd.clone()),
        EntryPayload::Normal(LogCommand::Batch(cmds)) => Payload::Commands(CommandBatch {
            commands: cmds.clone(),
        }),
        EntryPayload::Membership(m) => Payload::MembershipJson(serde_json::to_string(m)?),
    };
    Ok(RaftEntry {
        term: e.log_id.leader_id.term,
        leader_node_id: e.log_id.leader_id.node_id,
        index: e.log_id.index,
        payload: Some(payload),
    }
    .encode_to_vec())
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeEntryError {
    #[error("log entry: {0}")]
    Proto(#[from] prost::DecodeError),
    #[error("log entry membership: {0}")]
    Json(#[from] serde_json::Error),
}

pub fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, DecodeEntryError> {
    let e = RaftEntry::decode(bytes)?;
    let payload = match e.payload {
        None | Some(Payload::Blank(_)) => EntryPayload::Blank,
        Some(Payload::Command(c)) => EntryPayload::Normal(LogCommand::One(c)),
        Some(Payload::Commands(b)) => EntryPayload::Normal(LogCommand::Batch(b.commands)),
        Some(Payload::MembershipJson(m)) => EntryPayload::Membership(serde_json::from_str(&m)?),
    };
    Ok(Entry {
        log_id: openraft::LogId::new(
            openraft::CommittedLeaderId::new(e.term, e.leader_node_id),
            e.index,
        ),
        payload,
    })
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let lo = match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_sub(1),
        Bound::Unbounded => u64::MAX,
    };
    (lo, hi)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let (lo, hi) = bounds(&range);
        if lo > hi {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(io_read)?;
        let table = txn.open_table(LOG).map_err(io_read)?;
        let mut out = Vec::new();
        for row in table.range(lo..=hi).map_err(io_read)? {
            let (_, v) = row.map_err(io_read)?;
            out.push(decode_entry(v.value()).map_err(io_read)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId> = self.read_meta(PURGED)?;
        let txn = self.db.begin_read().map_err(io_read)?;
        let table = txn.open_table(LOG).map_err(io_read)?;
        let last = match table.last().map_err(io_read)? {
            Some((_, v)) => Some(decode_entry(v.value()).map_err(io_read)?.log_id),
            // An empty log falls back to what was purged.
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        // The committed id only saves re-learning it from a quorum after a restart, so it is
        // written without an fsync of its own (the next durable commit persists it too).
        self.write_meta(COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let txn = self.db.begin_write().map_err(io_write)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_write)?;
            for e in entries {
                let bytes = encode_entry(&e).map_err(io_write)?;
                table
                    .insert(e.log_id.index, bytes.as_slice())
                    .map_err(io_write)?;
            }
        }
        // Durable (fsynced) before openraft may count these entries toward a quorum.
        txn.commit().map_err(io_write)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let txn = self.db.begin_write().map_err(io_write)?;
        txn.open_table(LOG)
            .map_err(io_write)?
            .retain_in(log_id.index.., |_, _| false)
            .map_err(io_write)?;
        txn.commit().map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: if we crash between the two, the log state is still right.
        self.write_meta(PURGED, &log_id, true)?;
        let txn = self.db.begin_write().map_err(io_write)?;
        txn.open_table(LOG)
            .map_err(io_write)?
            .retain_in(..=log_id.index, |_, _| false)
            .map_err(io_write)?;
        txn.commit().map_err(io_write)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
            payload,
        }
    }

    /// A batch entry survives the log's encoding with its commands in order, and a single
    /// command keeps the pre-batching encoding (`RaftEntry.command`), so older logs still read.
    #[test]
    fn batch_and_single_entries_round_trip() {
        let batch = entry(
            7,
            EntryPayload::Normal(LogCommand::Batch(vec![
                b"a".to_vec(),
                vec![],
                b"c".to_vec(),
            ])),
        );
        let back = decode_entry(&encode_entry(&batch).unwrap()).unwrap();
        assert_eq!(back.log_id, batch.log_id);
        assert_eq!(back.payload, batch.payload);

        let one = entry(8, EntryPayload::Normal(LogCommand::One(b"x".to_vec())));
        let bytes = encode_entry(&one).unwrap();
        let raw = RaftEntry::decode(bytes.as_slice()).unwrap();
        assert_eq!(raw.payload, Some(Payload::Command(b"x".to_vec())));
        assert_eq!(decode_entry(&bytes).unwrap().payload, one.payload);
    }
}
