//! The bytes of a snapshot as openraft moves them: a file on disk for a real node, so sending
//! or receiving a snapshot never holds the whole state in memory, or a buffer in memory for
//! simulations and tests that run without a data directory.
//!
//! A snapshot to send is [`SnapshotData::Lazy`]: a read transaction of the state, exported
//! (to an unlinked temporary file, or a buffer) only when openraft first reads it. openraft
//! asks for the current snapshot at start-up and whenever it builds one, and reads only the
//! meta then; exporting the whole state each time cost every node seconds of CPU and disk per
//! `snapshot_after_logs` entries (it made timers fire hundreds of milliseconds late).
//!
//! openraft wants tokio's async I/O traits; the file variant does plain blocking reads and
//! writes inside them. openraft moves snapshots in chunks (a few MiB each) from and to the page
//! cache, so each call blocks briefly, and this also works under the simulator, which has no
//! real file system tasks. The one long block, exporting a `Lazy` snapshot, tells the server's
//! multi-threaded runtime first (`block_in_place`), so the worker's other tasks move on.

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use halter_storage::snapshot;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// The state to export on first read: one read transaction (so the rows match the meta read
/// from it) and where to export to (`None`: memory).
pub struct PendingExport {
    pub txn: redb::ReadTransaction,
    pub meta_json: Vec<u8>,
    pub file: Option<PathBuf>,
}

pub enum SnapshotData {
    /// Not exported yet; becomes `Memory` or `File` on first read or seek.
    Lazy(Option<PendingExport>),
    Memory(Cursor<Vec<u8>>),
    /// An open snapshot file and where it is (a received one is deleted once installed).
    File {
        file: std::fs::File,
        path: PathBuf,
        /// A seek started by `start_seek` and not yet reported by `poll_complete`.
        seek_to: Option<SeekFrom>,
    },
}

impl SnapshotData {
    pub fn file(file: std::fs::File, path: PathBuf) -> Self {
        Self::File {
            file,
            path,
            seek_to: None,
        }
    }

    /// Exports a `Lazy` snapshot, once. Blocks while the state is written out: this runs when
    /// a peer needs a snapshot, which is rare (it fell behind the purged log, or it is new).
    pub fn materialize(&mut self) -> io::Result<()> {
        let Self::Lazy(pending) = self else {
            return Ok(());
        };
        let Some(p) = pending.take() else {
            return Err(io::Error::other("snapshot export failed earlier"));
        };
        *self = run_blocking(|| Self::export(p))?;
        Ok(())
    }

    fn export(p: PendingExport) -> io::Result<Self> {
        Ok(match p.file {
            None => {
                let mut bytes = Vec::new();
                snapshot::write(&p.txn, &p.meta_json, &mut bytes).map_err(io::Error::other)?;
                Self::Memory(Cursor::new(bytes))
            }
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?;
                // Unlinked at once: the open handle keeps it, and nothing is left to clean up.
                std::fs::remove_file(&path)?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
                snapshot::write(&p.txn, &p.meta_json, &mut w).map_err(io::Error::other)?;
                let mut file = w.into_inner().map_err(|e| e.into_error())?;
                file.seek(SeekFrom::Start(0))?;
                Self::file(file, path)
            }
        })
    }
}

/// Runs `f`, which blocks for a while (seconds for a large state), from inside a poll: on a
/// multi-threaded Tokio runtime it first hands this worker's other tasks to other workers, so
/// client requests and heartbeats queued behind it keep moving. The simulator and the
/// single-threaded test runtimes just run it.
fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(not(madsim))]
    if tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
    {
        return tokio::task::block_in_place(f);
    }
    f()
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.materialize() {
            return Poll::Ready(Err(e));
        }
        let r = match this {
            Self::Memory(c) => c.read(buf.initialize_unfilled()),
            Self::File { file, .. } => file.read(buf.initialize_unfilled()),
            Self::Lazy(_) => Err(read_only()),
        };
        Poll::Ready(r.map(|n| buf.advance(n)))
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(match self.get_mut() {
            Self::Memory(c) => c.write(data),
            Self::File { file, .. } => file.write(data),
            Self::Lazy(_) => Err(read_only()),
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.get_mut() {
            Self::Memory(_) | Self::Lazy(_) => Ok(()),
            Self::File { file, .. } => file.flush(),
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, pos: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        this.materialize()?;
        match this {
            Self::Memory(c) => c.seek(pos).map(|_| ()),
            Self::File { seek_to, .. } => {
                *seek_to = Some(pos);
                Ok(())
            }
            Self::Lazy(_) => Err(read_only()),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        if let Err(e) = this.materialize() {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(match this {
            Self::Memory(c) => Ok(c.position()),
            Self::File { file, seek_to, .. } => match seek_to.take() {
                Some(pos) => file.seek(pos),
                None => file.stream_position(),
            },
            Self::Lazy(_) => Err(read_only()),
        })
    }
}

fn read_only() -> io::Error {
    io::Error::other("a snapshot being sent is read-only")
}

#[cfg(all(test, not(madsim)))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    async fn round_trip(mut d: SnapshotData) -> Vec<u8> {
        d.write_all(b"hello ").await.unwrap();
        d.seek(SeekFrom::Start(20)).await.unwrap();
        d.write_all(b"world").await.unwrap();
        assert_eq!(d.seek(SeekFrom::Current(0)).await.unwrap(), 25);
        d.flush().await.unwrap();
        d.seek(SeekFrom::Start(0)).await.unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn file_and_memory_behave_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let from_file = round_trip(SnapshotData::file(file, path)).await;
        let from_memory = round_trip(SnapshotData::Memory(Cursor::new(Vec::new()))).await;
        assert_eq!(from_file, from_memory);
        assert_eq!(&from_file[..6], b"hello ");
        assert_eq!(&from_file[20..], b"world");
    }
}
