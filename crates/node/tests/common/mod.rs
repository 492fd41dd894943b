//! A cluster of real `halter` processes on 127.0.0.1, each with its own data directory, and gRPC
//! clients to them. `kill` is SIGKILL: no graceful shutdown, nothing flushed that was not already.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use halter_api::halter::{cluster_client::ClusterClient, ClusterStatus, Empty};
use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_node::raft::network::PeerConnector;
use tonic::transport::Channel;

pub struct Node {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
    pub extra_args: Vec<String>,
    /// How the test's clients connect (plain, or TLS for a cluster started with certificates).
    pub connector: PeerConnector,
}

/// A port below Linux's ephemeral range (32768-60999). A port the OS picks for `bind(0)` lies in
/// that range, and between choosing it and the node binding it an outgoing connection of any
/// process on the machine (nextest runs several cluster tests at once) could take it; the node
/// then fails to start and the test waits in vain for a leader. Each test process walks its own
/// sequence from a pid-derived start and hands out a port only if it can be bound now.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    const SPAN: u32 = 32_768 - LOW;
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    loop {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Starts `n` nodes that bootstrap one cluster together.
    pub fn start(n: u64, extra_args: &[&str]) -> Cluster {
        Self::start_in(
            tempfile::tempdir().unwrap(),
            n,
            extra_args,
            PeerConnector::default(),
        )
    }

    /// Starts `n` nodes in `dir` (where a test may have put certificates), with the test's
    /// clients connecting through `connector`.
    pub fn start_in(
        dir: tempfile::TempDir,
        n: u64,
        extra_args: &[&str],
        connector: PeerConnector,
    ) -> Cluster {
        let nodes: Vec<Node> = (1..=n)
            .map(|id| Node {
                id,
                client_addr: format!("127.0.0.1:{}", free_port()),
                peer_addr: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("node{id}")),
                child: None,
            })
            .collect();
        let mut c = Cluster {
            nodes,
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            connector,
        };
        for i in 0..c.nodes.len() {
            c.spawn(i, true);
        }
        c
    }

    fn members(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}@{}@{}", n.id, n.peer_addr, n.client_addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (Re)starts node `i` on its data directory. `initial` passes the initial members.
    pub fn spawn(&mut self, i: usize, initial: bool) {
        let members = self.members();
        let n = &mut self.nodes[i];
        let log = std::fs::File::create(self.dir.path().join(format!("node{}.log", n.id))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_halter"));
        cmd.arg("start")
            .arg("--node-id")
            .arg(n.id.to_string())
            .arg("--client-addr")
            .arg(&n.client_addr)
            .arg("--peer-addr")
            .arg(&n.peer_addr)
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log);
        if initial {
            cmd.arg("--initial-members").arg(members);
        }
        n.child = Some(cmd.spawn().expect("spawn halter"));
    }

    /// Adds a node that is not part of the initial members (it waits to be added).
    pub fn add_node(&mut self) -> usize {
        let id = self.nodes.len() as u64 + 1;
        self.nodes.push(Node {
            id,
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("node{id}")),
            child: None,
        });
        let i = self.nodes.len() - 1;
        self.spawn(i, false);
        i
    }

    /// Runs `halter restore` of `backup` into a new data directory for the next node id, on new
    /// ports; on success the node is added (not started). Returns the command's output.
    pub fn restore(&mut self, backup: &std::path::Path) -> (std::process::Output, Node) {
        let id = self.nodes.len() as u64 + 1;
        let node = Node {
            id,
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("node{id}")),
            child: None,
        };
        let out = Command::new(env!("CARGO_BIN_EXE_halter"))
            .arg("restore")
            .arg("--from")
            .arg(backup)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--client-addr")
            .arg(&node.client_addr)
            .arg("--peer-addr")
            .arg(&node.peer_addr)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run halter restore");
        (out, node)
    }

    /// Adds `node` (made by [`Cluster::restore`]) and starts it; returns its index.
    pub fn start_restored(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        self.spawn(i, false);
        i
    }

    /// Waits until node `i` accepts connections on both its ports, as an operator would before
    /// adding it to the cluster: a process just spawned on a busy machine may not listen yet.
    pub async fn wait_listening(&self, i: usize, timeout: Duration) {
        let start = Instant::now();
        let n = &self.nodes[i];
        loop {
            let up = |a: &str| std::net::TcpStream::connect(a).is_ok();
            if up(&n.client_addr) && up(&n.peer_addr) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "node {} is not listening after {timeout:?}\n{}",
                n.id,
                self.log_tails(30)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("node{}.log", self.nodes[i].id)),
        )
        .unwrap_or_default()
    }

    /// The last `n` lines of every node's log, for a failure message.
    pub fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            let log = self.log(i);
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- node {} ---\n", self.nodes[i].id));
            for l in &lines[lines.len().saturating_sub(n)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    pub async fn client(&self, i: usize) -> LittleHorseClient<Channel> {
        let ch = self.connector.channel(&self.nodes[i].client_addr).unwrap();
        LittleHorseClient::new(ch)
    }

    pub async fn admin(&self, i: usize) -> ClusterClient<Channel> {
        ClusterClient::new(self.connector.channel(&self.nodes[i].peer_addr).unwrap())
    }

    pub async fn status(&self, i: usize) -> Option<ClusterStatus> {
        let mut a = self.admin(i).await;
        let mut req = tonic::Request::new(Empty {});
        req.set_timeout(Duration::from_millis(500));
        a.status(req).await.ok().map(|r| r.into_inner())
    }

    /// Waits until every running node agrees on one leader; returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            let mut leaders = Vec::new();
            for (i, n) in self.nodes.iter().enumerate() {
                if n.child.is_some() {
                    leaders.push((i, self.status(i).await.and_then(|s| s.leader_id)));
                }
            }
            if let Some((_, Some(l))) = leaders.first() {
                if leaders.iter().all(|(_, x)| *x == Some(*l)) {
                    let idx = self.nodes.iter().position(|n| n.id == *l).unwrap();
                    if self.nodes[idx].child.is_some() {
                        return idx;
                    }
                }
            }
            assert!(
                start.elapsed() < timeout,
                "no agreed leader within {timeout:?}: {leaders:?}\n{}",
                self.log_tails(8)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `i` has applied at least `index`.
    pub async fn wait_applied(&self, i: usize, index: u64, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status(i).await {
                if s.last_applied_index.unwrap_or(0) >= index {
                    return;
                }
            }
            assert!(
                start.elapsed() < timeout,
                "node {i} did not apply {index} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Test certificates, as PEM: a CA, a certificate it signed for 127.0.0.1 (the nodes' and
/// the test clients' identity), and a certificate signed by an unrelated CA.
pub struct Pki {
    pub ca: String,
    pub cert: String,
    pub key: String,
    pub stranger_cert: String,
    pub stranger_key: String,
}

impl Pki {
    pub fn generate() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let issuer = || {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let leaf = |ca: &CertifiedIssuer<'_, KeyPair>| {
            let key = KeyPair::generate().unwrap();
            let params =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
            (
                params.signed_by(&key, ca).unwrap().pem(),
                key.serialize_pem(),
            )
        };
        let (ca, stranger_ca) = (issuer(), issuer());
        let (cert, key) = leaf(&ca);
        let (stranger_cert, stranger_key) = leaf(&stranger_ca);
        Pki {
            ca: ca.pem(),
            cert,
            key,
            stranger_cert,
            stranger_key,
        }
    }
}
