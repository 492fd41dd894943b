//! Raft traffic between nodes over the internal `halter.Cluster` gRPC service. openraft's
//! messages travel as bincode inside a protobuf envelope; the remote's `Result` comes back
//! the same way and a remote error is handed to openraft as `RemoteError`.

use std::collections::BTreeMap;
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

use super::{HalterNode, NodeId, TypeConfig};

/// Largest message a node accepts from a peer (snapshot chunks and entry batches).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;

/// A lazily connected channel to `addr` (`host:port`).
pub fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Hands openraft its clients to the peers, all over one HTTP/2 connection per peer address.
///
/// openraft 0.9 asks for a new client not only per replication stream but for every leadership
/// check, and a leadership check is what each round of linearizable reads costs. A fresh lazy
/// channel per client meant a new TCP connection and HTTP/2 handshake per round and peer: at
/// 64 clients of W2 about a hundred a second to each follower, a few percent of every node's CPU
/// and a connection set-up on the read's path. A tonic `Channel` multiplexes calls and reconnects
/// by itself after a failure, so one per address serves every stream.
#[derive(Default)]
pub struct Network {
    channels: BTreeMap<String, Channel>,
}

impl Network {
    fn channel(&mut self, addr: &str) -> Option<Channel> {
        if let Some(c) = self.channels.get(addr) {
            return Some(c.clone());
        }
        let c = channel(addr).ok()?;
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
        }
    }
}

pub struct PeerConn {
    target: NodeId,
    node: HalterNode,
    client: Option<ClusterClient<Channel>>,
}

type RpcErr<E> = RPCError<NodeId, HalterNode, E>;

impl PeerConn {
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
        let reply = reply.map_err(|status| {
            // A peer we cannot reach backs off; anything else is a network error worth retrying.
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ) {
                RPCError::Unreachable(Unreachable::new(&status))
            } else {
                RPCError::Network(NetworkError::new(&status))
            }
        })?;
        let result: Result<Resp, E> = bincode::deserialize(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
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
        ProposeBatchReply, ProposeBatchRequest, ReadIndexReply, StateDigestReply,
    };
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
        async fn read_index(&self, _: Request<Empty>) -> Result<Response<ReadIndexReply>, Status> {
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
}
