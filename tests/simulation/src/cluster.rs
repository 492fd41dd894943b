//! The simulated cluster: named nodes on their own simulated hosts, each with three simulated
//! disks (the Raft log, its WAL, the state) that survive restarts but lose unsynced writes when
//! the node is killed.

use std::net::IpAddr;
use std::time::Duration;

use halter_api::halter::{cluster_client::ClusterClient, ClusterStatus, Empty, StateDigestReply};
use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_node::config::{Config, Member};
use halter_node::server::{start_with, Storage};
use halter_storage::sim_disk::SimDisk;
use madsim::runtime::{Handle, NodeHandle};
use tonic::transport::{Channel, Endpoint};

pub const CLIENT_PORT: u16 = 2023;
pub const PEER_PORT: u16 = 2033;

pub struct SimNode {
    pub ip: IpAddr,
    pub handle: NodeHandle,
    pub log: SimDisk,
    pub wal: SimDisk,
    pub state: SimDisk,
    pub alive: bool,
}

pub struct Cluster {
    pub nodes: Vec<SimNode>,
}

/// Simulated hosts: these addresses exist only inside madsim's network.
pub fn node_ip(i: usize) -> IpAddr {
    IpAddr::from([10, 0, 0, (i + 1) as u8])
}

pub fn channel(addr: String) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid address")
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy()
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        let handle = Handle::current();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                id: i as u64 + 1,
                peer_addr: format!("{}:{PEER_PORT}", node_ip(i)),
                client_addr: format!("{}:{CLIENT_PORT}", node_ip(i)),
            })
            .collect();
        // How often a replica's state is made durable decides how much a crashed node replays:
        // often, as shipped, or as it was until the fifteenth session (which regression seed 307
        // found its bug with). Chosen by the seed without drawing from its random stream, so the
        // rest of a seed's run is what it was.
        let sync_every = [1024, 64, 4][(handle.seed() % 3) as usize];
        let nodes = (0..n)
            .map(|i| {
                let (log, wal, state) = (SimDisk::new(), SimDisk::new(), SimDisk::new());
                let (l, w, s, m) = (log.clone(), wal.clone(), state.clone(), members.clone());
                let node_handle = handle
                    .create_node()
                    .name(format!("node-{}", i + 1))
                    .ip(node_ip(i))
                    .init(move || {
                        let cfg = Config {
                            node_id: i as u64 + 1,
                            client_addr: format!("0.0.0.0:{CLIENT_PORT}"),
                            peer_addr: format!("0.0.0.0:{PEER_PORT}"),
                            data_dir: "/sim".into(),
                            initial_members: m.clone(),
                            request_deadline_ms: 3_000,
                            heartbeat_ms: 100,
                            election_timeout_ms: 400,
                            snapshot_after_logs: 300,
                            keep_logs_after_snapshot: 50,
                            sync_state_every_applies: sync_every,
                            ..Config::dev("/sim".into(), String::new(), String::new())
                        };
                        let storage = Storage::Sim {
                            log: l.clone(),
                            wal: w.clone(),
                            state: s.clone(),
                        };
                        async move {
                            let node = start_with(cfg, storage).await.expect("node starts");
                            std::future::pending::<()>().await;
                            drop(node);
                        }
                    })
                    .build();
                SimNode {
                    ip: node_ip(i),
                    handle: node_handle,
                    log,
                    wal,
                    state,
                    alive: true,
                }
            })
            .collect();
        Cluster { nodes }
    }

    /// Addresses only: what a client task on another simulated host needs.
    pub fn view(&self) -> ClusterView {
        ClusterView {
            ips: self.nodes.iter().map(|n| n.ip).collect(),
        }
    }

    /// A crash: the disks lose every write not synced (first, so that nothing the dying
    /// process flushes on its way out is saved), then the process dies.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].log.crash();
        self.nodes[i].wal.crash();
        self.nodes[i].state.crash();
        Handle::current().kill(self.nodes[i].handle.id());
        self.nodes[i].alive = false;
    }

    pub async fn restart(&mut self, i: usize) {
        // Let the killed incarnation's tasks go before the new one opens the disks.
        madsim::time::sleep(Duration::from_millis(100)).await;
        self.nodes[i].log.power_on();
        self.nodes[i].wal.power_on();
        self.nodes[i].state.power_on();
        Handle::current().restart(self.nodes[i].handle.id());
        self.nodes[i].alive = true;
    }

    pub fn clog(&self, i: usize) {
        madsim::net::NetSim::current().clog_node(self.nodes[i].handle.id());
    }

    pub fn unclog(&self, i: usize) {
        madsim::net::NetSim::current().unclog_node(self.nodes[i].handle.id());
    }

    pub fn clog_link(&self, a: usize, b: usize) {
        let net = madsim::net::NetSim::current();
        net.clog_link(self.nodes[a].handle.id(), self.nodes[b].handle.id());
        net.clog_link(self.nodes[b].handle.id(), self.nodes[a].handle.id());
    }

    pub fn unclog_link(&self, a: usize, b: usize) {
        let net = madsim::net::NetSim::current();
        net.unclog_link(self.nodes[a].handle.id(), self.nodes[b].handle.id());
        net.unclog_link(self.nodes[b].handle.id(), self.nodes[a].handle.id());
    }

    pub fn heal_network(&self) {
        for i in 0..self.nodes.len() {
            self.unclog(i);
            for j in 0..self.nodes.len() {
                if i != j {
                    self.unclog_link(i, j);
                }
            }
        }
    }
}

#[derive(Clone)]
pub struct ClusterView {
    pub ips: Vec<IpAddr>,
}

impl ClusterView {
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    pub fn lh(&self, i: usize) -> LittleHorseClient<Channel> {
        LittleHorseClient::new(channel(format!("{}:{CLIENT_PORT}", self.ips[i])))
    }

    pub fn admin(&self, i: usize) -> ClusterClient<Channel> {
        ClusterClient::new(channel(format!("{}:{PEER_PORT}", self.ips[i])))
    }
}

/// Calls with a deadline in simulated time (the simulated transport does not enforce one).
pub async fn within<T>(ms: u64, f: impl std::future::Future<Output = T>) -> Option<T> {
    madsim::time::timeout(Duration::from_millis(ms), f)
        .await
        .ok()
}

pub async fn status(c: &ClusterView, i: usize) -> Option<ClusterStatus> {
    let mut a = c.admin(i);
    within(300, a.status(Empty {}))
        .await?
        .ok()
        .map(|r| r.into_inner())
}

pub async fn digest(c: &ClusterView, i: usize) -> Option<StateDigestReply> {
    let mut a = c.admin(i);
    within(1000, a.state_digest(Empty {}))
        .await?
        .ok()
        .map(|r| r.into_inner())
}
