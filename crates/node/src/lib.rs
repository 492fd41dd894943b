//! Halter's server side: openraft wiring, the gRPC services, the leader's timer service.
//!
//! Today this holds the one place where state-machine outcomes become gRPC statuses; the rest
//! arrives with the cluster issue.

pub mod status;
