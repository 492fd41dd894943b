//! What apply can answer besides success.
//!
//! A [`Rejection`] is the client's problem: the command changed nothing and the client gets a
//! specific gRPC status (the node maps these in one place). An [`ApplyError`] is the node's
//! problem (storage failed, or the entry is from a newer log format): the node must stop
//! applying rather than diverge from its peers.

use halter_api::names::NameError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
}

impl From<NameError> for Rejection {
    fn from(e: NameError) -> Self {
        Rejection::InvalidArgument(e.to_string())
    }
}

/// Shorthand for an `INVALID_ARGUMENT` rejection.
pub fn invalid(msg: impl Into<String>) -> Rejection {
    Rejection::InvalidArgument(msg.into())
}

/// The name a Delete request's `id` gives (`what` says whose, in the message): present and
/// well formed.
pub(crate) fn id_name<'a>(what: &'static str, name: Option<&'a str>) -> Result<&'a str, Rejection> {
    let name = name.ok_or_else(|| invalid("missing id"))?;
    halter_api::names::check_name(what, name)?;
    Ok(name)
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Storage(#[from] halter_storage::StorageError),
    #[error("log entry has format version {found}, this node reads up to {supported}")]
    UnsupportedFormat { found: u32, supported: u32 },
}

impl From<redb::StorageError> for ApplyError {
    fn from(e: redb::StorageError) -> Self {
        ApplyError::Storage(e.into())
    }
}

/// The outcome of a handler: `Err(Outcome::Rejected)` leaves the state untouched.
#[derive(Debug, thiserror::Error)]
pub enum Outcome {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Fatal(#[from] ApplyError),
}

impl From<halter_storage::StorageError> for Outcome {
    fn from(e: halter_storage::StorageError) -> Self {
        Outcome::Fatal(e.into())
    }
}

impl From<redb::StorageError> for Outcome {
    fn from(e: redb::StorageError) -> Self {
        Outcome::Fatal(e.into())
    }
}

impl From<NameError> for Outcome {
    fn from(e: NameError) -> Self {
        Outcome::Rejected(e.into())
    }
}

pub type HResult<T> = Result<T, Outcome>;
