//! The storage crate's one error type. Every redb failure is an I/O-level problem for the node
//! (not the client's fault); a decode failure means the database holds bytes we did not write.

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("storage table: {0}")]
    Table(#[from] redb::TableError),
    #[error("storage transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("storage commit: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("storage open: {0}")]
    Database(#[from] redb::DatabaseError),
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("state table {0} is not open")]
    NotOpen(String),
    #[error("corrupt record in {table}: {source}")]
    Corrupt {
        table: &'static str,
        source: prost::DecodeError,
    },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
