//! Halter's wire types.
//!
//! * [`littlehorse`]: the public API, wire-compatible with LittleHorse's `littlehorse` package
//!   for everything Halter implements (checked against the real client by `tests/wire`).
//! * [`halter`]: our own messages: the replicated log's [`halter::Command`] format and what the
//!   state machine stores besides the public objects.
//!
//! This crate holds types, conversions and validation only; it does no I/O.

pub mod build;
pub mod cron;
pub mod json;
pub mod limits;
pub mod names;
pub mod values;
pub mod wf_run_id;

/// The public LittleHorse API (`package littlehorse`).
#[allow(clippy::all, clippy::restriction, clippy::pedantic, missing_docs)]
pub mod littlehorse {
    #[cfg(feature = "grpc")]
    tonic::include_proto!("littlehorse");
    #[cfg(not(feature = "grpc"))]
    include!(concat!(env!("OUT_DIR"), "/littlehorse.rs"));
}

/// Halter's internal messages (`package halter`).
#[allow(clippy::all, clippy::restriction, clippy::pedantic, missing_docs)]
pub mod halter {
    #[cfg(feature = "grpc")]
    tonic::include_proto!("halter");
    #[cfg(not(feature = "grpc"))]
    include!(concat!(env!("OUT_DIR"), "/halter.rs"));
}

/// The compiled descriptor set of every `.proto` in `proto/`, for reflection (JSON I/O).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/halter_descriptor.bin"));

/// The version of the log format this build writes, and the newest it can read.
pub const LOG_FORMAT_VERSION: u32 = 1;
