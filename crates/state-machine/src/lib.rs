//! Halter's deterministic core: one log entry in, state changes and effects out.
//!
//! [`apply`] is the only way state changes. It reads and writes nothing but the tables of the
//! redb write transaction it is given, takes time only from the entry ([`Command::proposed_at_ms`]),
//! and iterates only ordered collections, so every replica that applies the same entries ends
//! with byte-identical tables. A request the client got wrong is a [`Rejection`] and changes
//! nothing: every handler checks everything before its first write.
//!
//! The crate is split by command family: [`external_event_def`], [`external_event`],
//! [`correlated_event`], [`task`], [`user_task`], [`workflow_event`],
//! [`wf_spec`], [`wf_run`] (with the [`interpreter`] that moves threads), [`scheduled_wf_run`],
//! [`timers`], and the read side in [`query`].

pub mod checkpoint;
pub mod correlated_event;
pub mod ctx;
pub mod error;
pub mod expr;
pub mod external_event;
pub mod external_event_def;
pub mod indexes;
pub mod interpreter;
pub mod json_path;
pub mod mutation;
pub mod query;
pub mod run_state;
pub mod scheduled_wf_run;
pub mod task;
pub mod task_run_index;
pub mod task_worker_group;
pub mod time;
pub mod timers;
pub mod user_task;
pub mod variable_index;
pub mod wf_run;
pub mod wf_spec;
pub mod workflow_event;

use halter_api::halter::{command::Kind, timer, Command, FireTimers};
use halter_api::littlehorse::{
    CorrelatedEvent, ExternalEvent, ExternalEventDef, PutCheckpointResponse, ScheduledTask,
    ScheduledWfRun, TaskDef, UserTaskDef, UserTaskRun, WfRun, WfSpec, WorkflowEventDef,
};
use halter_api::LOG_FORMAT_VERSION;
use halter_storage::{tables::meta, Tables};
use redb::ReadableTable;

pub use ctx::{Ctx, Effect};
pub use error::{ApplyError, Rejection};

use error::{HResult, Outcome};

/// What a successful command answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    ExternalEventDef(ExternalEventDef),
    ExternalEvent(ExternalEvent),
    WfSpec(WfSpec),
    WfRun(WfRun),
    ScheduledWfRun(ScheduledWfRun),
    CorrelatedEvent(CorrelatedEvent),
    TaskDef(TaskDef),
    WorkflowEventDef(WorkflowEventDef),
    UserTaskDef(UserTaskDef),
    UserTaskRun(UserTaskRun),
    PutCheckpoint(PutCheckpointResponse),
    /// A claim's result: the task handed out, or none left.
    ScheduledTask(Option<ScheduledTask>),
    Empty,
    /// How many of the listed timers fired.
    TimersFired(usize),
}

/// The result of applying one entry.
#[derive(Debug)]
pub struct Applied {
    pub response: Result<Response, Rejection>,
    pub effects: Vec<Effect>,
}

/// Builds a command of the current format (the node stamps `now_ms` with its clock).
pub fn command(kind: Kind, now_ms: i64) -> Command {
    Command {
        format_version: LOG_FORMAT_VERSION,
        proposed_at_ms: now_ms,
        kind: Some(kind),
    }
}

/// Applies one command to the open tables.
///
/// An `Err` is fatal for the node (storage failed, or the entry is from a newer format); a
/// rejected request is `Ok` with `response: Err(..)`, and then nothing was written.
pub fn apply(tables: &mut Tables<'_>, cmd: &Command) -> Result<Applied, ApplyError> {
    if cmd.format_version > LOG_FORMAT_VERSION {
        return Err(ApplyError::UnsupportedFormat {
            found: cmd.format_version,
            supported: LOG_FORMAT_VERSION,
        });
    }
    let clock = tables
        .meta
        .open()?
        .get(meta::CLOCK_MS)?
        .map(|g| g.value() as i64);
    // Applied time never goes backwards, whatever a new leader's clock says.
    let now_ms = clock.map_or(cmd.proposed_at_ms, |c| c.max(cmd.proposed_at_ms));
    let mut ctx = Ctx::new(tables, now_ms);
    match dispatch(&mut ctx, cmd) {
        Ok(response) => {
            ctx.flush_nodes()?;
            if clock != Some(now_ms) {
                ctx.tables
                    .meta
                    .open_mut()?
                    .insert(meta::CLOCK_MS, now_ms.max(0) as u64)?;
            }
            Ok(Applied {
                response: Ok(response),
                effects: ctx.effects,
            })
        }
        Err(Outcome::Rejected(r)) => Ok(Applied {
            response: Err(r),
            effects: Vec::new(),
        }),
        Err(Outcome::Fatal(e)) => Err(e),
    }
}

fn dispatch(ctx: &mut Ctx, cmd: &Command) -> HResult<Response> {
    let response = dispatch_kind(ctx, cmd)?;
    interpreter::child_wf_runs::wake_parents(ctx)?;
    Ok(response)
}

fn dispatch_kind(ctx: &mut Ctx, cmd: &Command) -> HResult<Response> {
    let Some(kind) = &cmd.kind else {
        return Err(error::invalid("empty command").into());
    };
    Ok(match kind {
        Kind::PutExternalEventDef(r) => {
            Response::ExternalEventDef(external_event_def::put(ctx, r)?)
        }
        Kind::DeleteExternalEventDef(r) => {
            external_event_def::delete(ctx, r)?;
            Response::Empty
        }
        Kind::PutExternalEvent(r) => Response::ExternalEvent(external_event::put(ctx, r)?),
        Kind::PutWfSpec(r) => Response::WfSpec(wf_spec::put(ctx, r)?),
        Kind::DeleteWfSpec(r) => {
            wf_spec::delete(ctx, r)?;
            Response::Empty
        }
        Kind::RunWf(r) => Response::WfRun(wf_run::run(ctx, r)?),
        Kind::StopWfRun(r) => {
            wf_run::stop(ctx, r)?;
            Response::Empty
        }
        Kind::ResumeWfRun(r) => {
            wf_run::resume(ctx, r)?;
            Response::Empty
        }
        Kind::RescueThreadRun(r) => Response::WfRun(wf_run::rescue(ctx, r)?),
        Kind::ScheduleWf(r) => Response::ScheduledWfRun(scheduled_wf_run::schedule(ctx, r)?),
        Kind::DeleteScheduledWfRun(r) => {
            scheduled_wf_run::delete(ctx, r)?;
            Response::Empty
        }
        Kind::DeleteWfRun(r) => {
            wf_run::delete(ctx, r)?;
            Response::Empty
        }
        Kind::PutCorrelatedEvent(r) => Response::CorrelatedEvent(correlated_event::put(ctx, r)?),
        Kind::DeleteCorrelatedEvent(r) => {
            correlated_event::delete(ctx, r)?;
            Response::Empty
        }
        Kind::PutTaskDef(r) => Response::TaskDef(task::put_def(ctx, r)?),
        Kind::DeleteTaskDef(r) => {
            task::delete_def(ctx, r)?;
            Response::Empty
        }
        Kind::ClaimTask(r) => Response::ScheduledTask(task::claim(ctx, r)?),
        Kind::ReportTask(r) => {
            task::report(ctx, r)?;
            Response::Empty
        }
        Kind::PutCheckpoint(r) => Response::PutCheckpoint(checkpoint::put(ctx, r)?),
        Kind::TaskWorkerHeartbeat(r) => {
            task_worker_group::heartbeat(ctx, r)?;
            Response::Empty
        }
        Kind::PutWorkflowEventDef(r) => {
            Response::WorkflowEventDef(workflow_event::put_def(ctx, r)?)
        }
        Kind::DeleteWorkflowEventDef(r) => {
            workflow_event::delete_def(ctx, r)?;
            Response::Empty
        }
        Kind::PutUserTaskDef(r) => Response::UserTaskDef(user_task::put_def(ctx, r)?),
        Kind::DeleteUserTaskDef(r) => {
            user_task::delete_def(ctx, r)?;
            Response::Empty
        }
        Kind::AssignUserTaskRun(r) => {
            user_task::assign(ctx, r)?;
            Response::Empty
        }
        Kind::CompleteUserTaskRun(r) => {
            user_task::complete(ctx, r)?;
            Response::Empty
        }
        Kind::CancelUserTaskRun(r) => {
            user_task::cancel(ctx, r)?;
            Response::Empty
        }
        Kind::SaveUserTaskRunProgress(r) => {
            Response::UserTaskRun(user_task::save_progress(ctx, r)?)
        }
        Kind::PutUserTaskRunComment(r) => Response::UserTaskRun(user_task::put_comment(ctx, r)?),
        Kind::EditUserTaskRunComment(r) => Response::UserTaskRun(user_task::edit_comment(ctx, r)?),
        Kind::DeleteUserTaskRunComment(r) => {
            Response::UserTaskRun(user_task::delete_comment(ctx, r)?)
        }
        Kind::FireTimers(f) => Response::TimersFired(fire_timers(ctx, f)?),
    })
}

/// Fires each listed timer that still exists and is due at the entry's time.
fn fire_timers(ctx: &mut Ctx, f: &FireTimers) -> HResult<usize> {
    let mut fired = 0;
    for key in &f.timers {
        if key.due_ms > ctx.now_ms {
            continue;
        }
        let Some(t) = timers::get(ctx, key.due_ms, &key.id)? else {
            continue;
        };
        timers::cancel(ctx, &key.id)?;
        fired += 1;
        match t.kind {
            Some(timer::Kind::NodeRun(n)) => {
                if let Some(mut run) = run_state::RunState::load(ctx, &n.wf_run_id)? {
                    interpreter::fire_node_timer(ctx, &mut run, n.thread_run_number, n.position)?;
                }
            }
            Some(timer::Kind::EventRetention(id)) => external_event::expire(ctx, &id)?,
            Some(timer::Kind::WfRunRetention(id)) => wf_run::delete_by_id(ctx, &id)?,
            Some(timer::Kind::CorrelatedEventTtl(id)) => correlated_event::expire(ctx, &id)?,
            Some(timer::Kind::TaskTimeout(t)) => task::fire_timeout(ctx, &t)?,
            Some(timer::Kind::TaskRetry(id)) => task::fire_retry(ctx, &id)?,
            Some(timer::Kind::UserTaskAction(t)) => user_task::fire_action(ctx, &t)?,
            Some(timer::Kind::ScheduledWfRun(id)) => scheduled_wf_run::fire(ctx, &id, key.due_ms)?,
            None => {}
        }
    }
    Ok(fired)
}
