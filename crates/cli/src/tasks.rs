//! `halterctl task-def` and `halterctl task-run`.

use anyhow::anyhow;
use clap::Subcommand;
use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::*;
use tonic::transport::Channel;

use crate::{many, one, type_def, wf, Shown};

#[derive(Subcommand)]
pub enum TaskDefCmd {
    /// Define a task. Inputs as NAME:TYPE, in the order task workers receive them.
    Put {
        name: String,
        #[arg(long = "input")]
        inputs: Vec<String>,
        /// The output's type (none: the task returns nothing).
        #[arg(long)]
        returns: Option<String>,
        #[arg(long)]
        description: Option<String>,
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
    /// The task workers of a TaskDef and their latest heartbeats (its TaskWorkerGroup).
    Workers {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum TaskRunCmd {
    /// A TaskRun by WfRun id and task guid (THREAD-POSITION of its NodeRun, e.g. 0-1).
    Get {
        wf_run_id: String,
        task_guid: String,
    },
    /// The TaskRuns of a WfRun.
    List { wf_run_id: String },
    /// A Checkpoint a task worker saved during a TaskRun (numbered from 0).
    Checkpoint {
        wf_run_id: String,
        task_guid: String,
        number: i32,
    },
}

fn input(spec: &str) -> anyhow::Result<VariableDef> {
    let (name, ty) = spec
        .split_once(':')
        .ok_or_else(|| anyhow!("--input takes NAME:TYPE, got '{spec}'"))?;
    Ok(VariableDef {
        name: name.into(),
        type_def: Some(type_def(ty)?),
        ..Default::default()
    })
}

pub async fn task_def(lh: &mut LittleHorseClient<Channel>, c: TaskDefCmd) -> anyhow::Result<Shown> {
    match c {
        TaskDefCmd::Put {
            name,
            inputs,
            returns,
            description,
        } => {
            let req = PutTaskDefRequest {
                name,
                input_vars: inputs.iter().map(|s| input(s)).collect::<Result<_, _>>()?,
                return_type: Some(ReturnType {
                    return_type: returns.map(|t| type_def(&t)).transpose()?,
                }),
                description,
            };
            one(
                "littlehorse.TaskDef",
                &lh.put_task_def(req).await?.into_inner(),
            )
        }
        TaskDefCmd::Workers { name } => one(
            "littlehorse.TaskWorkerGroup",
            &lh.get_task_worker_group(TaskDefId { name })
                .await?
                .into_inner(),
        ),
        TaskDefCmd::Get { name } => one(
            "littlehorse.TaskDef",
            &lh.get_task_def(TaskDefId { name }).await?.into_inner(),
        ),
        TaskDefCmd::Delete { name } => {
            lh.delete_task_def(DeleteTaskDefRequest {
                id: Some(TaskDefId { name }),
            })
            .await?;
            Ok(Shown::One(serde_json::json!({"deleted": true})))
        }
        TaskDefCmd::Search { prefix, limit } => many(
            "littlehorse.TaskDefIdList",
            &lh.search_task_def(SearchTaskDefRequest {
                bookmark: None,
                limit,
                prefix,
            })
            .await?
            .into_inner(),
        ),
    }
}

pub async fn task_run(lh: &mut LittleHorseClient<Channel>, c: TaskRunCmd) -> anyhow::Result<Shown> {
    match c {
        TaskRunCmd::Get {
            wf_run_id,
            task_guid,
        } => one(
            "littlehorse.TaskRun",
            &lh.get_task_run(TaskRunId {
                wf_run_id: Some(wf(&wf_run_id)),
                task_guid,
            })
            .await?
            .into_inner(),
        ),
        TaskRunCmd::List { wf_run_id } => many(
            "littlehorse.TaskRunList",
            &lh.list_task_runs(ListTaskRunsRequest {
                wf_run_id: Some(wf(&wf_run_id)),
                bookmark: None,
                limit: None,
            })
            .await?
            .into_inner(),
        ),
        TaskRunCmd::Checkpoint {
            wf_run_id,
            task_guid,
            number,
        } => one(
            "littlehorse.Checkpoint",
            &lh.get_checkpoint(CheckpointId {
                task_run: Some(TaskRunId {
                    wf_run_id: Some(wf(&wf_run_id)),
                    task_guid,
                }),
                checkpoint_number: number,
            })
            .await?
            .into_inner(),
        ),
    }
}
