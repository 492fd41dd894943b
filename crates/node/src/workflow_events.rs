//! `AwaitWorkflowEvent`: a call held on the node that received it until its WfRun throws a
//! matching WorkflowEvent.
//!
//! Every node applies every entry, so the node holding the call learns of a thrown event from
//! its own state machine (`StateMachineStore::workflow_events`, the WfRuns each apply threw
//! in), with no message from the leader. The first look passes the read barrier, so an event
//! thrown before the call began (by a write acknowledged to anyone) is found at once; later
//! ones wake the call as this node applies them. Only the calls held for a WfRun that threw
//! look again: a thousand clients each waiting on their own WfRun cost one read per throw, not
//! a thousand.

use std::time::Duration;

use halter_api::littlehorse::{AwaitWorkflowEventRequest, WorkflowEvent};
use halter_state_machine::query;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::proposer::NodeCtx;
use crate::status::to_status;

/// How long a call waits for its event before `DEADLINE_EXCEEDED`, unless the client's own
/// deadline ends it sooner. LittleHorse also ends an idle wait on its own; a minute keeps a
/// forgotten call from holding a stream for ever.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

pub async fn await_event(
    ctx: &NodeCtx,
    req: &AwaitWorkflowEventRequest,
) -> Result<WorkflowEvent, Status> {
    query::check_await_workflow_event(req).map_err(|r| to_status(&r))?;
    let wf = req
        .wf_run_id
        .as_ref()
        .map(halter_api::wf_run_id::key_of)
        .unwrap_or_default();
    let wf: &str = &wf;
    let give_up = tokio::time::Instant::now() + MAX_WAIT;
    // Subscribed before the first look: a throw applied after that look is in the channel, so
    // no event falls between a look and the wait.
    let mut thrown = ctx.sm.workflow_events.subscribe();
    ctx.read_barrier().await?;
    loop {
        if let Some(event) = ctx.read(|t| query::first_workflow_event(t, req))? {
            return Ok(event);
        }
        loop {
            tokio::select! {
                msg = thrown.recv() => match msg {
                    Ok(Some(wfs)) if !wfs.contains(wf) => continue,
                    // This WfRun threw, a snapshot replaced the state, or the call fell behind
                    // the channel: look again.
                    Ok(_) | Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => {
                        return Err(Status::unavailable("the node is shutting down"));
                    }
                },
                _ = tokio::time::sleep_until(give_up) => {
                    return Err(Status::deadline_exceeded(
                        "No matching WorkflowEvent thrown within deadline",
                    ));
                }
            }
        }
    }
}
