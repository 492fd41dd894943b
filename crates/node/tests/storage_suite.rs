//! Real processes and real sockets: not part of the simulated (`--cfg madsim`) build.
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]
//! openraft's own conformance suite against Halter's log store and state machine, in memory and
//! on files.

use std::sync::Arc;

use halter_node::raft::{
    io_write, log_store::LogStore, state_machine::StateMachineStore, NodeId, TypeConfig,
};
use halter_storage::Store;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct InMemory;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for InMemory {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError<NodeId>> {
        let store = Arc::new(Store::in_memory().map_err(io_write)?);
        Ok((
            (),
            LogStore::in_memory()?,
            StateMachineStore::new(store, None)?,
        ))
    }
}

struct OnFiles;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for OnFiles {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(io_write)?;
        let log = LogStore::open(&dir.path().join("log.redb"))?;
        let store = Arc::new(Store::open(dir.path().join("state.redb")).map_err(io_write)?);
        let sm = StateMachineStore::new(store, Some(dir.path().join("snapshot.bin")))?;
        Ok((dir, log, sm))
    }
}

/// Simulated disks and a WAL so small that most appends fill it: the absorb-and-reset path
/// (a durable redb commit instead of a WAL append) under the whole suite.
struct TinyWal;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for TinyWal {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError<NodeId>> {
        use halter_storage::sim_disk::SimDisk;
        let store = Arc::new(Store::in_memory().map_err(io_write)?);
        Ok((
            (),
            LogStore::with_backends(SimDisk::new(), SimDisk::new(), 256)?,
            StateMachineStore::new(store, None)?,
        ))
    }
}

#[test]
fn openraft_suite_tiny_wal() {
    Suite::test_all(TinyWal).expect("openraft storage suite (tiny WAL)");
}

#[test]
fn openraft_suite_in_memory() {
    Suite::test_all(InMemory).expect("openraft storage suite (in memory)");
}

#[test]
fn openraft_suite_on_files() {
    Suite::test_all(OnFiles).expect("openraft storage suite (files)");
}
