//! The public `littlehorse.LittleHorse` service, served by every node on its client address.
//!
//! Writes fill in generated ids here, on the receiving node, and go through the proposer; reads
//! pass the linearizable read barrier, then read this node's state. Task workers' polls are
//! held in [`task_dispatch`]. RPCs Halter does not implement answer `UNIMPLEMENTED` (the
//! generated default).

use std::sync::Arc;

use halter_api::halter::{command::Kind, Empty};
use halter_api::littlehorse::little_horse_server::LittleHorse;
use halter_api::littlehorse::*;
use halter_state_machine::{query, Response as Out};
use tonic::{Request, Response, Status};

use crate::proposer::NodeCtx;
use crate::server::MAX_CLIENT_MESSAGE;
use crate::task_dispatch;

pub struct LhService {
    pub ctx: Arc<NodeCtx>,
}

/// A fresh id: 32 lowercase hex characters, generated before proposing.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The principal every caller is while Halter has no authentication: LittleHorse's
/// `anonymous`, an admin (all actions on all resources), with no ACLs of its own per tenant.
pub fn anonymous_principal() -> Principal {
    Principal {
        id: Some(PrincipalId {
            id: "anonymous".into(),
        }),
        created_at: None,
        per_tenant_acls: Default::default(),
        global_acls: Some(ServerAcLs {
            acls: vec![ServerAcl {
                resources: vec![AclResource::AclAllResources as i32],
                allowed_actions: vec![AclAction::AllActions as i32],
                resource_filter: None,
            }],
        }),
    }
}

fn unexpected(r: Out) -> Status {
    Status::internal(format!("unexpected outcome {r:?}"))
}

impl LhService {
    async fn read<Q, T>(
        &self,
        req: Request<Q>,
        f: fn(&halter_storage::ReadTables, &Q) -> Result<T, halter_state_machine::error::Outcome>,
    ) -> Result<Response<T>, Status> {
        self.ctx.read_barrier().await?;
        let req = req.into_inner();
        self.ctx.read(|t| f(t, &req)).map(Response::new)
    }

    async fn write(&self, kind: Kind) -> Result<Out, Status> {
        // The transport accepts up to MAX_DECODE; the API's limit is lower and is a clear
        // RESOURCE_EXHAUSTED rather than a transport error.
        let size = kind.encoded_len();
        if size > MAX_CLIENT_MESSAGE {
            return Err(Status::resource_exhausted(format!(
                "request is {size} bytes, more than the limit of {MAX_CLIENT_MESSAGE}"
            )));
        }
        self.ctx.propose(kind).await
    }

    async fn write_empty(&self, kind: Kind) -> Result<Response<Empty>, Status> {
        match self.write(kind).await? {
            Out::Empty => Ok(Response::new(Empty {})),
            other => Err(unexpected(other)),
        }
    }

    async fn write_user_task_run(&self, kind: Kind) -> Result<Response<UserTaskRun>, Status> {
        match self.write(kind).await? {
            Out::UserTaskRun(r) => Ok(Response::new(r)),
            other => Err(unexpected(other)),
        }
    }
}

#[tonic::async_trait]
impl LittleHorse for LhService {
    #[tracing::instrument(skip_all, name = "put_external_event_def")]
    async fn put_external_event_def(
        &self,
        req: Request<PutExternalEventDefRequest>,
    ) -> Result<Response<ExternalEventDef>, Status> {
        match self
            .write(Kind::PutExternalEventDef(req.into_inner()))
            .await?
        {
            Out::ExternalEventDef(d) => Ok(Response::new(d)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_external_event_def(
        &self,
        req: Request<ExternalEventDefId>,
    ) -> Result<Response<ExternalEventDef>, Status> {
        self.read(req, query::get_external_event_def).await
    }
    #[tracing::instrument(skip_all)]
    async fn search_external_event_def(
        &self,
        req: Request<SearchExternalEventDefRequest>,
    ) -> Result<Response<ExternalEventDefIdList>, Status> {
        self.read(req, query::search_external_event_defs).await
    }

    #[tracing::instrument(skip_all, name = "delete_external_event_def")]
    async fn delete_external_event_def(
        &self,
        req: Request<DeleteExternalEventDefRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::DeleteExternalEventDef(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all, name = "put_external_event")]
    async fn put_external_event(
        &self,
        req: Request<PutExternalEventRequest>,
    ) -> Result<Response<ExternalEvent>, Status> {
        let mut req = req.into_inner();
        if req.guid.as_deref().is_none_or(str::is_empty) {
            req.guid = Some(new_id());
        }
        match self.write(Kind::PutExternalEvent(req)).await? {
            Out::ExternalEvent(e) => Ok(Response::new(e)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_external_event(
        &self,
        req: Request<ExternalEventId>,
    ) -> Result<Response<ExternalEvent>, Status> {
        self.read(req, query::get_external_event).await
    }
    #[tracing::instrument(skip_all)]
    async fn list_external_events(
        &self,
        req: Request<ListExternalEventsRequest>,
    ) -> Result<Response<ExternalEventList>, Status> {
        self.read(req, query::list_external_events).await
    }
    #[tracing::instrument(skip_all)]
    async fn search_external_event(
        &self,
        req: Request<SearchExternalEventRequest>,
    ) -> Result<Response<ExternalEventIdList>, Status> {
        self.read(req, query::search_external_events).await
    }

    #[tracing::instrument(skip_all, name = "put_wf_spec")]
    async fn put_wf_spec(
        &self,
        req: Request<PutWfSpecRequest>,
    ) -> Result<Response<WfSpec>, Status> {
        match self.write(Kind::PutWfSpec(req.into_inner())).await? {
            Out::WfSpec(s) => Ok(Response::new(s)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_wf_spec(&self, req: Request<WfSpecId>) -> Result<Response<WfSpec>, Status> {
        self.read(req, query::get_wf_spec).await
    }
    #[tracing::instrument(skip_all)]
    async fn get_latest_wf_spec(
        &self,
        req: Request<GetLatestWfSpecRequest>,
    ) -> Result<Response<WfSpec>, Status> {
        self.read(req, query::get_latest_wf_spec).await
    }
    #[tracing::instrument(skip_all)]
    async fn search_wf_spec(
        &self,
        req: Request<SearchWfSpecRequest>,
    ) -> Result<Response<WfSpecIdList>, Status> {
        self.read(req, query::search_wf_specs).await
    }

    #[tracing::instrument(skip_all, name = "delete_wf_spec")]
    async fn delete_wf_spec(
        &self,
        req: Request<DeleteWfSpecRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::DeleteWfSpec(req.into_inner())).await
    }

    #[tracing::instrument(skip_all, name = "run_wf")]
    async fn run_wf(&self, req: Request<RunWfRequest>) -> Result<Response<WfRun>, Status> {
        let mut req = req.into_inner();
        if req.id.as_deref().is_none_or(str::is_empty) {
            req.id = Some(new_id());
        }
        match self.write(Kind::RunWf(req)).await? {
            Out::WfRun(r) => Ok(Response::new(r)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all, name = "schedule_wf")]
    async fn schedule_wf(
        &self,
        req: Request<ScheduleWfRequest>,
    ) -> Result<Response<ScheduledWfRun>, Status> {
        let mut req = req.into_inner();
        if req.id.as_deref().is_none_or(str::is_empty) {
            req.id = Some(new_id());
        }
        match self.write(Kind::ScheduleWf(req)).await? {
            Out::ScheduledWfRun(s) => Ok(Response::new(s)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_scheduled_wf_run(
        &self,
        req: Request<ScheduledWfRunId>,
    ) -> Result<Response<ScheduledWfRun>, Status> {
        self.read(req, query::get_scheduled_wf_run).await
    }

    #[tracing::instrument(skip_all)]
    async fn search_scheduled_wf_run(
        &self,
        req: Request<SearchScheduledWfRunRequest>,
    ) -> Result<Response<ScheduledWfRunIdList>, Status> {
        self.read(req, query::search_scheduled_wf_runs).await
    }

    #[tracing::instrument(skip_all, name = "delete_scheduled_wf_run")]
    async fn delete_scheduled_wf_run(
        &self,
        req: Request<DeleteScheduledWfRunRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::DeleteScheduledWfRun(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn rescue_thread_run(
        &self,
        req: Request<RescueThreadRunRequest>,
    ) -> Result<Response<WfRun>, Status> {
        match self.write(Kind::RescueThreadRun(req.into_inner())).await? {
            Out::WfRun(r) => Ok(Response::new(r)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_wf_run(&self, req: Request<WfRunId>) -> Result<Response<WfRun>, Status> {
        self.read(req, query::get_wf_run).await
    }
    #[tracing::instrument(skip_all)]
    async fn search_wf_run(
        &self,
        req: Request<SearchWfRunRequest>,
    ) -> Result<Response<WfRunIdList>, Status> {
        self.read(req, query::search_wf_runs).await
    }

    #[tracing::instrument(skip_all, name = "stop_wf_run")]
    async fn stop_wf_run(&self, req: Request<StopWfRunRequest>) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::StopWfRun(req.into_inner())).await
    }

    #[tracing::instrument(skip_all, name = "resume_wf_run")]
    async fn resume_wf_run(
        &self,
        req: Request<ResumeWfRunRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::ResumeWfRun(req.into_inner())).await
    }

    #[tracing::instrument(skip_all, name = "delete_wf_run")]
    async fn delete_wf_run(
        &self,
        req: Request<DeleteWfRunRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::DeleteWfRun(req.into_inner())).await
    }

    #[tracing::instrument(skip_all)]
    async fn search_variable(
        &self,
        req: Request<SearchVariableRequest>,
    ) -> Result<Response<VariableIdList>, Status> {
        self.read(req, query::search_variables).await
    }

    #[tracing::instrument(skip_all)]
    async fn search_task_run(
        &self,
        req: Request<SearchTaskRunRequest>,
    ) -> Result<Response<TaskRunIdList>, Status> {
        self.read(req, query::search_task_runs).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_node_run(&self, req: Request<NodeRunId>) -> Result<Response<NodeRun>, Status> {
        self.read(req, query::get_node_run).await
    }
    #[tracing::instrument(skip_all)]
    async fn list_node_runs(
        &self,
        req: Request<ListNodeRunsRequest>,
    ) -> Result<Response<NodeRunList>, Status> {
        self.read(req, query::list_node_runs).await
    }
    #[tracing::instrument(skip_all)]
    async fn get_variable(&self, req: Request<VariableId>) -> Result<Response<Variable>, Status> {
        self.read(req, query::get_variable).await
    }
    #[tracing::instrument(skip_all)]
    async fn list_variables(
        &self,
        req: Request<ListVariablesRequest>,
    ) -> Result<Response<VariableList>, Status> {
        self.read(req, query::list_variables).await
    }

    async fn get_server_version(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<LittleHorseVersion>, Status> {
        Ok(Response::new(LittleHorseVersion {
            major_version: 0,
            minor_version: 1,
            patch_version: Some(0),
            pre_release_identifier: Some("halter".into()),
        }))
    }

    /// Halter has no authentication yet, so every caller is what a LittleHorse server without
    /// auth calls them: the `anonymous` principal, allowed every action on every resource.
    #[tracing::instrument(skip_all)]
    async fn whoami(&self, _: Request<Empty>) -> Result<Response<Principal>, Status> {
        Ok(Response::new(anonymous_principal()))
    }

    #[tracing::instrument(skip_all, name = "put_task_def")]
    async fn put_task_def(
        &self,
        req: Request<PutTaskDefRequest>,
    ) -> Result<Response<TaskDef>, Status> {
        match self.write(Kind::PutTaskDef(req.into_inner())).await? {
            Out::TaskDef(d) => Ok(Response::new(d)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_task_def(&self, req: Request<TaskDefId>) -> Result<Response<TaskDef>, Status> {
        self.read(req, query::get_task_def).await
    }

    #[tracing::instrument(skip_all, name = "delete_task_def")]
    async fn delete_task_def(
        &self,
        req: Request<DeleteTaskDefRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::DeleteTaskDef(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn search_task_def(
        &self,
        req: Request<SearchTaskDefRequest>,
    ) -> Result<Response<TaskDefIdList>, Status> {
        self.read(req, query::search_task_defs).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_task_run(&self, req: Request<TaskRunId>) -> Result<Response<TaskRun>, Status> {
        self.read(req, query::get_task_run).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_task_runs(
        &self,
        req: Request<ListTaskRunsRequest>,
    ) -> Result<Response<TaskRunList>, Status> {
        self.read(req, query::list_task_runs).await
    }

    #[tracing::instrument(skip_all)]
    async fn register_task_worker(
        &self,
        req: Request<RegisterTaskWorkerRequest>,
    ) -> Result<Response<RegisterTaskWorkerResponse>, Status> {
        let local = req.local_addr();
        let answer = task_dispatch::register(&self.ctx, req.get_ref(), local)?;
        task_dispatch::record_heartbeat(&self.ctx, req.get_ref(), &answer.your_hosts).await;
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all)]
    async fn get_task_worker_group(
        &self,
        req: Request<TaskDefId>,
    ) -> Result<Response<TaskWorkerGroup>, Status> {
        self.read(req, query::get_task_worker_group).await
    }

    // The simulator's generated trait names the stream type; tonic's (with default stubs) fixes
    // it to its BoxStream. Both are `task_dispatch::PollStream`.
    #[cfg(madsim)]
    type PollTaskStream = task_dispatch::PollStream;

    #[tracing::instrument(skip_all)]
    async fn poll_task(
        &self,
        req: Request<tonic::Streaming<PollTaskRequest>>,
    ) -> Result<Response<task_dispatch::PollStream>, Status> {
        Ok(Response::new(task_dispatch::serve(
            self.ctx.clone(),
            req.into_inner(),
        )))
    }

    #[tracing::instrument(skip_all, name = "report_task")]
    async fn report_task(&self, req: Request<ReportTaskRun>) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::ReportTask(req.into_inner())).await
    }

    #[tracing::instrument(skip_all, name = "put_checkpoint")]
    async fn put_checkpoint(
        &self,
        req: Request<PutCheckpointRequest>,
    ) -> Result<Response<PutCheckpointResponse>, Status> {
        match self.write(Kind::PutCheckpoint(req.into_inner())).await? {
            Out::PutCheckpoint(r) => Ok(Response::new(r)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_checkpoint(
        &self,
        req: Request<CheckpointId>,
    ) -> Result<Response<Checkpoint>, Status> {
        self.read(req, query::get_checkpoint).await
    }

    #[tracing::instrument(skip_all, name = "put_correlated_event")]
    async fn put_correlated_event(
        &self,
        req: Request<PutCorrelatedEventRequest>,
    ) -> Result<Response<CorrelatedEvent>, Status> {
        match self
            .write(Kind::PutCorrelatedEvent(req.into_inner()))
            .await?
        {
            Out::CorrelatedEvent(e) => Ok(Response::new(e)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_correlated_event(
        &self,
        req: Request<CorrelatedEventId>,
    ) -> Result<Response<CorrelatedEvent>, Status> {
        self.read(req, query::get_correlated_event).await
    }

    #[tracing::instrument(skip_all, name = "delete_correlated_event")]
    async fn delete_correlated_event(
        &self,
        req: Request<DeleteCorrelatedEventRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::DeleteCorrelatedEvent(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn search_correlated_event(
        &self,
        req: Request<SearchCorrelatedEventRequest>,
    ) -> Result<Response<CorrelatedEventIdList>, Status> {
        self.read(req, query::search_correlated_events).await
    }

    #[tracing::instrument(skip_all, name = "put_workflow_event_def")]
    async fn put_workflow_event_def(
        &self,
        req: Request<PutWorkflowEventDefRequest>,
    ) -> Result<Response<WorkflowEventDef>, Status> {
        match self
            .write(Kind::PutWorkflowEventDef(req.into_inner()))
            .await?
        {
            Out::WorkflowEventDef(d) => Ok(Response::new(d)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_workflow_event_def(
        &self,
        req: Request<WorkflowEventDefId>,
    ) -> Result<Response<WorkflowEventDef>, Status> {
        self.read(req, query::get_workflow_event_def).await
    }

    #[tracing::instrument(skip_all, name = "delete_workflow_event_def")]
    async fn delete_workflow_event_def(
        &self,
        req: Request<DeleteWorkflowEventDefRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::DeleteWorkflowEventDef(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn search_workflow_event_def(
        &self,
        req: Request<SearchWorkflowEventDefRequest>,
    ) -> Result<Response<WorkflowEventDefIdList>, Status> {
        self.read(req, query::search_workflow_event_defs).await
    }

    #[tracing::instrument(skip_all, name = "put_user_task_def")]
    async fn put_user_task_def(
        &self,
        req: Request<PutUserTaskDefRequest>,
    ) -> Result<Response<UserTaskDef>, Status> {
        match self.write(Kind::PutUserTaskDef(req.into_inner())).await? {
            Out::UserTaskDef(d) => Ok(Response::new(d)),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_user_task_def(
        &self,
        req: Request<UserTaskDefId>,
    ) -> Result<Response<UserTaskDef>, Status> {
        self.read(req, query::get_user_task_def).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_latest_user_task_def(
        &self,
        req: Request<GetLatestUserTaskDefRequest>,
    ) -> Result<Response<UserTaskDef>, Status> {
        self.read(req, query::get_latest_user_task_def).await
    }

    #[tracing::instrument(skip_all, name = "delete_user_task_def")]
    async fn delete_user_task_def(
        &self,
        req: Request<DeleteUserTaskDefRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::DeleteUserTaskDef(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn search_user_task_def(
        &self,
        req: Request<SearchUserTaskDefRequest>,
    ) -> Result<Response<UserTaskDefIdList>, Status> {
        self.read(req, query::search_user_task_defs).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_user_task_run(
        &self,
        req: Request<UserTaskRunId>,
    ) -> Result<Response<UserTaskRun>, Status> {
        self.read(req, query::get_user_task_run).await
    }

    #[tracing::instrument(skip_all, name = "assign_user_task_run")]
    async fn assign_user_task_run(
        &self,
        req: Request<AssignUserTaskRunRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::AssignUserTaskRun(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all, name = "complete_user_task_run")]
    async fn complete_user_task_run(
        &self,
        req: Request<CompleteUserTaskRunRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::CompleteUserTaskRun(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all, name = "cancel_user_task_run")]
    async fn cancel_user_task_run(
        &self,
        req: Request<CancelUserTaskRunRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.write_empty(Kind::CancelUserTaskRun(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all, name = "save_user_task_run_progress")]
    async fn save_user_task_run_progress(
        &self,
        req: Request<SaveUserTaskRunProgressRequest>,
    ) -> Result<Response<UserTaskRun>, Status> {
        self.write_user_task_run(Kind::SaveUserTaskRunProgress(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_user_task_runs(
        &self,
        req: Request<ListUserTaskRunRequest>,
    ) -> Result<Response<UserTaskRunList>, Status> {
        self.read(req, query::list_user_task_runs).await
    }

    #[tracing::instrument(skip_all)]
    async fn search_user_task_run(
        &self,
        req: Request<SearchUserTaskRunRequest>,
    ) -> Result<Response<UserTaskRunIdList>, Status> {
        self.read(req, query::search_user_task_runs).await
    }

    #[tracing::instrument(skip_all, name = "put_user_task_run_comment")]
    async fn put_user_task_run_comment(
        &self,
        req: Request<PutUserTaskRunCommentRequest>,
    ) -> Result<Response<UserTaskRun>, Status> {
        self.write_user_task_run(Kind::PutUserTaskRunComment(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all, name = "edit_user_task_run_comment")]
    async fn edit_user_task_run_comment(
        &self,
        req: Request<EditUserTaskRunCommentRequest>,
    ) -> Result<Response<UserTaskRun>, Status> {
        self.write_user_task_run(Kind::EditUserTaskRunComment(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all, name = "delete_user_task_run_comment")]
    async fn delete_user_task_run_comment(
        &self,
        req: Request<DeleteUserTaskRunCommentRequest>,
    ) -> Result<Response<UserTaskRun>, Status> {
        self.write_user_task_run(Kind::DeleteUserTaskRunComment(req.into_inner()))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn get_workflow_event(
        &self,
        req: Request<WorkflowEventId>,
    ) -> Result<Response<WorkflowEvent>, Status> {
        self.read(req, query::get_workflow_event).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_workflow_events(
        &self,
        req: Request<ListWorkflowEventsRequest>,
    ) -> Result<Response<WorkflowEventList>, Status> {
        self.read(req, query::list_workflow_events).await
    }

    #[tracing::instrument(skip_all)]
    async fn search_workflow_event(
        &self,
        req: Request<SearchWorkflowEventRequest>,
    ) -> Result<Response<WorkflowEventIdList>, Status> {
        self.read(req, query::search_workflow_events).await
    }

    #[tracing::instrument(skip_all)]
    async fn await_workflow_event(
        &self,
        req: Request<AwaitWorkflowEventRequest>,
    ) -> Result<Response<WorkflowEvent>, Status> {
        crate::workflow_events::await_event(&self.ctx, &req.into_inner())
            .await
            .map(Response::new)
    }
}
