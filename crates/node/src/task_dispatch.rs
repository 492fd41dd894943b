//! Serving task workers: which hosts to poll, and the held polls themselves.
//!
//! A `PollTask` stream may reach any node. For each request the node looks at its own replica's
//! task queue and, when a task of the TaskDef waits, proposes `ClaimTask`; the committed claim
//! hands the oldest waiting attempt to exactly one worker, whichever node its poll is on. With
//! nothing queued the request is held (a long poll): it wakes when this node applies an entry
//! that queued a task, and re-checks every second in case a wake-up was missed. Only the held
//! polls are in memory; what was claimed, and when it times out, is replicated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use halter_api::halter::{command::Kind, ClaimTask, TaskWorkerHeartbeat};
use halter_api::littlehorse::{
    LhHostInfo, PollTaskRequest, PollTaskResponse, RegisterTaskWorkerRequest,
    RegisterTaskWorkerResponse, ScheduledTask,
};
use halter_api::names::check_name;
use halter_state_machine::{query, Response as Out};
use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming};

use crate::proposer::NodeCtx;

/// How often a held poll looks at the queue without being woken.
const RECHECK: Duration = Duration::from_secs(1);
/// How long a poll waits before proposing again after the cluster had no leader.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(200);

/// The stream type tonic's generated service expects.
pub type PollStream = tonic::codegen::BoxStream<PollTaskResponse>;

/// The client address of every member, as `host:port` a worker can dial. This node, listening
/// on an unspecified address (0.0.0.0), is given the address the request arrived on; another
/// member listening so, the IP of its peer address.
pub fn hosts(ctx: &NodeCtx, local: Option<SocketAddr>) -> Vec<LhHostInfo> {
    let metrics = ctx.raft.metrics().borrow().clone();
    let mut out = Vec::new();
    for (id, node) in metrics.membership_config.membership().nodes() {
        let Ok(addr) = node.client_addr.parse::<SocketAddr>() else {
            // A name rather than an IP: pass it on as it is.
            if let Some((host, port)) = node.client_addr.rsplit_once(':') {
                if let Ok(port) = port.parse::<i32>() {
                    out.push(LhHostInfo {
                        host: host.to_string(),
                        port,
                    });
                }
            }
            continue;
        };
        let peer_ip = node
            .peer_addr
            .parse::<SocketAddr>()
            .ok()
            .map(|p| p.ip())
            .filter(|ip| !ip.is_unspecified());
        let ip = match (addr.ip().is_unspecified(), *id == ctx.id) {
            (false, _) => addr.ip(),
            (true, true) => local.map_or(addr.ip(), |l| l.ip()),
            (true, false) => peer_ip.unwrap_or(addr.ip()),
        };
        out.push(LhHostInfo {
            host: ip.to_string(),
            port: i32::from(addr.port()),
        });
    }
    out
}

/// RegisterTaskWorker: the hosts to poll, never empty (a worker with no hosts never polls).
pub fn register(
    ctx: &NodeCtx,
    req: &RegisterTaskWorkerRequest,
    local: Option<SocketAddr>,
) -> Result<RegisterTaskWorkerResponse, Status> {
    let def = req
        .task_def_id
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("missing task_def_id"))?;
    check_name("TaskDef name", &def.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if req.task_worker_id.is_empty() {
        return Err(Status::invalid_argument("missing task_worker_id"));
    }
    let mut your_hosts = hosts(ctx, local);
    if your_hosts.is_empty() {
        // No membership known yet: at least this node, where the worker just got an answer.
        if let Some(l) = local {
            your_hosts.push(LhHostInfo {
                host: l.ip().to_string(),
                port: i32::from(l.port()),
            });
        }
    }
    if your_hosts.is_empty() {
        return Err(Status::unavailable(
            "this node does not know its cluster yet",
        ));
    }
    Ok(RegisterTaskWorkerResponse {
        your_hosts,
        is_cluster_healthy: None,
    })
}

/// How long RegisterTaskWorker waits for its heartbeat to commit before answering anyway.
const HEARTBEAT_WAIT: Duration = Duration::from_secs(3);

/// Records a RegisterTaskWorker call in its TaskDef's TaskWorkerGroup, waiting up to
/// [`HEARTBEAT_WAIT`] for the commit. The worker's answer (its hosts) does not depend on it, so
/// the call is answered even when the heartbeat cannot commit (no leader during an election, a
/// TaskDef deleted meanwhile): LittleHorse's SDKs wait a whole heartbeat interval (60 s) after
/// a failed RegisterTaskWorker before they poll at all.
pub async fn record_heartbeat(
    ctx: &NodeCtx,
    req: &RegisterTaskWorkerRequest,
    hosts: &[LhHostInfo],
) {
    let hb = TaskWorkerHeartbeat {
        task_def_name: req
            .task_def_id
            .as_ref()
            .map(|d| d.name.clone())
            .unwrap_or_default(),
        worker_id: req.task_worker_id.clone(),
        hosts: hosts.to_vec(),
    };
    match tokio::time::timeout(HEARTBEAT_WAIT, ctx.propose(Kind::TaskWorkerHeartbeat(hb))).await {
        Ok(Ok(_)) => {}
        Ok(Err(s)) => tracing::debug!(status = ?s, "task worker heartbeat not recorded"),
        Err(_) => tracing::debug!("task worker heartbeat not committed in time"),
    }
}

/// Serves one PollTask stream: each request is answered with one task, when there is one.
pub fn serve(ctx: Arc<NodeCtx>, mut inbound: Streaming<PollTaskRequest>) -> PollStream {
    let (tx, rx) = mpsc::channel::<Result<PollTaskResponse, Status>>(2);
    tokio::spawn(async move {
        loop {
            let req = match inbound.message().await {
                Ok(Some(r)) => r,
                // The worker closed its side.
                Ok(None) => return,
                // A broken or undecodable request: end with an error, never with OK.
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            };
            let answer = tokio::select! {
                a = next_task(&ctx, &req) => a,
                _ = tx.closed() => return,
            };
            let msg = answer.map(|t| PollTaskResponse { result: Some(t) });
            let failed = msg.is_err();
            if tx.send(msg).await.is_err() || failed {
                // An error ends the stream (the worker reconnects); a stream is never ended
                // with OK, which the Python worker would take as "still connected".
                return;
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|m| (m, rx))
    }))
}

/// Waits until a task of the requested TaskDef is claimed for this worker.
async fn next_task(ctx: &NodeCtx, req: &PollTaskRequest) -> Result<ScheduledTask, Status> {
    let def = req
        .task_def_id
        .as_ref()
        .map(|d| d.name.clone())
        .ok_or_else(|| Status::invalid_argument("missing task_def_id"))?;
    check_name("TaskDef name", &def).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut woken = ctx.sm.tasks_queued.subscribe();
    loop {
        let queued = ctx.read(|t| query::task_queued(t, &def))?;
        if queued {
            let claim = Kind::ClaimTask(ClaimTask {
                task_def_name: def.clone(),
                worker_id: req.client_id.clone(),
                worker_version: req.task_worker_version.clone(),
            });
            match ctx.propose(claim).await {
                Ok(Out::ScheduledTask(Some(t))) => return Ok(t),
                // Another worker got it first, and the claim found the queue empty (or held
                // only attempts nobody waits for any more, which it removed): wait for the next
                // task (this replica may not have applied the winning claim yet, so looking
                // again at once would propose in vain).
                Ok(Out::ScheduledTask(None)) => {}
                Ok(other) => return Err(Status::internal(format!("unexpected {other:?}"))),
                Err(s) if s.code() == Code::Unavailable => {
                    tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
                    continue;
                }
                Err(s) => return Err(s),
            }
        }
        tokio::select! {
            changed = woken.changed() => {
                if changed.is_err() {
                    // The node is shutting down: no more wake-ups, only the recheck.
                    tokio::time::sleep(RECHECK).await;
                }
            }
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}
