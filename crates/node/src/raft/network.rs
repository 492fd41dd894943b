//! Raft traffic between nodes over the internal `halter.Cluster` gRPC service. openraft's
//! messages travel as bincode inside a protobuf envelope; the remote's `Result` comes back
//! the same way and a remote error is handed to openraft as `RemoteError`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use halter_api::halter::{cluster_client::ClusterClient, RaftPayload};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};
use tonic::transport::{Channel, Endpoint};

use super::read_fence::ReadFence;
use super::speculate::Followers;
use super::{HalterNode, NodeId, TypeConfig};

/// Largest message a node accepts from a peer (snapshot chunks and entry batches).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;

/// HTTP/2 flow-control windows between peers. A unary call starts with a fresh 64 KiB window;
/// an `AppendEntriesStream` carries one entry batch after another (tens of KiB each at 256 W1
/// clients) on one stream, and with the default window each would wait for the receiver's
/// WINDOW_UPDATE.
pub const PEER_STREAM_WINDOW: u32 = 4 << 20;
pub const PEER_CONNECTION_WINDOW: u32 = 8 << 20;

/// A lazily connected plain channel to `addr` (`host:port`).
pub fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    PeerConnector::default().channel(addr)
}

/// How a node connects to its peers: plain HTTP/2, or TLS that verifies the peer against the
/// cluster's CA and presents this node's certificate (`crate::tls`).
#[derive(Clone, Default)]
pub struct PeerConnector {
    #[cfg(not(madsim))]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl PeerConnector {
    #[cfg(not(madsim))]
    pub fn tls(tls: tonic::transport::ClientTlsConfig) -> Self {
        PeerConnector { tls: Some(tls) }
    }

    /// A lazily connected channel to `addr` (`host:port`).
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        #[cfg(not(madsim))]
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        #[cfg(madsim)]
        let scheme = "http";
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .initial_stream_window_size(PEER_STREAM_WINDOW)
            .initial_connection_window_size(PEER_CONNECTION_WINDOW);
        #[cfg(not(madsim))]
        let endpoint = match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone())?,
            None => endpoint,
        };
        Ok(endpoint.connect_lazy())
    }
}

/// Hands openraft its clients to the peers, all over one HTTP/2 connection per peer address.
///
/// openraft 0.9 asks for a new client not only per replication stream but for every leadership
/// check, which linearizable reads use when their confirmation from saved votes falls short
/// (`reads.rs`; until the fourteenth session, on every read round). A fresh lazy
/// channel per client meant a new TCP connection and HTTP/2 handshake per round and peer: at
/// 64 clients of W2 about a hundred a second to each follower, a few percent of every node's CPU
/// and a connection set-up on the read's path. A tonic `Channel` multiplexes calls and reconnects
/// by itself after a failure, so one per address serves every stream.
///
/// The same goes for `AppendEntriesStream`s: a client that is dropped (a leadership check's,
/// after its one heartbeat) leaves its stream in `streams` for the next client to the peer, so
/// the heartbeats of those leadership checks are stream messages too, not calls.
///
/// openraft's own network carries the speculator's [`Followers`], whose answers to the
/// early sends of the leader's entries stand in for sending them again (`speculate.rs`).
#[derive(Default)]
pub struct Network {
    connector: PeerConnector,
    channels: BTreeMap<String, Channel>,
    streams: StreamPool,
    followers: Option<Followers>,
    /// Where each commit index sent is recorded first (`read_fence`).
    fence: Option<Arc<ReadFence>>,
}

/// Idle append streams by peer address.
type StreamPool = Arc<Mutex<BTreeMap<String, Vec<AppendStream>>>>;

/// Most idle streams kept per peer: one per concurrent leadership check is plenty.
const IDLE_STREAMS: usize = 4;

impl Network {
    /// openraft's network, answering from `followers` where it can.
    pub fn speculating(
        followers: Followers,
        fence: Arc<ReadFence>,
        connector: PeerConnector,
    ) -> Self {
        Network {
            connector,
            followers: Some(followers),
            fence: Some(fence),
            ..Network::default()
        }
    }

    /// A network of the speculator's own, which records the commit indexes it sends.
    pub fn fenced(fence: Arc<ReadFence>, connector: PeerConnector) -> Self {
        Network {
            connector,
            fence: Some(fence),
            ..Network::default()
        }
    }

    fn channel(&mut self, addr: &str) -> Option<Channel> {
        if let Some(c) = self.channels.get(addr) {
            return Some(c.clone());
        }
        let c = self.connector.channel(addr).ok()?;
        self.channels.insert(addr.to_string(), c.clone());
        Some(c)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &HalterNode) -> PeerConn {
        PeerConn {
            target,
            node: node.clone(),
            client: self.channel(&node.peer_addr).map(|c| {
                ClusterClient::new(c)
                    .max_decoding_message_size(MAX_PEER_MESSAGE)
                    .max_encoding_message_size(MAX_PEER_MESSAGE)
            }),
            stream: None,
            no_stream: false,
            pool: self.streams.clone(),
            followers: self.followers.clone(),
            fence: self.fence.clone(),
        }
    }
}

impl Drop for PeerConn {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take().filter(|s| !s.awaiting) else {
            return;
        };
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(self.node.peer_addr.clone()).or_default();
        if idle.len() < IDLE_STREAMS {
            idle.push(stream);
        }
    }
}

/// A client openraft holds for one peer.
///
/// openraft keeps a replication stream's client for as long as it replicates to the peer and
/// sends it one AppendEntries after another (hundreds a second under load); a leadership
/// check's client makes one call. Appends go over an `AppendEntriesStream`, one message each
/// way instead of a gRPC call's headers, trailers, stream set-up and dispatch: the client's own,
/// or one an earlier client left in the pool.
pub struct PeerConn {
    target: NodeId,
    node: HalterNode,
    client: Option<ClusterClient<Channel>>,
    stream: Option<AppendStream>,
    /// The peer does not know `AppendEntriesStream` (an older node).
    no_stream: bool,
    pool: StreamPool,
    followers: Option<Followers>,
    fence: Option<Arc<ReadFence>>,
}

/// An open `AppendEntriesStream`: each request is answered in order.
struct AppendStream {
    tx: tokio::sync::mpsc::Sender<RaftPayload>,
    /// Only ever used through `&mut` (`get_mut`, no locking): the mutex makes the client `Sync`,
    /// as openraft requires, where the simulator's `Streaming` is not.
    rx: std::sync::Mutex<tonic::Streaming<RaftPayload>>,
    /// A request was sent and its answer not read: openraft dropped the call at its timeout.
    /// The answer may still come, so the stream is out of step and must not be used again.
    awaiting: bool,
}

type RpcErr<E> = RPCError<NodeId, HalterNode, E>;

/// A failed call: a peer we cannot reach backs off; anything else is a network error worth
/// retrying.
fn rpc_error<E: std::error::Error>(status: tonic::Status) -> RpcErr<E> {
    if matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
    ) {
        RPCError::Unreachable(Unreachable::new(&status))
    } else {
        RPCError::Network(NetworkError::new(&status))
    }
}

impl PeerConn {
    /// The peer's bincode-encoded `Result`, as openraft wants it.
    fn reply<Resp, E>(&self, data: &[u8]) -> Result<Resp, RpcErr<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, E> =
            bincode::deserialize(data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    /// One AppendEntries over this client's stream, opened first if need be. `None`: the peer
    /// has no such stream, use the unary call.
    async fn append_streamed(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Option<Result<AppendEntriesResponse<NodeId>, RpcErr<RaftError<NodeId>>>> {
        let ttl = option.hard_ttl();
        let data = match bincode::serialize(rpc) {
            Ok(d) => d,
            Err(e) => return Some(Err(RPCError::Network(NetworkError::new(&e)))),
        };
        if self.stream.as_ref().is_some_and(|s| s.awaiting) {
            self.stream = None;
        }
        // A pooled stream may have broken while idle (the peer restarted): then one retry on a
        // new stream, so a leadership check does not fail for that alone.
        let mut pooled = false;
        if self.stream.is_none() {
            let idle = self
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&self.node.peer_addr)
                .and_then(Vec::pop);
            pooled = idle.is_some();
            self.stream = idle;
        }
        // Only a pooled stream's retry needs a second copy of the request (tens of KiB per
        // batch under load), so the replication stream's own appends make none.
        let retry = pooled.then(|| data.clone());
        match (self.exchange(data, ttl).await, retry) {
            (Ok(reply), _) => Some(self.reply(&reply.data)),
            (Err(Some(_)), Some(data)) => match self.exchange(data, ttl).await {
                Ok(reply) => Some(self.reply(&reply.data)),
                Err(e) => e.map(|s| Err(rpc_error(s))),
            },
            (Err(e), _) => e.map(|s| Err(rpc_error(s))),
        }
    }

    /// Sends one append on this client's stream (opened first if it has none) and reads its
    /// answer. `Err(None)`: the peer has no such stream. After any failure the stream is gone.
    async fn exchange(
        &mut self,
        data: Vec<u8>,
        ttl: Duration,
    ) -> Result<RaftPayload, Option<tonic::Status>> {
        if self.stream.is_none() {
            let Some(client) = self.client.as_mut() else {
                return Err(None);
            };
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let outbound =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
                );
            match tokio::time::timeout(ttl, client.append_entries_stream(outbound)).await {
                Ok(Ok(resp)) => {
                    self.stream = Some(AppendStream {
                        tx,
                        rx: std::sync::Mutex::new(resp.into_inner()),
                        awaiting: false,
                    })
                }
                Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                    self.no_stream = true;
                    return Err(None);
                }
                Ok(Err(s)) => return Err(Some(s)),
                Err(_) => {
                    return Err(Some(tonic::Status::deadline_exceeded(
                        "opening the append stream",
                    )))
                }
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(None);
        };
        stream.awaiting = true;
        let exchange = async {
            stream
                .tx
                .send(RaftPayload { data })
                .await
                .map_err(|_| tonic::Status::unavailable("the append stream closed"))?;
            let rx = stream.rx.get_mut().unwrap_or_else(|e| e.into_inner());
            match rx.message().await {
                Ok(Some(m)) => Ok(m),
                Ok(None) => Err(tonic::Status::unavailable("the append stream ended")),
                Err(s) => Err(s),
            }
        };
        let status = match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(m)) => {
                stream.awaiting = false;
                return Ok(m);
            }
            Ok(Err(s)) => s,
            Err(_) => tonic::Status::deadline_exceeded("no answer on the append stream"),
        };
        self.stream = None;
        if status.code() == tonic::Code::Unimplemented {
            self.no_stream = true;
            return Err(None);
        }
        Err(Some(status))
    }

    /// One AppendEntries: on the stream if the peer has it, else as a call. Also used by the
    /// speculator (`speculate.rs`), which keeps clients of its own.
    pub(crate) async fn send_append(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        // Before the follower can learn it: see `read_fence`.
        if let (Some(fence), Some(commit)) = (&self.fence, &rpc.leader_commit) {
            fence.commit_seen(commit.index);
        }
        if !self.no_stream {
            if let Some(result) = self.append_streamed(rpc, option).await {
                return result;
            }
        }
        self.call("append", rpc, option).await
    }

    async fn call<Req, Resp, E>(
        &mut self,
        which: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(format!("bad peer address {}", self.node.peer_addr)),
            )));
        };
        let data = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let reply = match which {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(rpc_error)?;
        self.reply(&reply.into_inner().data)
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        let Some(followers) = self.followers.clone() else {
            return self.send_append(&rpc, &option).await;
        };
        // Half of openraft's time for the call at most, so that a send that is not answered
        // leaves time to send the request itself.
        let wait = option.hard_ttl() / 2;
        if let Some(answer) = followers.answer(self.target, &rpc, wait).await {
            return Ok(answer);
        }
        let result = self.send_append(&rpc, &option).await;
        if let Ok(AppendEntriesResponse::Success) = result {
            followers.sent(self.target, &rpc);
        }
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use halter_api::halter::cluster_server::{Cluster, ClusterServer};
    use halter_api::halter::{
        AddLearnerRequest, ChangeMembershipRequest, ClusterStatus, Command, CommandResult, Empty,
        ProposeBatchReply, ProposeBatchRequest, ReadIndexReply, ReadIndexRequest, SavedVoteReply,
        StateDigestReply,
    };
    use openraft::raft::AppendEntriesResponse;
    use openraft::Vote;
    use tonic::{Request, Response, Status};

    use super::*;

    /// A peer that grants every vote and answers nothing else.
    struct Voter;

    fn nothing<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    #[tonic::async_trait]
    impl Cluster for Voter {
        async fn append_entries(
            &self,
            _: Request<RaftPayload>,
        ) -> Result<Response<RaftPayload>, Status> {
            nothing()
        }
        async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            let rpc: VoteRequest<NodeId> = bincode::deserialize(&req.into_inner().data)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let reply: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
                Ok(VoteResponse::new(rpc.vote, None, true));
            Ok(Response::new(RaftPayload {
                data: bincode::serialize(&reply).map_err(|e| Status::internal(e.to_string()))?,
            }))
        }
        async fn install_snapshot(
            &self,
            _: Request<RaftPayload>,
        ) -> Result<Response<RaftPayload>, Status> {
            nothing()
        }
        async fn propose(&self, _: Request<Command>) -> Result<Response<CommandResult>, Status> {
            nothing()
        }
        async fn propose_batch(
            &self,
            _: Request<ProposeBatchRequest>,
        ) -> Result<Response<ProposeBatchReply>, Status> {
            nothing()
        }
        async fn read_index(
            &self,
            _: Request<ReadIndexRequest>,
        ) -> Result<Response<ReadIndexReply>, Status> {
            nothing()
        }
        async fn saved_vote(&self, _: Request<Empty>) -> Result<Response<SavedVoteReply>, Status> {
            nothing()
        }
        async fn status(&self, _: Request<Empty>) -> Result<Response<ClusterStatus>, Status> {
            nothing()
        }
        async fn add_learner(
            &self,
            _: Request<AddLearnerRequest>,
        ) -> Result<Response<ClusterStatus>, Status> {
            nothing()
        }
        async fn change_membership(
            &self,
            _: Request<ChangeMembershipRequest>,
        ) -> Result<Response<ClusterStatus>, Status> {
            nothing()
        }
        async fn state_digest(
            &self,
            _: Request<Empty>,
        ) -> Result<Response<StateDigestReply>, Status> {
            nothing()
        }
        async fn trigger_election(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
            nothing()
        }
    }

    /// Invariant: every client openraft asks for shares one connection per peer. A leadership
    /// check (each round of linearizable reads) asks for new clients; without the shared channel
    /// each of the rounds below would open its own TCP connection.
    #[tokio::test]
    async fn clients_to_one_peer_share_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let incoming = futures::stream::unfold(listener, move |l| {
            let counter = counter.clone();
            async move {
                let conn = l.accept().await.map(|(s, _)| s);
                counter.fetch_add(1, Ordering::SeqCst);
                Some((conn, l))
            }
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ClusterServer::new(Voter))
                .serve_with_incoming(incoming),
        );

        let mut network = Network::default();
        let node = HalterNode {
            peer_addr: addr,
            client_addr: String::new(),
        };
        for term in 1..=5 {
            let mut client = network.new_client(2, &node).await;
            let reply = client
                .vote(
                    VoteRequest::new(Vote::new(term, 1), None),
                    RPCOption::new(Duration::from_secs(5)),
                )
                .await
                .expect("the peer answers");
            assert!(reply.vote_granted);
            assert_eq!(reply.vote, Vote::new(term, 1));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A peer that answers AppendEntries, unary and streamed, with `HigherVote(request's vote)`
    /// (so an answer shows which request it belongs to), counting both kinds. With `slow`, the
    /// second streamed answer comes late.
    #[derive(Default)]
    struct Appender {
        with_stream: bool,
        slow: bool,
        unary: AtomicUsize,
        opened: AtomicUsize,
        streamed: Arc<AtomicUsize>,
    }

    fn answer(p: RaftPayload) -> Result<RaftPayload, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            bincode::deserialize(&p.data).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reply: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            Ok(AppendEntriesResponse::HigherVote(rpc.vote));
        Ok(RaftPayload {
            data: bincode::serialize(&reply).map_err(|e| Status::internal(e.to_string()))?,
        })
    }

    #[tonic::async_trait]
    impl Cluster for Appender {
        async fn append_entries(
            &self,
            req: Request<RaftPayload>,
        ) -> Result<Response<RaftPayload>, Status> {
            self.unary.fetch_add(1, Ordering::SeqCst);
            answer(req.into_inner()).map(Response::new)
        }
        async fn append_entries_stream(
            &self,
            req: Request<tonic::Streaming<RaftPayload>>,
        ) -> Result<Response<tonic::codegen::BoxStream<RaftPayload>>, Status> {
            if !self.with_stream {
                return nothing();
            }
            self.opened.fetch_add(1, Ordering::SeqCst);
            let (streamed, slow) = (self.streamed.clone(), self.slow);
            let mut inbound = req.into_inner();
            let answers = async_stream_of(move |tx| async move {
                while let Ok(Some(p)) = inbound.message().await {
                    if streamed.fetch_add(1, Ordering::SeqCst) == 1 && slow {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    if tx.send(answer(p)).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(answers))
        }
    }

    /// The answers a task sends, as a response stream.
    fn async_stream_of<F, Fut>(f: F) -> tonic::codegen::BoxStream<RaftPayload>
    where
        F: FnOnce(tokio::sync::mpsc::Sender<Result<RaftPayload, Status>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(f(tx));
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        }))
    }

    async fn serve(peer: Arc<Appender>) -> HalterNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("its address").to_string();
        let incoming = futures::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ClusterServer::from_arc(peer))
                .serve_with_incoming(incoming),
        );
        HalterNode {
            peer_addr: addr,
            client_addr: String::new(),
        }
    }

    /// A peer that has `AppendEntriesStream`, served on a port of its own.
    async fn streaming_peer() -> (Arc<Appender>, HalterNode) {
        let peer = Arc::new(Appender {
            with_stream: true,
            ..Default::default()
        });
        let node = serve(peer.clone()).await;
        (peer, node)
    }

    fn append(term: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new(term, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }
    }

    async fn send(client: &mut PeerConn, term: u64) -> AppendEntriesResponse<NodeId> {
        client
            .append_entries(append(term), RPCOption::new(Duration::from_secs(5)))
            .await
            .expect("the peer answers")
    }

    /// A replication stream's client sends every append over one stream, each answer matching
    /// its request.
    #[tokio::test]
    async fn a_kept_client_streams_its_appends() {
        let (peer, node) = streaming_peer().await;
        let mut client = Network::default().new_client(2, &node).await;
        for term in 1..=5 {
            assert_eq!(
                send(&mut client, term).await,
                AppendEntriesResponse::HigherVote(Vote::new(term, 1))
            );
        }
        assert_eq!(peer.unary.load(Ordering::SeqCst), 0);
        assert_eq!(peer.opened.load(Ordering::SeqCst), 1);
        assert_eq!(peer.streamed.load(Ordering::SeqCst), 5);
    }

    /// Leadership checks make a client per round and drop it after one heartbeat: each leaves
    /// its stream to the next, so five rounds open one stream.
    #[tokio::test]
    async fn clients_one_after_another_share_a_stream() {
        let (peer, node) = streaming_peer().await;
        let mut network = Network::default();
        for term in 1..=5 {
            let mut client = network.new_client(2, &node).await;
            assert_eq!(
                send(&mut client, term).await,
                AppendEntriesResponse::HigherVote(Vote::new(term, 1))
            );
        }
        assert_eq!(peer.opened.load(Ordering::SeqCst), 1);
        assert_eq!(peer.streamed.load(Ordering::SeqCst), 5);
    }

    /// An older peer, without the stream, gets every append as a call.
    #[tokio::test]
    async fn a_peer_without_the_stream_gets_calls() {
        let peer = Arc::new(Appender::default());
        let node = serve(peer.clone()).await;
        let mut client = Network::default().new_client(2, &node).await;
        for term in 1..=4 {
            assert_eq!(
                send(&mut client, term).await,
                AppendEntriesResponse::HigherVote(Vote::new(term, 1))
            );
        }
        assert_eq!(peer.unary.load(Ordering::SeqCst), 4);
    }

    /// Invariant: an append openraft gave up on (its timeout dropped the call) leaves its answer
    /// unread on the stream; the next append must not take that answer for its own, so it
    /// opens a new stream.
    #[tokio::test]
    async fn an_abandoned_append_does_not_answer_the_next() {
        let peer = Arc::new(Appender {
            with_stream: true,
            slow: true,
            ..Default::default()
        });
        let node = serve(peer.clone()).await;
        let mut client = Network::default().new_client(2, &node).await;
        send(&mut client, 1).await; // opens the stream
        let dropped = tokio::time::timeout(
            Duration::from_millis(50),
            client.append_entries(append(2), RPCOption::new(Duration::from_secs(5))),
        )
        .await;
        assert!(
            dropped.is_err(),
            "the slow answer should not arrive in time"
        );
        assert_eq!(
            send(&mut client, 3).await,
            AppendEntriesResponse::HigherVote(Vote::new(3, 1))
        );
        assert_eq!(peer.opened.load(Ordering::SeqCst), 2);
    }

    /// Invariant: openraft's network sends no entries the follower already acknowledged to the
    /// speculator under the same vote, and answers for it; anything beyond them, and every
    /// heartbeat (a leadership check must hear from the follower), goes to the peer.
    #[tokio::test]
    async fn entries_acknowledged_early_are_not_sent_again() {
        use crate::raft::speculate::Followers;
        use crate::raft::LogCommand;
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

        let (peer, node) = streaming_peer().await;
        let vote = Vote::new_committed(3, 1);
        let id = |index| LogId::new(CommittedLeaderId::new(3, 1), index);
        let followers = Followers::acknowledged(2, vote, id(6));
        let mut client = Network::speculating(followers, Arc::default(), PeerConnector::default())
            .new_client(2, &node)
            .await;
        let request = |entries: std::ops::RangeInclusive<u64>| AppendEntriesRequest {
            vote,
            prev_log_id: Some(id(*entries.start() - 1)),
            entries: entries
                .map(|i| Entry {
                    log_id: id(i),
                    payload: EntryPayload::Normal(LogCommand::One(vec![i as u8])),
                })
                .collect(),
            leader_commit: None,
        };
        let option = || RPCOption::new(Duration::from_secs(5));
        let sent = || peer.streamed.load(Ordering::SeqCst) + peer.unary.load(Ordering::SeqCst);

        let answer = client.append_entries(request(5..=6), option()).await;
        assert_eq!(answer.expect("answered"), AppendEntriesResponse::Success);
        assert_eq!(sent(), 0, "acknowledged entries are not sent again");

        // Entry 7 was never acknowledged: the peer answers (with its HigherVote marker).
        let answer = client.append_entries(request(6..=7), option()).await;
        assert_eq!(
            answer.expect("answered"),
            AppendEntriesResponse::HigherVote(vote)
        );
        assert_eq!(sent(), 1);

        let heartbeat = AppendEntriesRequest {
            entries: Vec::new(),
            ..request(7..=7)
        };
        let answer = client.append_entries(heartbeat, option()).await;
        assert_eq!(
            answer.expect("answered"),
            AppendEntriesResponse::HigherVote(vote)
        );
        assert_eq!(sent(), 2, "a heartbeat always reaches the follower");

        // Another vote's request for the same entries goes out too.
        let mut other = request(5..=6);
        other.vote = Vote::new_committed(4, 1);
        let answer = client.append_entries(other, option()).await;
        assert_eq!(
            answer.expect("answered"),
            AppendEntriesResponse::HigherVote(Vote::new_committed(4, 1))
        );
        assert_eq!(sent(), 3);
    }
}
