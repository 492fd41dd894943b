//! Halter's storage on redb.
//!
//! The state tables live here with their key layouts ([`tables`]); typed access is a thin layer
//! of protobuf encode/decode over them ([`codec`]). The state machine reads and writes them
//! inside one redb write transaction per applied batch; queries read them in a read
//! transaction. [`digest`] hashes every table so replicas can be compared byte for byte.

pub mod codec;
pub mod digest;
pub mod error;
pub mod sim_disk;
pub mod snapshot;
pub mod store;
pub mod tables;
pub mod wal;

pub use error::StorageError;
pub use store::Store;
pub use tables::{ReadTables, Tables};
