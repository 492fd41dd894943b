//! The bytes of a snapshot as openraft moves them: a file on disk for a real node, so sending
//! or receiving a snapshot never holds the whole state in memory, or a buffer in memory for
//! simulations and tests that run without a data directory.
//!
//! openraft wants tokio's async I/O traits; the file variant does plain blocking reads and
//! writes inside them. openraft moves snapshots in chunks (a few MiB each) from and to the page
//! cache, so each call blocks briefly, and this also works under the simulator, which has no
//! real file system tasks.

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

pub enum SnapshotData {
    Memory(Cursor<Vec<u8>>),
    /// An open snapshot file and where it is (a received snapshot is renamed into place).
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
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = match self.get_mut() {
            Self::Memory(c) => c.read(buf.initialize_unfilled()),
            Self::File { file, .. } => file.read(buf.initialize_unfilled()),
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
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.get_mut() {
            Self::Memory(_) => Ok(()),
            Self::File { file, .. } => file.flush(),
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, pos: SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            Self::Memory(c) => c.seek(pos).map(|_| ()),
            Self::File { seek_to, .. } => {
                *seek_to = Some(pos);
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(match self.get_mut() {
            Self::Memory(c) => Ok(c.position()),
            Self::File { file, seek_to, .. } => match seek_to.take() {
                Some(pos) => file.seek(pos),
                None => file.stream_position(),
            },
        })
    }
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
