//! TLS on both ports, from the PEM files the configuration names (`docs/operations.md`).
//!
//! The client port serves the LittleHorse API to anyone who trusts the node's certificate, or,
//! with `tls_client_ca`, only to clients presenting a certificate that CA signed (what
//! LittleHorse's clients send with `LHC_CLIENT_CERT`). The peer port carries Raft and cluster
//! administration, so it always requires a client certificate signed by the cluster's CA
//! (`tls_ca`): whoever can reach that port without one could otherwise vote, append entries or
//! change the membership. Each node connects to its peers with its own certificate and accepts
//! only peers whose certificate the same CA signed.

use std::path::Path;

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::Config;

/// What a node's two servers present and require, and how it connects to its peers.
pub struct NodeTls {
    pub client_port: ServerTlsConfig,
    pub peer_port: ServerTlsConfig,
    pub to_peers: ClientTlsConfig,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// The node's TLS set-up, or `None` when the configuration names no certificate. Fails at
/// start-up on a missing or unreadable file rather than on the first connection.
pub fn load(cfg: &Config) -> anyhow::Result<Option<NodeTls>> {
    let (Some(cert), Some(key), Some(ca)) = (&cfg.tls_cert, &cfg.tls_key, &cfg.tls_ca) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(read(cert, "tls_cert")?, read(key, "tls_key")?);
    let ca = Certificate::from_pem(read(ca, "tls_ca")?);
    let mut client_port = ServerTlsConfig::new().identity(identity.clone());
    if let Some(client_ca) = &cfg.tls_client_ca {
        client_port =
            client_port.client_ca_root(Certificate::from_pem(read(client_ca, "tls_client_ca")?));
    }
    Ok(Some(NodeTls {
        client_port,
        peer_port: ServerTlsConfig::new()
            .identity(identity.clone())
            .client_ca_root(ca.clone()),
        to_peers: ClientTlsConfig::new().ca_certificate(ca).identity(identity),
    }))
}
