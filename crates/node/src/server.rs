//! Starting and stopping a node: open storage, start Raft, serve both gRPC services, run the
//! timer service, bootstrap a new cluster when this node is the first initial member.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use halter_api::halter::cluster_server::ClusterServer;
use halter_api::littlehorse::little_horse_server::LittleHorseServer;
use halter_storage::sim_disk::SimDisk;
use halter_storage::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster_service::ClusterService;
use crate::config::Config;
use crate::lh_service::LhService;
use crate::proposer::NodeCtx;
use crate::raft::read_fence::ReadFence;
use crate::raft::{
    log_store::{self, LogStore},
    network::{self, Network},
    speculate,
    state_machine::StateMachineStore,
    Raft,
};

/// Largest write request the API accepts (`RESOURCE_EXHAUSTED` beyond).
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024 * 1024;
/// Largest message the transport decodes at all (`OUT_OF_RANGE` beyond, from tonic).
pub const MAX_DECODE: usize = 16 * 1024 * 1024;

/// How long a graceful shutdown waits for in-flight requests and open connections.
pub const DRAIN: Duration = Duration::from_secs(2);

pub struct NodeHandle {
    pub ctx: Arc<NodeCtx>,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// Where `GET /metrics` is served, if `metrics_addr` was configured.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    /// Stops serving, stops Raft, and waits (at most [`DRAIN`]) for the tasks to end: idle
    /// client connections would otherwise hold a graceful shutdown open indefinitely.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.ctx.raft.shutdown().await;
        for mut t in self.tasks {
            if tokio::time::timeout(DRAIN, &mut t).await.is_err() {
                t.abort();
            }
        }
    }
}

/// Where a node keeps its data.
pub enum Storage {
    /// `log.redb`, `log.wal` and `state.redb` in the configured data directory (snapshots in
    /// transit next to them).
    Files,
    /// Simulated disks that survive a node's restart but lose unsynced writes in a crash
    /// (the current snapshot then lives in memory and is rebuilt after a restart).
    Sim {
        log: SimDisk,
        wal: SimDisk,
        state: SimDisk,
    },
}

pub async fn start(cfg: Config) -> anyhow::Result<NodeHandle> {
    start_with(cfg, Storage::Files).await
}

pub async fn start_with(cfg: Config, storage: Storage) -> anyhow::Result<NodeHandle> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    #[cfg(not(madsim))]
    let tls = crate::tls::load(&cfg)?;
    #[cfg(not(madsim))]
    let connector = match &tls {
        Some(t) => network::PeerConnector::tls(t.to_peers.clone()),
        None => network::PeerConnector::default(),
    };
    #[cfg(madsim)]
    anyhow::ensure!(cfg.tls_cert.is_none(), "TLS is not simulated");
    #[cfg(madsim)]
    let connector = network::PeerConnector::default();
    // Bind both addresses first: a port in use fails start-up before the data is touched, and
    // a client or peer that connects while the storage opens (a new log's WAL is filled with
    // zeros first) waits in the listen backlog instead of being refused.
    #[cfg(not(madsim))]
    let (peer_listener, client_listener) = (
        tokio::net::TcpListener::bind(&cfg.peer_addr)
            .await
            .with_context(|| format!("binding peer address {}", cfg.peer_addr))?,
        tokio::net::TcpListener::bind(&cfg.client_addr)
            .await
            .with_context(|| format!("binding client address {}", cfg.client_addr))?,
    );
    #[cfg(not(madsim))]
    let metrics_listener = match &cfg.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics address {addr}"))?,
        ),
        None => None,
    };
    let (mut log, sm) = match storage {
        Storage::Files => {
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
            let log = LogStore::open(&cfg.data_dir.join("log.redb"))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = Arc::new(
                Store::open(cfg.data_dir.join("state.redb")).context("opening state.redb")?,
            );
            let sm = StateMachineStore::new(store, Some(cfg.data_dir.join("snapshot.bin")))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .sync_every(cfg.sync_state_every_applies);
            (log, sm)
        }
        Storage::Sim { log, wal, state } => {
            let log = LogStore::with_backends(log, wal, log_store::SIM_WAL_CAPACITY)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = Arc::new(Store::with_backend(state).context("opening state")?);
            let sm = StateMachineStore::new(store, None)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .sync_every(cfg.sync_state_every_applies);
            (log, sm)
        }
    };

    let raft_config = openraft::Config {
        cluster_name: "halter".into(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_timeout_ms,
        election_timeout_max: cfg.election_timeout_ms * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_after_logs),
        max_in_snapshot_log_to_keep: cfg.keep_logs_after_snapshot,
        purge_batch_size: 1,
        // An entry is a batch of up to 1024 commands (group commit), so openraft's default of
        // 300 entries per AppendEntries could make a message of tens of MiB that outlives its
        // timeout (the heartbeat interval) on a busy node; then replication stalls and retries.
        max_payload_entries: 16,
        ..Default::default()
    }
    .validate()?;
    let read_floor = {
        use openraft::storage::RaftLogStorage;
        let state = log
            .get_log_state()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        state.last_log_id.map_or(0, |l| l.index)
    };
    let fence = Arc::new(ReadFence::default());
    log.fence_reads(fence.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (speculator, speculated) = speculate::channel(cfg.node_id);
    log.speculate_to(speculator.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    log.free_slots_at_commit(sm.answers.clone());
    let raft = Raft::new(
        cfg.node_id,
        Arc::new(raft_config),
        Network::speculating(speculator.followers(), fence.clone(), connector.clone()),
        log,
        sm.clone(),
    )
    .await?;
    speculate::start(
        &speculator,
        raft.metrics(),
        speculated,
        fence.clone(),
        connector.clone(),
    )
    .context("starting the speculator thread")?;
    let ctx = NodeCtx::new(
        cfg.node_id,
        raft.clone(),
        sm,
        Duration::from_millis(cfg.request_deadline_ms),
        read_floor,
        fence,
        connector,
    );

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let cluster = ClusterServer::new(ClusterService { ctx: ctx.clone() })
        .max_decoding_message_size(network::MAX_PEER_MESSAGE)
        .max_encoding_message_size(network::MAX_PEER_MESSAGE);
    let lh = LittleHorseServer::new(LhService { ctx: ctx.clone() })
        .max_decoding_message_size(MAX_DECODE)
        .max_encoding_message_size(64 * 1024 * 1024);
    #[cfg_attr(madsim, allow(unused_mut))]
    let (mut peer_server, mut client_server) = (
        tonic::transport::Server::builder(),
        tonic::transport::Server::builder(),
    );
    #[cfg(not(madsim))]
    if let Some(t) = tls {
        peer_server = peer_server
            .tls_config(t.peer_port)
            .context("peer port TLS")?;
        client_server = client_server
            .tls_config(t.client_port)
            .context("client port TLS")?;
    }
    let peer = peer_server
        .tcp_nodelay(true)
        .initial_stream_window_size(network::PEER_STREAM_WINDOW)
        .initial_connection_window_size(network::PEER_CONNECTION_WINDOW)
        .add_service(cluster);
    #[cfg(not(madsim))]
    let stats = Arc::new(crate::metrics::ApiStats::default());
    #[cfg(not(madsim))]
    let lh = crate::metrics::counted(lh, stats.clone());
    let client = client_server.tcp_nodelay(true).add_service(lh);

    #[cfg(not(madsim))]
    let (peer_addr, client_addr) = {
        let addrs = (peer_listener.local_addr()?, client_listener.local_addr()?);
        // The builder's `tcp_nodelay` applies only to listeners it binds itself; without
        // NODELAY here, the 10-byte trailers of every response waited for the client's delayed
        // ACK (40 ms a request at one client).
        use tonic::transport::server::TcpIncoming;
        tasks.push(spawn_server(
            "peer",
            peer.serve_with_incoming_shutdown(
                TcpIncoming::from(peer_listener).with_nodelay(Some(true)),
                stopped(shutdown_rx.clone()),
            ),
        ));
        tasks.push(spawn_server(
            "client",
            client.serve_with_incoming_shutdown(
                TcpIncoming::from(client_listener).with_nodelay(Some(true)),
                stopped(shutdown_rx.clone()),
            ),
        ));
        addrs
    };
    #[cfg(not(madsim))]
    let metrics_addr = match metrics_listener {
        Some(l) => {
            let addr = l.local_addr()?;
            tasks.push(tokio::spawn(crate::metrics::serve(
                l,
                ctx.clone(),
                stats.clone(),
                shutdown_rx.clone(),
            )));
            Some(addr)
        }
        None => None,
    };
    #[cfg(madsim)]
    let metrics_addr = None;
    // The simulated transport serves on an address directly.
    #[cfg(madsim)]
    let (peer_addr, client_addr) = {
        let addrs: (SocketAddr, SocketAddr) = (cfg.peer_addr.parse()?, cfg.client_addr.parse()?);
        tasks.push(spawn_server(
            "peer",
            peer.serve_with_shutdown(addrs.0, stopped(shutdown_rx.clone())),
        ));
        tasks.push(spawn_server(
            "client",
            client.serve_with_shutdown(addrs.1, stopped(shutdown_rx.clone())),
        ));
        addrs
    };
    tasks.push(tokio::spawn(crate::timer_service::run(
        ctx.clone(),
        shutdown_rx.clone(),
    )));

    // Bootstrap: on a fresh data dir, the lowest-id initial member initializes the cluster.
    let lowest = cfg.initial_members.iter().map(|m| m.id).min();
    if lowest == Some(cfg.node_id) && !raft.is_initialized().await? {
        let members: BTreeMap<_, _> = cfg
            .initial_members
            .iter()
            .map(|m| (m.id, m.node()))
            .collect();
        tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "bootstrapping a new cluster");
        if let Err(e) = raft.initialize(members).await {
            tracing::warn!(error = %e, "initialize refused (already initialized?)");
        }
    }
    tracing::info!(node = cfg.node_id, %client_addr, %peer_addr, ?metrics_addr, "halter node started");
    Ok(NodeHandle {
        ctx,
        client_addr,
        peer_addr,
        metrics_addr,
        shutdown,
        tasks,
    })
}

/// Resolves once `shutdown` turns true.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn spawn_server<E: std::fmt::Display>(
    what: &'static str,
    serving: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = serving.await {
            tracing::error!(error = %e, server = what, "server failed");
        }
    })
}
