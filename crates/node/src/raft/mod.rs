//! openraft wiring: the type configuration, log storage, state machine and network.

pub mod answers;
pub mod log_store;
pub mod network;
pub mod read_fence;
#[cfg(madsim)]
pub mod sim_runtime;
pub mod snapshot_data;
pub mod speculate;
pub mod state_machine;

use std::fmt;

use halter_state_machine::{Rejection, Response};
use openraft::{AnyError, StorageError, StorageIOError};
use serde::{Deserialize, Serialize};

/// A log entry's application payload: encoded `halter.Command`s (protobuf, versioned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogCommand {
    /// One command.
    One(Vec<u8>),
    /// Commands the leader's proposer gathered while earlier entries were being committed
    /// (group commit): one log entry, one fsync, one apply transaction for all of them.
    Batch(Vec<Vec<u8>>),
    /// What the proposer writes now: a batch (of one command or more) with the proposer's tag
    /// for it ([`answers::Answers`]), which never affects state. A variant of its own, after
    /// the others, because peers exchange entries as bincode, which has no optional fields:
    /// an older node refuses it rather than misreading a changed `Batch`.
    Tagged {
        commands: Vec<Vec<u8>>,
        proposal: u64,
    },
}

/// What applying an entry produced. It never crosses the network (openraft returns it only to
/// the local proposer), so it carries the typed outcome without serializing it. Empty for an
/// entry whose outcomes the state machine handed to its proposer itself (`answers`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// The outcome of each command of the entry, in order (one for `LogCommand::One`).
    #[serde(skip)]
    pub results: Vec<Result<Response, Rejection>>,
}

/// A member of the cluster: where peers reach it and where clients reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalterNode {
    pub peer_addr: String,
    pub client_addr: String,
}

impl fmt::Display for HalterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer={} client={}", self.peer_addr, self.client_addr)
    }
}

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Halter's Raft type configuration.
    pub TypeConfig:
        D = LogCommand,
        R = CommandOutcome,
        NodeId = NodeId,
        Node = HalterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot_data::SnapshotData,
        AsyncRuntime = Runtime,
);

/// openraft's runtime: tokio normally, madsim under `--cfg madsim`.
#[cfg(not(madsim))]
pub type Runtime = openraft::TokioRuntime;
#[cfg(madsim)]
pub type Runtime = sim_runtime::MadsimRuntime;

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, HalterNode>;

/// Any storage failure, as openraft wants it.
pub fn io_write(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}

pub fn io_read(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::new(&e)).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `LogCommand` as nodes before tagged entries had it.
    #[derive(Debug, PartialEq, Deserialize)]
    enum Older {
        One(Vec<u8>),
        Batch(Vec<Vec<u8>>),
    }

    /// Peers exchange entries as bincode: an older node must refuse a tagged entry, not read
    /// it as something else, and still read the entries it knows.
    #[test]
    fn an_older_node_refuses_a_tagged_entry_and_reads_the_rest() {
        let tagged = LogCommand::Tagged {
            commands: vec![b"a".to_vec()],
            proposal: 0x0101_0101_0101_0101,
        };
        assert!(bincode::deserialize::<Older>(&bincode::serialize(&tagged).unwrap()).is_err());
        let batch = LogCommand::Batch(vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            bincode::deserialize::<Older>(&bincode::serialize(&batch).unwrap()).unwrap(),
            Older::Batch(vec![b"a".to_vec(), b"b".to_vec()])
        );
    }
}
