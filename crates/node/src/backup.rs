//! Online backups, and restoring one into a new data directory.
//!
//! A backup is the state exported in the snapshot format (`halter_storage::snapshot`) from one
//! read transaction on any node, after a read barrier: every write acknowledged before the
//! call is in it, and the node keeps applying while the rows stream out. Nothing else is needed
//! to restore: the Raft log behind the state is not part of it, as in any snapshot.
//!
//! A restore makes a new one-voter cluster (see `restore_backup`), whatever the membership the
//! backup was taken in; more nodes join it the usual way (`halterctl cluster add`). That is
//! what makes restoring into other ids or addresses possible: Raft cannot change the voters of
//! a cluster whose quorum is gone, but a new cluster has no old voters to wait for.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use halter_api::halter::BackupChunk;
use halter_storage::{snapshot, Store};
use openraft::storage::RaftLogStorage;
use openraft::Vote;
use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proposer::NodeCtx;
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::restore_backup;
use crate::raft::{HalterNode, LogId, NodeId};

/// Bytes per streamed chunk: well under gRPC's default 4 MiB message limit.
const CHUNK: usize = 256 * 1024;

/// Buffers what the exporter writes and hands it on in chunks of about [`CHUNK`] bytes; the
/// first chunk carries where the state was taken.
struct Chunks<F: FnMut(BackupChunk) -> io::Result<()>> {
    buf: Vec<u8>,
    at: Option<LogId>,
    send: F,
}

impl<F: FnMut(BackupChunk) -> io::Result<()>> Chunks<F> {
    fn emit(&mut self) -> io::Result<()> {
        let at = self.at.take();
        (self.send)(BackupChunk {
            data: std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)),
            applied_index: at.map_or(0, |l| l.index),
            applied_term: at.map_or(0, |l| l.leader_id.term),
        })
    }
}

impl<F: FnMut(BackupChunk) -> io::Result<()>> Write for Chunks<F> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.emit()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.emit()?;
        }
        Ok(())
    }
}

/// The backup of this node's state, as a stream of chunks. A failure while exporting ends the
/// stream with an error status, so a client never mistakes a cut-off backup for a whole one
/// (and the format's end marker makes `restore` refuse one anyway).
pub async fn export(ctx: &NodeCtx) -> Result<BoxStream<BackupChunk>, Status> {
    ctx.read_barrier().await?;
    let source = ctx
        .sm
        .backup_source()
        .map_err(|e| Status::internal(format!("opening the state: {e}")))?;
    let (txn, meta_json) = (source.txn, source.meta_json);
    let Some(at) = source.applied else {
        return Err(Status::failed_precondition(
            "nothing applied yet: there is no state to back up",
        ));
    };
    tracing::info!(index = at.index, term = at.leader_id.term, "backup started");
    #[cfg(not(madsim))]
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BackupChunk, Status>>(4);
        tokio::task::spawn_blocking(move || {
            let send = |c| {
                tx.blocking_send(Ok(c))
                    .map_err(|_| io::Error::other("the client went away"))
            };
            match write_chunks(&txn, &meta_json, at, send) {
                Ok(rows) => tracing::info!(rows, index = at.index, "backup sent"),
                Err(e) => {
                    tracing::warn!(error = %e, "backup failed");
                    let _ = tx.blocking_send(Err(Status::internal(format!("backup failed: {e}"))));
                }
            }
        });
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        })))
    }
    // The simulator has no blocking threads: export in place.
    #[cfg(madsim)]
    {
        let mut chunks = Vec::new();
        write_chunks(&txn, &meta_json, at, |c| {
            chunks.push(Ok(c));
            Ok(())
        })
        .map_err(|e| Status::internal(format!("backup failed: {e}")))?;
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

/// Exports the state `txn` sees, with its Raft meta, to `send` in chunks; the first carries
/// `at`. Returns the rows written.
fn write_chunks(
    txn: &redb::ReadTransaction,
    meta_json: &[u8],
    at: LogId,
    send: impl FnMut(BackupChunk) -> io::Result<()>,
) -> io::Result<u64> {
    let mut out = Chunks {
        buf: Vec::with_capacity(CHUNK),
        at: Some(at),
        send,
    };
    let rows = snapshot::write(txn, meta_json, &mut out).map_err(io::Error::other)?;
    out.flush()?;
    Ok(rows)
}

/// What `restore` made.
#[derive(Debug)]
pub struct Restored {
    pub rows: u64,
    /// The log position the backup's state was applied up to.
    pub applied: LogId,
}

/// The files of a data directory a restore must not overwrite.
fn data_files(dir: &Path) -> [PathBuf; 3] {
    ["state.redb", "log.redb", "log.wal"].map(|f| dir.join(f))
}

/// Makes `data_dir` (absent or without data files) the data directory of a new one-voter
/// cluster: node `id` at `node`, holding the backup's state. Start it with `halter start` (or
/// `halter dev`) on the same id and addresses. On failure nothing is left behind.
pub async fn restore(
    backup: &Path,
    data_dir: &Path,
    id: NodeId,
    node: HalterNode,
) -> anyhow::Result<Restored> {
    if let Some(f) = data_files(data_dir).iter().find(|f| f.exists()) {
        anyhow::bail!(
            "{} exists: restore only into a new data directory",
            f.display()
        );
    }
    let file = std::fs::File::open(backup)
        .with_context(|| format!("opening the backup {}", backup.display()))?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let made = fill(file, data_dir, id, node).await;
    if made.is_err() {
        for f in data_files(data_dir) {
            let _ = std::fs::remove_file(f);
        }
    }
    made
}

async fn fill(
    file: std::fs::File,
    data_dir: &Path,
    id: NodeId,
    node: HalterNode,
) -> anyhow::Result<Restored> {
    let (applied, rows) = {
        let store = Store::open(data_dir.join("state.redb")).context("creating state.redb")?;
        let mut input = io::BufReader::with_capacity(1 << 20, file);
        restore_backup(&store, &mut input, id, node)
            .map_err(|e| anyhow::anyhow!("reading the backup: {e}"))?
    };
    // The new node's first election must be in a later term than every entry behind the
    // state: a leader's entries are numbered by its term, and they follow those entries.
    let mut log = LogStore::open(&data_dir.join("log.redb"))
        .map_err(|e| anyhow::anyhow!("creating the Raft log: {e}"))?;
    log.save_vote(&Vote::new(applied.leader_id.term, id))
        .await
        .map_err(|e| anyhow::anyhow!("saving the vote: {e}"))?;
    Ok(Restored { rows, applied })
}
