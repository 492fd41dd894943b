//! The internal `halter.Cluster` service on the peer address: Raft RPCs, forwarded commands
//! and read barriers, and cluster administration (forwarded to the leader when needed).

use std::collections::BTreeSet;
use std::sync::Arc;

use halter_api::halter::{
    cluster_server::Cluster, command_result, AddLearnerRequest, BackupChunk,
    ChangeMembershipRequest, ClusterStatus, Command, CommandResult, Empty, NodeInfo,
    ProposeBatchReply, ProposeBatchRequest, RaftPayload, ReadIndexReply, ReadIndexRequest,
    RejectionInfo, SavedVoteReply, StateDigestReply,
};
use openraft::ServerState;
use tonic::{Request, Response, Status};

use crate::proposer::{to_result, NodeCtx, ProposeError};
use crate::raft::HalterNode;

pub struct ClusterService {
    pub ctx: Arc<NodeCtx>,
}

fn decode<T: serde::de::DeserializeOwned>(p: RaftPayload) -> Result<T, Status> {
    bincode::deserialize(&p.data)
        .map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    bincode::serialize(v)
        .map(|data| Response::new(RaftPayload { data }))
        .map_err(|e| Status::internal(e.to_string()))
}

pub fn status_of(ctx: &NodeCtx) -> ClusterStatus {
    let m = ctx.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let info = |(id, n): (&u64, &HalterNode)| NodeInfo {
        id: *id,
        peer_addr: n.peer_addr.clone(),
        client_addr: n.client_addr.clone(),
    };
    ClusterStatus {
        node_id: ctx.id,
        leader_id: m.current_leader,
        term: m.current_term,
        state: format!("{:?}", m.state),
        last_log_index: m.last_log_index,
        last_applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        voters: membership
            .nodes()
            .filter(|(id, _)| voters.contains(id))
            .map(info)
            .collect(),
        learners: membership
            .nodes()
            .filter(|(id, _)| !voters.contains(id))
            .map(info)
            .collect(),
    }
}

impl ClusterService {
    /// Runs an admin call on the leader: here if we lead, else forwarded.
    async fn leader_client(
        &self,
    ) -> Result<
        Option<halter_api::halter::cluster_client::ClusterClient<tonic::transport::Channel>>,
        Status,
    > {
        match self.ctx.leader() {
            Some((id, _)) if id == self.ctx.id => Ok(None),
            Some((_, node)) => self.ctx.peer(&node.peer_addr).map(Some),
            None => Err(Status::unavailable("no leader right now")),
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req.into_inner())?;
        encode(&self.ctx.raft.append_entries(rpc).await)
    }

    // The simulator's generated trait names the stream type; tonic's (with default stubs) fixes
    // it to its BoxStream (as for `PollTask`).
    #[cfg(madsim)]
    type AppendEntriesStreamStream = tonic::codegen::BoxStream<RaftPayload>;

    /// Answers each AppendEntries of the stream in turn. A bad message or a closed stream ends
    /// it; the leader opens a new one (or calls `AppendEntries`).
    async fn append_entries_stream(
        &self,
        req: Request<tonic::Streaming<RaftPayload>>,
    ) -> Result<Response<tonic::codegen::BoxStream<RaftPayload>>, Status> {
        let ctx = self.ctx.clone();
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RaftPayload, Status>>(1);
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let reply = match decode(msg) {
                    Ok(rpc) => {
                        encode(&ctx.raft.append_entries(rpc).await).map(Response::into_inner)
                    }
                    Err(s) => Err(s),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
        ))))
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req.into_inner())?;
        encode(&self.ctx.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req.into_inner())?;
        encode(&self.ctx.raft.install_snapshot(rpc).await)
    }

    #[tracing::instrument(skip_all, name = "cluster.propose")]
    async fn propose(&self, req: Request<Command>) -> Result<Response<CommandResult>, Status> {
        let cmd = req.into_inner();
        if cmd.format_version > halter_api::LOG_FORMAT_VERSION {
            return Err(Status::failed_precondition(
                "command from a newer log format",
            ));
        }
        match self.ctx.propose_local(cmd).await {
            Ok(r) => Ok(Response::new(to_result(r))),
            Err(ProposeError::NotLeader) => Err(Status::unavailable("not the leader any more")),
            Err(ProposeError::Status(s)) => Err(s),
        }
    }

    #[tracing::instrument(skip_all, name = "cluster.propose_batch", fields(commands))]
    async fn propose_batch(
        &self,
        req: Request<ProposeBatchRequest>,
    ) -> Result<Response<ProposeBatchReply>, Status> {
        let cmds = req.into_inner().commands;
        tracing::Span::current().record("commands", cmds.len());
        if cmds
            .iter()
            .any(|c| c.format_version > halter_api::LOG_FORMAT_VERSION)
        {
            return Err(Status::failed_precondition(
                "command from a newer log format",
            ));
        }
        if !matches!(self.ctx.leader(), Some((id, _)) if id == self.ctx.id) {
            return Err(Status::unavailable("not the leader"));
        }
        // All queued at once, in order, so they share entries; then each outcome awaited.
        let pending: Vec<_> = cmds.into_iter().map(|c| self.ctx.queue_local(c)).collect();
        let mut reply = ProposeBatchReply::default();
        for (i, p) in pending.into_iter().enumerate() {
            let result = match p {
                Ok(rx) => crate::proposer::outcome(rx).await,
                Err(e) => Err(e),
            };
            reply.results.push(match result {
                Ok(r) => to_result(r),
                Err(ProposeError::NotLeader) => {
                    reply.retry.push(i as u32);
                    CommandResult::default()
                }
                Err(ProposeError::Status(s)) => CommandResult {
                    result: Some(command_result::Result::Rejection(RejectionInfo {
                        code: s.code() as i32,
                        message: s.message().to_string(),
                    })),
                },
            });
        }
        Ok(Response::new(reply))
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        let req = req.into_inner();
        // An older follower sends no fields: it does not count, and the read takes a round.
        let follower = (req.follower_id != 0).then_some((req.follower_id, req.follower_vote_term));
        let index = self.ctx.read_index(follower).await?;
        Ok(Response::new(ReadIndexReply { index }))
    }

    async fn saved_vote(&self, _: Request<Empty>) -> Result<Response<SavedVoteReply>, Status> {
        let term = self.ctx.fence.vote_term();
        Ok(Response::new(SavedVoteReply {
            term,
            node_id: self.ctx.id,
        }))
    }

    async fn status(&self, _: Request<Empty>) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(status_of(&self.ctx)))
    }

    #[tracing::instrument(skip_all, name = "cluster.add_learner")]
    async fn add_learner(
        &self,
        req: Request<AddLearnerRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        if let Some(mut leader) = self.leader_client().await? {
            return leader.add_learner(req.into_inner()).await;
        }
        let node = req
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("missing node"))?;
        if node.id == 0 || node.peer_addr.is_empty() || node.client_addr.is_empty() {
            return Err(Status::invalid_argument(
                "node needs an id > 0, a peer_addr and a client_addr",
            ));
        }
        let n = HalterNode {
            peer_addr: node.peer_addr,
            client_addr: node.client_addr,
        };
        self.ctx
            .raft
            .add_learner(node.id, n, true)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(status_of(&self.ctx)))
    }

    #[tracing::instrument(skip_all, name = "cluster.change_membership")]
    async fn change_membership(
        &self,
        req: Request<ChangeMembershipRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        if let Some(mut leader) = self.leader_client().await? {
            return leader.change_membership(req.into_inner()).await;
        }
        let req = req.into_inner();
        if req.voters.is_empty() && req.remove_learners.is_empty() {
            return Err(Status::invalid_argument(
                "give the new voters or the learners to remove",
            ));
        }
        let m = self.ctx.raft.metrics().borrow().clone();
        let current_voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        if !req.remove_learners.is_empty() {
            let remove: BTreeSet<u64> = req.remove_learners.iter().copied().collect();
            if let Some(v) = remove.iter().find(|id| current_voters.contains(id)) {
                return Err(Status::invalid_argument(format!(
                    "node {v} is a voter: leave it out of `voters` instead"
                )));
            }
            self.ctx
                .raft
                .change_membership(openraft::ChangeMembers::RemoveNodes(remove), false)
                .await
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
        }
        if !req.voters.is_empty() {
            let voters: BTreeSet<u64> = req.voters.into_iter().collect();
            self.ctx
                .raft
                .change_membership(voters, false)
                .await
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
        }
        Ok(Response::new(status_of(&self.ctx)))
    }

    async fn state_digest(&self, _: Request<Empty>) -> Result<Response<StateDigestReply>, Status> {
        let (applied, digest) = self
            .ctx
            .sm
            .digest()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StateDigestReply {
            applied_index: applied.map_or(0, |l| l.index),
            digest,
        }))
    }

    #[cfg(madsim)]
    type BackupStream = tonic::codegen::BoxStream<BackupChunk>;

    #[tracing::instrument(skip_all, name = "cluster.backup")]
    async fn backup(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<tonic::codegen::BoxStream<BackupChunk>>, Status> {
        crate::backup::export(&self.ctx).await.map(Response::new)
    }

    async fn trigger_election(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        let m = self.ctx.raft.metrics().borrow().clone();
        if m.state == ServerState::Learner {
            return Err(Status::failed_precondition(
                "a learner cannot become leader",
            ));
        }
        self.ctx
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }
}
