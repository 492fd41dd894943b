//! Halter's server: openraft wiring ([`raft`]), the public LittleHorse service
//! ([`lh_service`]), the internal cluster service ([`cluster_service`]), the write and read
//! paths ([`proposer`]), the leader's timer service ([`timer_service`]), task workers'
//! registration and held polls ([`task_dispatch`]), held `AwaitWorkflowEvent` calls
//! ([`workflow_events`]), online backups and restores ([`backup`]), configuration
//! ([`config`]) and node start-up ([`server`]). gRPC statuses are made in [`status`] only.

pub mod backup;
pub mod cluster_service;
pub mod config;
pub mod lh_service;
/// Real sockets only: the simulated tonic's server is not ours to wrap.
#[cfg(not(madsim))]
pub mod metrics;
pub mod proposer;
pub mod raft;
pub mod reads;
pub mod server;
pub mod status;
pub mod task_dispatch;
pub mod timer_service;
/// Real sockets only: the simulated transport has no TLS.
#[cfg(not(madsim))]
pub mod tls;
pub mod workflow_events;
