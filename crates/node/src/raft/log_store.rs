//! The Raft log: a write-ahead file for the newest entries, redb for the rest.
//!
//! Entries are stored as protobuf `halter.RaftEntry` (versioned, readable by newer nodes); the
//! vote, the committed log id and the last purged log id are JSON in a small meta table, all in
//! their own database file so appends and heartbeats never wait behind state-machine
//! transactions or snapshots.
//!
//! An append is durable (fsynced) before openraft is told the entries are flushed, as Raft
//! requires; but not through a durable redb commit, which cost about 2 ms per entry on the
//! leader's single Raft task (it rewrites B-tree pages and the header of a growing file). An
//! append writes the entries to the [`Wal`] (one `fdatasync` on blocks allocated once) and keeps
//! them in memory (the *tail*), where replication and apply read them without a redb lookup or
//! a decode; redb is not touched. When the WAL is full, the append commits the tail and its own
//! entries to redb durably instead, and the WAL starts a new generation. So redb holds a prefix
//! of the log, changed only by durable commits, and the tail the rest.
//!
//! Recovery: redb holds every entry up to its last durable commit; the WAL's records are the
//! tail, read back in order. A durable commit that *absorbs* the WAL (full WAL, truncation,
//! purge) writes the tail to redb and records the WAL's generation in `wal_absorbed` in the same
//! transaction, then resets the WAL to a newer generation; records of an absorbed generation
//! are never replayed, so a crash between the commit and the reset cannot bring back entries a
//! truncation removed (which could leave a gap). Design note: `docs/ARCHITECTURE.md` (The
//! cluster); tests below.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use halter_api::halter::{raft_entry::Payload, CommandBatch, Empty, RaftEntry};
use halter_storage::wal::{Wal, WalDisk};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, EntryPayload, RaftLogReader, StorageError, Vote};
use prost::Message;
use redb::{
    backends::InMemoryBackend, Database, Durability, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};

use super::answers::Answers;
use super::read_fence::ReadFence;
use super::speculate::Speculator;
use super::{io_read, io_write, LogCommand, LogId, NodeId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
/// The last WAL generation whose records are all in redb durably.
const WAL_ABSORBED: &str = "wal_absorbed";

const LOG_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The WAL file's size: allocated once, then overwritten; a full WAL costs one durable redb
/// commit (about every 4 MiB of entries), which holds openraft's core task while it lasts. At
/// 256 W1 clients that was 170-270 ms with 16 MiB and is 25-56 ms with 4 MiB, about as long as
/// a durable apply commit, for no loss of throughput (`docs/bench/analysis.md`).
pub const WAL_CAPACITY: u64 = 4 << 20;
/// Small in simulations, so that the absorb-and-reset path runs often there.
pub const SIM_WAL_CAPACITY: u64 = 64 << 10;

/// `save_committed` writes one call in this many (see there).
const SAVE_COMMITTED_EVERY: u32 = 64;

/// Every entry appended since the WAL was last absorbed, by index: a contiguous run above
/// everything in redb. Decoded for readers, encoded for the next absorb; the WAL's capacity
/// bounds its size.
type TailEntries = BTreeMap<u64, (Entry<TypeConfig>, Vec<u8>)>;

/// The WAL and the entries in it that redb does not have yet, under two locks: an append holds
/// the WAL's through its `fdatasync` and takes the entries' only to add to them, so readers
/// (replication, apply) never wait for a disk. Whoever needs both takes the WAL's first.
struct Tail {
    wal: Mutex<Wal>,
    entries: Mutex<TailEntries>,
}

impl Tail {
    fn wal(&self) -> MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn entries(&self) -> MutexGuard<'_, TailEntries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// `None` for an in-memory log (tests), whose appends commit to redb directly.
    tail: Option<Arc<Tail>>,
    /// `save_committed` calls since the committed id was last written.
    committed_unsaved: u32,
    /// Where the leader's batches go before their fsync (`speculate.rs`); `None`: nowhere.
    speculator: Option<Speculator>,
    /// The last vote saved: whether this node leads, for the speculator.
    vote: Option<Vote<NodeId>>,
    /// Where votes and commit indexes are recorded before they are saved, for reads.
    fence: Option<Arc<ReadFence>>,
    /// The proposer's pipeline slots, freed as the commit index passes their entries
    /// (`answers.rs`).
    slots: Option<Answers>,
}

impl LogStore {
    /// The log in `path` (redb) and `path` with extension `wal`. The log is written at its
    /// tail and read near it (replication, apply), so a small page cache serves it; redb's
    /// 1 GiB default would only grow the node's memory.
    pub fn open(path: &Path) -> Result<Self, StorageError<NodeId>> {
        let wal_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.with_extension("wal"))
            .map_err(io_write)?;
        let wal = Wal::open(Box::new(wal_file), WAL_CAPACITY, true).map_err(io_write)?;
        Self::init(
            Database::builder()
                .set_cache_size(LOG_CACHE_BYTES)
                .create(path)
                .map_err(io_write)?,
            Some(wal),
        )
    }

    pub fn in_memory() -> Result<Self, StorageError<NodeId>> {
        Self::init(
            Database::builder()
                .create_with_backend(InMemoryBackend::new())
                .map_err(io_write)?,
            None,
        )
    }

    /// The log on any redb backend and WAL disk (simulations use disks that can lose unsynced
    /// writes).
    pub fn with_backends(
        backend: impl redb::StorageBackend,
        wal: impl WalDisk,
        wal_capacity: u64,
    ) -> Result<Self, StorageError<NodeId>> {
        let wal = Wal::open(Box::new(wal), wal_capacity, false).map_err(io_write)?;
        Self::init(
            Database::builder()
                .create_with_backend(backend)
                .map_err(io_write)?,
            Some(wal),
        )
    }

    fn init(db: Database, wal: Option<Wal>) -> Result<Self, StorageError<NodeId>> {
        // Created once: a durable commit on every start would be an fsync for nothing.
        let exists = {
            let r = db.begin_read().map_err(io_read)?;
            r.open_table(LOG).is_ok() && r.open_table(META).is_ok()
        };
        if !exists {
            let txn = db.begin_write().map_err(io_write)?;
            txn.open_table(LOG).map_err(io_write)?;
            txn.open_table(META).map_err(io_write)?;
            txn.commit().map_err(io_write)?;
        }
        let store = Self {
            db: Arc::new(db),
            tail: wal.map(|wal| {
                Arc::new(Tail {
                    wal: Mutex::new(wal),
                    entries: Mutex::new(BTreeMap::new()),
                })
            }),
            committed_unsaved: 0,
            speculator: None,
            vote: None,
            fence: None,
            slots: None,
        };
        store.replay_wal()?;
        Ok(store)
    }

    /// From now on, records every vote and commit index in `fence` before saving it, starting
    /// with the vote saved before this start (see `read_fence`).
    pub fn fence_reads(&mut self, fence: Arc<ReadFence>) -> Result<(), StorageError<NodeId>> {
        if let Some(v) = self.saved_vote()? {
            fence.saving_vote(v);
        }
        if let Some(c) = self.saved_committed()? {
            fence.commit_seen(c.index);
        }
        self.fence = Some(fence);
        Ok(())
    }

    /// From now on, tells `answers` at which index each of its proposals is appended and when
    /// the commit index passes it, which frees the proposal's pipeline slot.
    pub fn free_slots_at_commit(&mut self, answers: Answers) {
        self.slots = Some(answers);
    }

    /// From now on, hands the batches this node appends as leader to `speculator` before
    /// making them durable (see `speculate.rs`).
    pub fn speculate_to(&mut self, speculator: Speculator) -> Result<(), StorageError<NodeId>> {
        self.vote = self.saved_vote()?;
        self.speculator = Some(speculator);
        Ok(())
    }

    /// Offers `entries` to the speculator if they are this node's own as leader. Needs the log
    /// id before them: from the tail (where it is, except just after an absorb), else redb.
    fn speculate(&self, entries: &[Entry<TypeConfig>]) {
        let (Some(spec), Some(vote), Some(first)) = (&self.speculator, &self.vote, entries.first())
        else {
            return;
        };
        if !spec.has_room() {
            return;
        }
        let prev = match first.log_id.index.checked_sub(1) {
            None => None,
            Some(index) => match self.log_id_at(index) {
                Some(id) => Some(id),
                None => return,
            },
        };
        if let Some(req) = spec.request(vote, prev, entries) {
            spec.offer(req);
        }
    }

    /// The id of the entry at `index`, if the log has it.
    fn log_id_at(&self, index: u64) -> Option<LogId> {
        if let Some(tail) = &self.tail {
            if let Some((e, _)) = tail.entries().get(&index) {
                return Some(e.log_id);
            }
        }
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(LOG).ok()?;
        let row = table.get(index).ok()??;
        decode_entry(row.value()).ok().map(|e| e.log_id)
    }

    /// Start-up: the WAL's records of a generation not yet absorbed become the tail again.
    /// An absorbed generation's records are already in redb (or were truncated away).
    fn replay_wal(&self) -> Result<(), StorageError<NodeId>> {
        let Some(tail) = &self.tail else {
            return Ok(());
        };
        let mut wal = tail.wal();
        let absorbed: Option<u64> = self.read_meta(WAL_ABSORBED)?;
        if let Some(a) = absorbed {
            if wal.generation() <= a {
                // Crashed between an absorb's commit and the WAL's reset: finish the reset, or
                // new appends would carry a generation that is never replayed.
                return wal.reset_after(a).map_err(io_write);
            }
        }
        let records = wal.records().map_err(io_read)?;
        if !records.is_empty() {
            tracing::info!(entries = records.len(), "replayed the Raft log's WAL");
        }
        let mut entries = tail.entries();
        for bytes in records {
            let entry = decode_entry(&bytes).map_err(io_read)?;
            entries.insert(entry.log_id.index, (entry, bytes));
        }
        Ok(())
    }

    /// Commits `txn` durably with the tail written into it, recording the WAL's current
    /// generation as absorbed, then empties the tail and starts the WAL's next generation (see
    /// the module comment).
    fn absorb(
        &self,
        txn: WriteTransaction,
        wal: &mut Wal,
        entries: &mut TailEntries,
    ) -> Result<(), StorageError<NodeId>> {
        let started = std::time::Instant::now();
        let count = entries.len();
        let generation = wal.generation();
        let bytes = serde_json::to_vec(&generation).map_err(io_write)?;
        {
            let mut log = txn.open_table(LOG).map_err(io_write)?;
            for (index, (_, encoded)) in entries.iter() {
                log.insert(*index, encoded.as_slice()).map_err(io_write)?;
            }
        }
        txn.open_table(META)
            .map_err(io_write)?
            .insert(WAL_ABSORBED, bytes.as_slice())
            .map_err(io_write)?;
        txn.commit().map_err(io_write)?;
        entries.clear();
        wal.reset_after(generation).map_err(io_write)?;
        // Under load this runs every second or two and holds openraft's core task for its whole
        // duration (25-56 ms at 256 W1 clients with a 4 MiB WAL).
        tracing::debug!(
            entries = count,
            generation,
            ms = started.elapsed().as_millis() as u64,
            "absorbed the WAL into log.redb"
        );
        Ok(())
    }

    /// Removes the entries in `range`, from redb and the tail, and makes that durable at once
    /// (truncate, purge): absorbing the WAL when there is one.
    fn remove_durably(
        &self,
        range: impl RangeBounds<u64> + Clone,
    ) -> Result<(), StorageError<NodeId>> {
        // The WAL's lock before redb's write transaction, as in `append_durably`.
        let mut locked = self.tail.as_ref().map(|t| (t.wal(), t.entries()));
        let txn = self.db.begin_write().map_err(io_write)?;
        txn.open_table(LOG)
            .map_err(io_write)?
            .retain_in(range.clone(), |_, _| false)
            .map_err(io_write)?;
        match locked.as_mut() {
            None => txn.commit().map_err(io_write),
            Some((wal, entries)) => {
                entries.retain(|i, _| !range.contains(i));
                self.absorb(txn, wal, entries)
            }
        }
    }

    /// Stores `entries` and returns once they survive a power cut (see the module comment).
    pub fn append_durably(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), StorageError<NodeId>> {
        let encoded = entries
            .into_iter()
            .map(|e| {
                let bytes = encode_entry(&e).map_err(io_write)?;
                Ok((e, bytes))
            })
            .collect::<Result<Vec<_>, StorageError<NodeId>>>()?;
        let Some(tail) = &self.tail else {
            // In-memory log: nothing to make durable.
            let txn = self.db.begin_write().map_err(io_write)?;
            {
                let mut table = txn.open_table(LOG).map_err(io_write)?;
                for (e, bytes) in &encoded {
                    table
                        .insert(e.log_id.index, bytes.as_slice())
                        .map_err(io_write)?;
                }
            }
            return txn.commit().map_err(io_write);
        };
        let payloads: Vec<&[u8]> = encoded.iter().map(|(_, b)| b.as_slice()).collect();
        let mut wal = tail.wal();
        let absorb = if wal.is_full_for(&payloads) {
            // Durable through redb instead, with everything the WAL held.
            Some(self.db.begin_write().map_err(io_write)?)
        } else {
            // Durable in the WAL before openraft hears of it.
            wal.append(&payloads).map_err(io_write)?;
            None
        };
        let mut entries = tail.entries();
        entries.extend(encoded.into_iter().map(|(e, b)| (e.log_id.index, (e, b))));
        match absorb {
            Some(txn) => self.absorb(txn, &mut wal, &mut entries),
            None => Ok(()),
        }
    }

    /// The vote as saved, but never committed (see `read_vote`): what openraft starts from,
    /// and what the speculator checks until openraft saves a vote again.
    fn saved_vote(&self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.read_meta::<Vote<NodeId>>(VOTE)?.map(|mut v| {
            v.committed = false;
            v
        }))
    }

    /// The committed log id last written (see `save_committed`: possibly an older one).
    fn saved_committed(&self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
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
            txn.set_durability(Durability::None).map_err(io_write)?;
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
        EntryPayload::Normal(LogCommand::Batch(commands)) => Payload::Commands(CommandBatch {
            commands: commands.clone(),
            proposal: 0,
        }),
        EntryPayload::Normal(LogCommand::Tagged { commands, proposal }) => {
            Payload::Commands(CommandBatch {
                commands: commands.clone(),
                proposal: *proposal,
            })
        }
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
        Some(Payload::Commands(CommandBatch {
            commands,
            proposal: 0,
        })) => EntryPayload::Normal(LogCommand::Batch(commands)),
        Some(Payload::Commands(CommandBatch { commands, proposal })) => {
            EntryPayload::Normal(LogCommand::Tagged { commands, proposal })
        }
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
        // The tail's entries and a read transaction taken under one lock: an absorb moves
        // entries from the tail to redb under that lock, so together they miss none. redb is
        // read only below the tail's first entry.
        let (from_tail, below_tail) = {
            let entries = self.tail.as_ref().map(|t| t.entries());
            let tail = entries.as_deref();
            let from_tail: Vec<_> = tail
                .map(|t| t.range(lo..=hi).map(|(_, (e, _))| e.clone()).collect())
                .unwrap_or_default();
            let redb_hi = match tail.and_then(|t| t.keys().next()) {
                Some(&start) => start.checked_sub(1).map(|below| below.min(hi)),
                None => Some(hi),
            };
            let below_tail = match redb_hi {
                Some(redb_hi) if lo <= redb_hi => {
                    Some((self.db.begin_read().map_err(io_read)?, redb_hi))
                }
                _ => None,
            };
            (from_tail, below_tail)
        };
        let mut out = Vec::new();
        if let Some((txn, redb_hi)) = below_tail {
            let table = txn.open_table(LOG).map_err(io_read)?;
            for row in table.range(lo..=redb_hi).map_err(io_read)? {
                let (_, v) = row.map_err(io_read)?;
                out.push(decode_entry(v.value()).map_err(io_read)?);
            }
        }
        out.extend(from_tail);
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId> = self.read_meta(PURGED)?;
        if let Some(last) = self
            .tail
            .as_ref()
            .and_then(|t| t.entries().values().next_back().map(|(e, _)| e.log_id))
        {
            return Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: Some(last),
            });
        }
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
        // Recorded before it is written: see `read_fence`.
        if let Some(f) = &self.fence {
            f.saving_vote(*vote);
        }
        self.write_meta(VOTE, vote, true)?;
        self.vote = Some(*vote);
        Ok(())
    }

    /// The saved vote, always as not yet committed, so that a node that led before it stopped
    /// restarts as a follower and the cluster elects a leader in a new term.
    ///
    /// openraft 0.9 restarts a node whose saved vote is its own committed one as leader of that
    /// same term at once. Here that is unsafe: the leader hands its entries to followers before
    /// its own log has them durably (`speculate.rs`), so it can stop (a crash, a power cut) after
    /// a follower stored entry `(term, leader, i)` and before it wrote that entry itself. Leading
    /// the same term again, it would give the next command the same log id `(term, leader, i)`,
    /// and a follower skips an entry whose log id it already has: the two logs would then
    /// commit different commands under one id. In a new term every new entry has a new id, and
    /// the follower's stray entry loses to the new leader's log as Raft requires. The cost is
    /// one election after a restart of the leader.
    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.saved_vote()
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        // The committed id only saves re-learning it from a quorum after a restart, so it is
        // written without an fsync of its own (the next durable commit persists it too), and
        // only one call in `SAVE_COMMITTED_EVERY`: openraft calls this for every advance of the
        // commit index, and a redb commit per entry cost as much as the append itself. After a
        // restart the restored id is then an older one, which is already allowed for (an
        // unsynced write may be lost; see `NodeCtx`'s read floor).
        if let (Some(f), Some(c)) = (&self.fence, &committed) {
            f.commit_seen(c.index);
        }
        if let (Some(slots), Some(c)) = (&self.slots, &committed) {
            slots.committed(c.index);
        }
        self.committed_unsaved += 1;
        if self.committed_unsaved < SAVE_COMMITTED_EVERY {
            return Ok(());
        }
        self.committed_unsaved = 0;
        self.write_meta(COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        self.saved_committed()
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
        let entries: Vec<_> = entries.into_iter().collect();
        if let Some(slots) = &self.slots {
            for e in &entries {
                if let EntryPayload::Normal(LogCommand::Tagged { proposal, .. }) = &e.payload {
                    slots.appended(e.log_id.index, *proposal);
                }
            }
        }
        self.speculate(&entries);
        self.append_durably(entries)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.remove_durably(log_id.index..)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: if we crash between the two, the log state is still right.
        self.write_meta(PURGED, &log_id, true)?;
        self.remove_durably(..=log_id.index)
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

    /// Invariant: a node never restarts as leader of the term it led (see `read_vote`): the vote
    /// it saved as committed reads back with the same leader id, not committed.
    #[tokio::test]
    async fn a_committed_vote_reads_back_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let vote = Vote::new_committed(7, 2);
        LogStore::open(&path)
            .unwrap()
            .save_vote(&vote)
            .await
            .unwrap();
        // As after a restart: a fresh store on the same files.
        let mut store = LogStore::open(&path).unwrap();
        let read = store.read_vote().await.unwrap().unwrap();
        assert_eq!(read.leader_id, vote.leader_id);
        assert!(!read.committed);
        // An uncommitted vote (a candidate's) reads back as it was.
        store.save_vote(&Vote::new(8, 3)).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(8, 3)));
    }

    /// A batch entry survives the log's encoding with its commands in order, and a single
    /// command keeps the pre-batching encoding (`RaftEntry.command`), so older logs still read.
    #[test]
    fn batch_and_single_entries_round_trip() {
        let batch = entry(
            7,
            EntryPayload::Normal(LogCommand::Tagged {
                commands: vec![b"a".to_vec(), vec![], b"c".to_vec()],
                proposal: 0x8000_0000_0000_0001,
            }),
        );
        let back = decode_entry(&encode_entry(&batch).unwrap()).unwrap();
        assert_eq!(back.log_id, batch.log_id);
        assert_eq!(back.payload, batch.payload);

        // A batch written before entries carried a proposal tag reads as untagged: term 1,
        // leader 1, index 2, `commands` (field 7) holding one command "a".
        let older = [0x08, 1, 0x10, 1, 0x18, 2, 0x3a, 3, 0x0a, 1, b'a'];
        assert_eq!(
            decode_entry(&older).unwrap().payload,
            EntryPayload::Normal(LogCommand::Batch(vec![b"a".to_vec()]))
        );
        let untagged = entry(
            9,
            EntryPayload::Normal(LogCommand::Batch(vec![b"b".to_vec()])),
        );
        assert_eq!(
            decode_entry(&encode_entry(&untagged).unwrap())
                .unwrap()
                .payload,
            untagged.payload
        );

        let one = entry(8, EntryPayload::Normal(LogCommand::One(b"x".to_vec())));
        let bytes = encode_entry(&one).unwrap();
        let raw = RaftEntry::decode(bytes.as_slice()).unwrap();
        assert_eq!(raw.payload, Some(Payload::Command(b"x".to_vec())));
        assert_eq!(decode_entry(&bytes).unwrap().payload, one.payload);
    }

    /// The leader offers each batch with the log id before it, read from the log (a follower's
    /// appends and a vote that is not this leader's offer nothing).
    #[tokio::test]
    async fn a_leader_offers_its_batches_with_the_log_id_before_them() {
        let mut store = LogStore::in_memory().unwrap();
        let (spec, mut rx) = crate::raft::speculate::channel(1);
        store.speculate_to(spec).unwrap();
        let cmd = |i: u64| entry(i, EntryPayload::Normal(LogCommand::One(vec![i as u8])));
        let blank = |term: u64, leader: NodeId, index: u64| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
            payload: EntryPayload::Blank,
        };

        // No vote saved yet: nothing.
        store.speculate(&[cmd(0)]);
        assert!(rx.try_recv().is_err());

        store.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        store.speculate(&[cmd(0)]);
        let first = rx.try_recv().unwrap();
        assert_eq!(first.prev_log_id, None, "index 0 follows nothing");
        store.append_durably([cmd(0)]).unwrap();

        let batch = [cmd(1), cmd(2)];
        store.speculate(&batch);
        let req = rx.try_recv().unwrap();
        assert_eq!(req.prev_log_id, Some(cmd(0).log_id));
        assert_eq!(req.vote, Vote::new_committed(3, 1));
        assert_eq!(req.entries, batch.to_vec());
        store.append_durably(batch).unwrap();

        // Node 2 leads now: entries node 1 appends are node 2's, as a follower.
        store.save_vote(&Vote::new_committed(4, 2)).await.unwrap();
        store.speculate(&[blank(4, 2, 3)]);
        assert!(rx.try_recv().is_err());

        // A gap (the log has no entry 9): nothing, rather than a wrong prev_log_id.
        store.save_vote(&Vote::new_committed(5, 1)).await.unwrap();
        store.speculate(&[blank(5, 1, 10)]);
        assert!(rx.try_recv().is_err());
    }

    mod wal {
        use super::*;
        use halter_storage::sim_disk::SimDisk;

        struct Disks {
            log: SimDisk,
            wal: SimDisk,
        }

        impl Disks {
            fn new() -> Self {
                Self {
                    log: SimDisk::new(),
                    wal: SimDisk::new(),
                }
            }
            fn open(&self, capacity: u64) -> LogStore {
                LogStore::with_backends(self.log.clone(), self.wal.clone(), capacity).unwrap()
            }
            /// A power cut: both disks lose what was not synced.
            fn crash(&self, store: LogStore) {
                self.log.crash();
                self.wal.crash();
                drop(store);
                self.log.power_on();
                self.wal.power_on();
            }
        }

        fn cmd(i: u64) -> Entry<TypeConfig> {
            entry(i, EntryPayload::Normal(LogCommand::One(vec![i as u8; 40])))
        }

        async fn indexes(store: &mut LogStore) -> Vec<u64> {
            store
                .try_get_log_entries(0..)
                .await
                .unwrap()
                .iter()
                .map(|e| e.log_id.index)
                .collect()
        }

        /// Every acknowledged append survives a power cut, whether it went to the WAL (redb
        /// unsynced) or filled the WAL and was committed to redb durably; the payloads too.
        #[tokio::test]
        async fn acknowledged_appends_survive_a_crash() {
            for capacity in [1 << 20, 300] {
                let disks = Disks::new();
                let store = disks.open(capacity);
                for i in 1..=30 {
                    store.append_durably([cmd(i)]).unwrap();
                }
                store.append_durably((31..=40).map(cmd)).unwrap();
                disks.crash(store);
                let mut store = disks.open(capacity);
                assert_eq!(indexes(&mut store).await, (1..=40).collect::<Vec<_>>());
                let e = store.try_get_log_entries(17..18).await.unwrap();
                assert_eq!(e[0].payload, cmd(17).payload, "capacity {capacity}");
                let state = store.get_log_state().await.unwrap();
                assert_eq!(state.last_log_id.map(|l| l.index), Some(40));
            }
        }

        /// A truncation is durable when it returns: the entries it removed stay removed after
        /// a crash, the ones before it stay, and later appends at the same indexes win.
        #[tokio::test]
        async fn truncation_survives_a_crash_without_gaps() {
            let disks = Disks::new();
            let mut store = disks.open(1 << 20);
            store.append_durably((1..=10).map(cmd)).unwrap();
            store
                .truncate(LogId::new(CommittedLeaderId::new(3, 1), 6))
                .await
                .unwrap();
            let newer = Entry {
                log_id: LogId::new(CommittedLeaderId::new(4, 2), 6),
                payload: EntryPayload::Blank,
            };
            store.append_durably([newer.clone()]).unwrap();
            disks.crash(store);
            let mut store = disks.open(1 << 20);
            assert_eq!(indexes(&mut store).await, (1..=6).collect::<Vec<_>>());
            let six = store.try_get_log_entries(6..7).await.unwrap();
            assert_eq!(six[0].log_id, newer.log_id);
        }

        /// Records of a WAL generation recorded as absorbed are never replayed: this is what
        /// keeps a crash between a truncation's commit and the WAL's reset from bringing back
        /// the removed entries (and leaving a gap below the ones the WAL held).
        #[tokio::test]
        async fn an_absorbed_generation_is_not_replayed() {
            let disks = Disks::new();
            let store = disks.open(1 << 20);
            store.append_durably((1..=5).map(cmd)).unwrap();
            let generation = store.tail.as_ref().unwrap().wal().generation();
            // What a truncation at 3 commits (the tail's entries below 3 written to redb, the
            // generation recorded), with no WAL reset after it (the crash).
            let txn = store.db.begin_write().unwrap();
            {
                let mut log = txn.open_table(LOG).unwrap();
                for i in 1..=2 {
                    log.insert(i, encode_entry(&cmd(i)).unwrap().as_slice())
                        .unwrap();
                }
            }
            txn.open_table(META)
                .unwrap()
                .insert(
                    WAL_ABSORBED,
                    serde_json::to_vec(&generation).unwrap().as_slice(),
                )
                .unwrap();
            txn.commit().unwrap();
            disks.crash(store);
            let mut store = disks.open(1 << 20);
            assert_eq!(indexes(&mut store).await, vec![1, 2]);
            // And the WAL moved past the absorbed generation: new appends are replayed.
            assert!(store.tail.as_ref().unwrap().wal().generation() > generation);
            store.append_durably([cmd(3)]).unwrap();
            disks.crash(store);
            let mut store = disks.open(1 << 20);
            assert_eq!(indexes(&mut store).await, vec![1, 2, 3]);
        }

        /// Start-up absorbs nothing: the WAL's records become the tail again, in the same
        /// generation, and appends made after the restart continue it and survive a crash too.
        #[tokio::test]
        async fn a_restart_replays_the_wal_without_absorbing_it() {
            let disks = Disks::new();
            let store = disks.open(1 << 20);
            store.append_durably((1..=5).map(cmd)).unwrap();
            let generation = store.tail.as_ref().unwrap().wal().generation();
            disks.crash(store);
            let mut store = disks.open(1 << 20);
            assert_eq!(store.tail.as_ref().unwrap().wal().generation(), generation);
            assert_eq!(indexes(&mut store).await, (1..=5).collect::<Vec<_>>());
            store.append_durably([cmd(6)]).unwrap();
            disks.crash(store);
            let mut store = disks.open(1 << 20);
            assert_eq!(indexes(&mut store).await, (1..=6).collect::<Vec<_>>());
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id.map(|l| l.index), Some(6));
        }

        /// Reads that span redb and the tail see each entry once, in order: after a purge and
        /// a truncation (both absorb the tail into redb) and with newer appends in the tail.
        #[tokio::test]
        async fn reads_span_redb_and_the_tail() {
            let disks = Disks::new();
            let mut store = disks.open(1 << 20);
            store.append_durably((1..=8).map(cmd)).unwrap();
            store
                .purge(LogId::new(CommittedLeaderId::new(3, 1), 2))
                .await
                .unwrap();
            assert!(store.tail.as_ref().unwrap().entries().is_empty());
            store.append_durably((9..=12).map(cmd)).unwrap();
            assert_eq!(indexes(&mut store).await, (3..=12).collect::<Vec<_>>());
            let some = store.try_get_log_entries(7..=10).await.unwrap();
            let got: Vec<u64> = some.iter().map(|e| e.log_id.index).collect();
            assert_eq!(got, vec![7, 8, 9, 10]);
            assert_eq!(some[2].payload, cmd(9).payload);
            store
                .truncate(LogId::new(CommittedLeaderId::new(3, 1), 11))
                .await
                .unwrap();
            assert_eq!(indexes(&mut store).await, (3..=10).collect::<Vec<_>>());
            disks.crash(store);
            let mut store = disks.open(1 << 20);
            assert_eq!(indexes(&mut store).await, (3..=10).collect::<Vec<_>>());
        }
    }
}
