//! `halterctl workflow-event-def` and `halterctl workflow-event`.

use clap::Subcommand;
use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::*;
use tonic::transport::Channel;

use crate::{many, one, Shown};

#[derive(Subcommand)]
pub enum WorkflowEventDefCmd {
    Put {
        name: String,
        /// Require thrown content of this type (STR, INT, DOUBLE, BOOL, JSON_OBJ, JSON_ARR, BYTES).
        #[arg(long = "type")]
        content_type: Option<String>,
    },
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
    Search {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        limit: Option<i32>,
    },
}

#[derive(Subcommand)]
pub enum WorkflowEventCmd {
    /// The WorkflowEvents a WfRun threw.
    List {
        wf_run_id: String,
        #[arg(long)]
        limit: Option<i32>,
    },
    Get {
        wf_run_id: String,
        def: String,
        number: i32,
    },
    /// The events of a def, oldest first.
    Search {
        def: String,
        #[arg(long)]
        limit: Option<i32>,
    },
    /// Wait (up to --timeout) for the WfRun to throw an event of one of --def (any def if none
    /// is given), other than those given as --ignore DEF:NUMBER.
    Await {
        wf_run_id: String,
        #[arg(long)]
        def: Vec<String>,
        #[arg(long)]
        ignore: Vec<String>,
    },
}

fn def_id(name: String) -> WorkflowEventDefId {
    WorkflowEventDefId { name }
}

fn event_id(wf_run_id: &str, def: String, number: i32) -> WorkflowEventId {
    WorkflowEventId {
        wf_run_id: Some(crate::wf(wf_run_id)),
        workflow_event_def_id: Some(def_id(def)),
        number,
    }
}

pub async fn def(
    lh: &mut LittleHorseClient<Channel>,
    c: WorkflowEventDefCmd,
) -> anyhow::Result<Shown> {
    match c {
        WorkflowEventDefCmd::Put { name, content_type } => {
            let return_type = content_type.map(|t| crate::type_def(&t)).transpose()?;
            one(
                "littlehorse.WorkflowEventDef",
                &lh.put_workflow_event_def(PutWorkflowEventDefRequest {
                    name,
                    content_type: Some(ReturnType { return_type }),
                })
                .await?
                .into_inner(),
            )
        }
        WorkflowEventDefCmd::Get { name } => one(
            "littlehorse.WorkflowEventDef",
            &lh.get_workflow_event_def(def_id(name)).await?.into_inner(),
        ),
        WorkflowEventDefCmd::Delete { name } => {
            lh.delete_workflow_event_def(DeleteWorkflowEventDefRequest {
                id: Some(def_id(name)),
            })
            .await?;
            Ok(Shown::One(serde_json::json!({"deleted": true})))
        }
        WorkflowEventDefCmd::Search { prefix, limit } => many(
            "littlehorse.WorkflowEventDefIdList",
            &lh.search_workflow_event_def(SearchWorkflowEventDefRequest {
                bookmark: None,
                limit,
                prefix,
            })
            .await?
            .into_inner(),
        ),
    }
}

pub async fn event(
    lh: &mut LittleHorseClient<Channel>,
    c: WorkflowEventCmd,
) -> anyhow::Result<Shown> {
    match c {
        WorkflowEventCmd::List { wf_run_id, limit } => many(
            "littlehorse.WorkflowEventList",
            &lh.list_workflow_events(ListWorkflowEventsRequest {
                wf_run_id: Some(crate::wf(&wf_run_id)),
                bookmark: None,
                limit,
            })
            .await?
            .into_inner(),
        ),
        WorkflowEventCmd::Get {
            wf_run_id,
            def,
            number,
        } => one(
            "littlehorse.WorkflowEvent",
            &lh.get_workflow_event(event_id(&wf_run_id, def, number))
                .await?
                .into_inner(),
        ),
        WorkflowEventCmd::Search { def, limit } => many(
            "littlehorse.WorkflowEventIdList",
            &lh.search_workflow_event(SearchWorkflowEventRequest {
                workflow_event_def_id: Some(def_id(def)),
                limit,
                ..Default::default()
            })
            .await?
            .into_inner(),
        ),
        WorkflowEventCmd::Await {
            wf_run_id,
            def,
            ignore,
        } => {
            let ignored = ignore
                .iter()
                .map(|i| {
                    let (d, n) = i
                        .rsplit_once(':')
                        .ok_or_else(|| anyhow::anyhow!("--ignore takes DEF:NUMBER, got '{i}'"))?;
                    let n: i32 = n
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--ignore takes DEF:NUMBER, got '{i}'"))?;
                    Ok(event_id(&wf_run_id, d.to_string(), n))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            one(
                "littlehorse.WorkflowEvent",
                &lh.await_workflow_event(AwaitWorkflowEventRequest {
                    wf_run_id: Some(crate::wf(&wf_run_id)),
                    event_def_ids: def.into_iter().map(def_id).collect(),
                    workflow_events_to_ignore: ignored,
                })
                .await?
                .into_inner(),
            )
        }
    }
}
