//! Node configuration: a TOML file, every key of which is also a flag and an environment
//! variable (`HALTER_<KEY>`); flags and variables win over the file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::raft::{HalterNode, NodeId};

/// A member of the initial cluster.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub peer_addr: String,
    pub client_addr: String,
}

impl Member {
    /// Parses `ID@PEER_ADDR@CLIENT_ADDR`, the flag and environment form.
    pub fn parse(s: &str) -> Result<Member, String> {
        let parts: Vec<&str> = s.split('@').collect();
        let [id, peer, client] = parts.as_slice() else {
            return Err(format!("member '{s}' is not ID@PEER_ADDR@CLIENT_ADDR"));
        };
        Ok(Member {
            id: id.parse().map_err(|_| format!("member '{s}': bad id"))?,
            peer_addr: peer.to_string(),
            client_addr: client.to_string(),
        })
    }

    pub fn node(&self) -> HalterNode {
        HalterNode {
            peer_addr: self.peer_addr.clone(),
            client_addr: self.client_addr.clone(),
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id, unique in the cluster, > 0.
    pub node_id: NodeId,
    /// Where clients reach the LittleHorse API (`host:port`).
    pub client_addr: String,
    /// Where peers reach the internal cluster service (`host:port`).
    pub peer_addr: String,
    /// Where the Raft log, the state and snapshots live.
    pub data_dir: PathBuf,
    /// The members of a new cluster. On first start, the member with the lowest id bootstraps
    /// the cluster with exactly these; a node not listed waits to be added (`halterctl cluster
    /// add`). Ignored on restart (the data directory knows the membership).
    #[serde(default)]
    pub initial_members: Vec<Member>,
    /// Milliseconds a write or a read barrier may take before `UNAVAILABLE`.
    #[serde(default = "default_deadline_ms")]
    pub request_deadline_ms: u64,
    /// Raft heartbeat interval, milliseconds.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Raft election timeout, milliseconds (randomized between this and twice this).
    #[serde(default = "default_election_ms")]
    pub election_timeout_ms: u64,
    /// Take a snapshot (and allow purging the log) after this many applied entries.
    #[serde(default = "default_snapshot_logs")]
    pub snapshot_after_logs: u64,
    /// How many applied entries to keep in the log behind a snapshot, for peers slightly behind.
    #[serde(default = "default_keep_logs")]
    pub keep_logs_after_snapshot: u64,
    /// One apply transaction in this many is fsynced: after a power cut or a kill a node
    /// re-applies, from its own log, what at most this many apply transactions applied.
    #[serde(default = "default_sync_state")]
    pub sync_state_every_applies: u32,
    /// Where to serve Prometheus metrics (`GET /metrics`, `host:port`); none if unset.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// TLS (PEM files, see `crate::tls`): this node's certificate chain and key. With them both
    /// ports serve TLS only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The CA the cluster's certificates are signed by: required with `tls_cert`. The peer port
    /// accepts only clients with a certificate it signed (nodes, administrators), and this node
    /// accepts only peers whose certificate it signed.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// If set, the client port accepts only clients with a certificate this CA signed (mutual
    /// TLS, LittleHorse's `LHC_CLIENT_CERT`); otherwise any client that trusts the server.
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
}

fn default_deadline_ms() -> u64 {
    5_000
}
fn default_heartbeat_ms() -> u64 {
    100
}
fn default_election_ms() -> u64 {
    400
}
fn default_snapshot_logs() -> u64 {
    10_000
}
fn default_keep_logs() -> u64 {
    1_000
}
fn default_sync_state() -> u32 {
    crate::raft::state_machine::SYNC_EVERY_APPLIES
}

impl Config {
    /// A single-node development configuration.
    pub fn dev(data_dir: PathBuf, client_addr: String, peer_addr: String) -> Config {
        Config {
            node_id: 1,
            initial_members: vec![Member {
                id: 1,
                peer_addr: peer_addr.clone(),
                client_addr: client_addr.clone(),
            }],
            client_addr,
            peer_addr,
            data_dir,
            request_deadline_ms: default_deadline_ms(),
            heartbeat_ms: default_heartbeat_ms(),
            election_timeout_ms: default_election_ms(),
            snapshot_after_logs: default_snapshot_logs(),
            keep_logs_after_snapshot: default_keep_logs(),
            sync_state_every_applies: default_sync_state(),
            metrics_addr: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_client_ca: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id must be > 0".into());
        }
        if self.heartbeat_ms == 0 || self.election_timeout_ms <= 2 * self.heartbeat_ms {
            return Err("election_timeout_ms must exceed twice heartbeat_ms".into());
        }
        if self.sync_state_every_applies == 0 {
            return Err("sync_state_every_applies must be > 0".into());
        }
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) if self.tls_client_ca.is_some() => {
                return Err("tls_client_ca needs tls_cert, tls_key and tls_ca".into())
            }
            (None, None, None) | (Some(_), Some(_), Some(_)) => {}
            _ => return Err("tls_cert, tls_key and tls_ca go together".into()),
        }
        let mut ids: Vec<_> = self.initial_members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.initial_members.len() {
            return Err("initial_members has duplicate ids".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_from_the_flag_form() {
        let m = Member::parse("2@127.0.0.1:7002@127.0.0.1:2033").unwrap();
        assert_eq!(
            (m.id, m.peer_addr.as_str(), m.client_addr.as_str()),
            (2, "127.0.0.1:7002", "127.0.0.1:2033")
        );
        assert!(Member::parse("2@x").is_err());
        assert!(Member::parse("a@x@y").is_err());
    }

    #[test]
    fn toml_files_parse_and_reject_unknown_keys() {
        let c: Config = toml::from_str(
            r#"
            node_id = 1
            client_addr = "127.0.0.1:2023"
            peer_addr = "127.0.0.1:2024"
            data_dir = "/tmp/h1"
            [[initial_members]]
            id = 1
            peer_addr = "127.0.0.1:2024"
            client_addr = "127.0.0.1:2023"
            "#,
        )
        .unwrap();
        assert_eq!(c.request_deadline_ms, 5_000);
        assert_eq!(c.sync_state_every_applies, 1024);
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<Config>("node_id = 1\nbogus = 2").is_err());
    }

    #[test]
    fn a_state_never_made_durable_is_refused() {
        let mut c = Config::dev("/tmp/h".into(), "a:1".into(), "b:2".into());
        c.sync_state_every_applies = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .contains("sync_state_every_applies"));
        c.sync_state_every_applies = 1;
        assert!(c.validate().is_ok());
    }
}
