//! Opening a database, on a file or in memory.

use std::path::Path;

use redb::{
    backends::InMemoryBackend, Database, ReadTransaction, ReadableDatabase, WriteTransaction,
};

use crate::error::Result;
use crate::tables;

/// redb's page cache for the state database. redb's default (1 GiB) would let a node's memory
/// grow with the data it stores; the hot set (recent events, due timers, running WfRuns) fits in
/// far less, and the OS page cache still holds more of the file.
pub const STATE_CACHE_BYTES: usize = 96 * 1024 * 1024;

/// A redb database holding Halter's state tables.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database file at `path`, with redb's page cache capped at
    /// [`STATE_CACHE_BYTES`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::init(
            Database::builder()
                .set_cache_size(STATE_CACHE_BYTES)
                .create(path)?,
        )
    }

    /// A fresh database that lives in memory only (tests, examples).
    pub fn in_memory() -> Result<Self> {
        Self::with_backend(InMemoryBackend::new())
    }

    /// A database on any redb backend (simulations use [`crate::sim_disk::SimDisk`]).
    pub fn with_backend(backend: impl redb::StorageBackend) -> Result<Self> {
        Self::init(Database::builder().create_with_backend(backend)?)
    }

    fn init(db: Database) -> Result<Self> {
        let txn = db.begin_write()?;
        tables::create_all(&txn)?;
        txn.commit()?;
        Ok(Self { db })
    }

    pub fn begin_write(&self) -> Result<WriteTransaction> {
        Ok(self.db.begin_write()?)
    }

    pub fn begin_read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    pub fn database(&self) -> &Database {
        &self.db
    }
}
