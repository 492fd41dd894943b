//! `halter`: the server binary.
//!
//! * `halter dev`: one node, data in `./halter-data`, LittleHorse API on 127.0.0.1:2023, peers on :2033.
//! * `halter start --config FILE` (or flags / `HALTER_*` variables): a cluster member.
//! * `halter restore --from FILE`: a new data directory from a backup (`halterctl cluster backup`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[cfg(not(madsim))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use halter_node::config::{Config, Member};

#[derive(Parser)]
#[command(
    name = "halter",
    version,
    about = "Halter: durable workflows that wait for the outside world"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a single self-bootstrapping node for development.
    Dev {
        #[command(flatten)]
        local: LocalNode,
        /// Serve Prometheus metrics on this address (`GET /metrics`).
        #[arg(long, env = "HALTER_METRICS_ADDR")]
        metrics_addr: Option<String>,
    },
    /// Run a cluster member.
    Start(StartArgs),
    /// Make a new data directory from a backup (`halterctl cluster backup FILE`): the state of
    /// a new one-node cluster, node NODE_ID at the given addresses. Start it with `halter dev`
    /// (the defaults match) or `halter start` on the same id and addresses, without
    /// initial members; add more nodes with `halterctl cluster add`.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        #[arg(long, env = "HALTER_NODE_ID", default_value_t = 1)]
        node_id: u64,
        #[command(flatten)]
        local: LocalNode,
    },
}

/// Where a `halter dev` node lives, with its defaults; `restore` shares them, so a restored
/// directory starts with `halter dev` as it is.
#[derive(clap::Args)]
struct LocalNode {
    #[arg(long, env = "HALTER_DATA_DIR", default_value = "halter-data")]
    data_dir: PathBuf,
    #[arg(long, env = "HALTER_CLIENT_ADDR", default_value = "127.0.0.1:2023")]
    client_addr: String,
    #[arg(long, env = "HALTER_PEER_ADDR", default_value = "127.0.0.1:2033")]
    peer_addr: String,
}

#[derive(clap::Args)]
struct StartArgs {
    /// TOML file with the keys below; flags and variables override it.
    #[arg(long, env = "HALTER_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "HALTER_NODE_ID")]
    node_id: Option<u64>,
    #[arg(long, env = "HALTER_CLIENT_ADDR")]
    client_addr: Option<String>,
    #[arg(long, env = "HALTER_PEER_ADDR")]
    peer_addr: Option<String>,
    #[arg(long, env = "HALTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Comma-separated ID@PEER_ADDR@CLIENT_ADDR.
    #[arg(long, env = "HALTER_INITIAL_MEMBERS", value_delimiter = ',')]
    initial_members: Vec<String>,
    #[arg(long, env = "HALTER_REQUEST_DEADLINE_MS")]
    request_deadline_ms: Option<u64>,
    #[arg(long, env = "HALTER_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    #[arg(long, env = "HALTER_ELECTION_TIMEOUT_MS")]
    election_timeout_ms: Option<u64>,
    #[arg(long, env = "HALTER_SNAPSHOT_AFTER_LOGS")]
    snapshot_after_logs: Option<u64>,
    #[arg(long, env = "HALTER_KEEP_LOGS_AFTER_SNAPSHOT")]
    keep_logs_after_snapshot: Option<u64>,
    #[arg(long, env = "HALTER_SYNC_STATE_EVERY_APPLIES")]
    sync_state_every_applies: Option<u64>,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long, env = "HALTER_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// This node's certificate chain (PEM): both ports then serve TLS only.
    #[arg(long, env = "HALTER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "HALTER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The CA that signs the cluster's certificates (PEM): peers and administrators must
    /// present a certificate it signed.
    #[arg(long, env = "HALTER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Require LittleHorse clients to present a certificate this CA signed (PEM).
    #[arg(long, env = "HALTER_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
}

fn build_config(a: StartArgs) -> anyhow::Result<Config> {
    let mut table: toml::Table = match &a.config {
        Some(p) => toml::from_str(&std::fs::read_to_string(p)?)?,
        None => toml::Table::new(),
    };
    let mut set = |k: &str, v: toml::Value| {
        table.insert(k.to_string(), v);
    };
    if let Some(v) = a.node_id {
        set("node_id", toml::Value::Integer(v as i64));
    }
    if let Some(v) = a.client_addr {
        set("client_addr", v.into());
    }
    if let Some(v) = a.peer_addr {
        set("peer_addr", v.into());
    }
    if let Some(v) = a.metrics_addr {
        set("metrics_addr", v.into());
    }
    for (k, v) in [
        ("data_dir", a.data_dir),
        ("tls_cert", a.tls_cert),
        ("tls_key", a.tls_key),
        ("tls_ca", a.tls_ca),
        ("tls_client_ca", a.tls_client_ca),
    ] {
        if let Some(v) = v {
            set(k, v.display().to_string().into());
        }
    }
    for (k, v) in [
        ("request_deadline_ms", a.request_deadline_ms),
        ("heartbeat_ms", a.heartbeat_ms),
        ("election_timeout_ms", a.election_timeout_ms),
        ("snapshot_after_logs", a.snapshot_after_logs),
        ("keep_logs_after_snapshot", a.keep_logs_after_snapshot),
        ("sync_state_every_applies", a.sync_state_every_applies),
    ] {
        if let Some(v) = v {
            set(k, toml::Value::Integer(v as i64));
        }
    }
    if !a.initial_members.is_empty() {
        let members = a
            .initial_members
            .iter()
            .map(|m| Member::parse(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        let arr = members
            .into_iter()
            .map(|m| {
                let mut t = toml::Table::new();
                t.insert("id".into(), toml::Value::Integer(m.id as i64));
                t.insert("peer_addr".into(), m.peer_addr.into());
                t.insert("client_addr".into(), m.client_addr.into());
                toml::Value::Table(t)
            })
            .collect();
        set("initial_members", toml::Value::Array(arr));
    }
    Ok(toml::Value::Table(table).try_into()?)
}

async fn wait_for_signal() {
    #[cfg(all(unix, not(madsim)))]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(any(not(unix), madsim))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Worker threads of the node's runtime unless `HALTER_WORKER_THREADS` says otherwise. More than
/// cores: Raft's log append and the apply transaction block their worker thread in fsync, and
/// the gRPC services must keep running meanwhile.
#[cfg(not(madsim))]
const DEFAULT_WORKER_THREADS: usize = 8;

#[cfg(not(madsim))]
fn main() -> anyhow::Result<()> {
    let workers = std::env::var("HALTER_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_WORKER_THREADS);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(run())
}

#[cfg(madsim)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run().await
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match Cli::parse().cmd {
        Cmd::Dev {
            local,
            metrics_addr,
        } => Config {
            metrics_addr,
            ..Config::dev(local.data_dir, local.client_addr, local.peer_addr)
        },
        Cmd::Start(a) => build_config(a)?,
        Cmd::Restore {
            from,
            node_id,
            local,
        } => {
            anyhow::ensure!(node_id > 0, "--node-id must be above 0");
            let node = halter_node::raft::HalterNode {
                peer_addr: local.peer_addr,
                client_addr: local.client_addr,
            };
            let data_dir = local.data_dir;
            let r = halter_node::backup::restore(&from, &data_dir, node_id, node).await?;
            println!(
                "restored {} rows applied up to index {} (term {}) into {} as node {node_id}",
                r.rows,
                r.applied.index,
                r.applied.leader_id.term,
                data_dir.display()
            );
            return Ok(());
        }
    };
    let node = halter_node::server::start(cfg).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// clap checks an argument definition only when its subcommand runs; this walks them all.
    #[test]
    fn every_subcommand_s_arguments_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
