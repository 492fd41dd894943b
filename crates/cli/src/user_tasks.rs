//! `halterctl user-task-def` and `halterctl user-task`: the forms people fill in, and the
//! UserTaskRuns waiting for them (find, assign, complete, cancel, comment).

use clap::Subcommand;
use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::*;
use tonic::transport::Channel;

use crate::{many, one, parse_var, wf, Shown};

#[derive(Subcommand)]
pub enum UserTaskDefCmd {
    /// Puts a def: a new version if it changed.
    Put {
        name: String,
        /// A field as NAME:TYPE (STR, BOOL, INT, DOUBLE), NAME:TYPE! when required.
        #[arg(long = "field")]
        fields: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// The def at --version, or its latest version.
    Get {
        name: String,
        #[arg(long)]
        version: Option<i32>,
    },
    Delete {
        name: String,
        version: i32,
    },
    Search {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        limit: Option<i32>,
    },
}

#[derive(Subcommand)]
pub enum UserTaskCmd {
    Get {
        wf_run_id: String,
        guid: String,
    },
    /// The UserTaskRuns of a WfRun.
    List {
        wf_run_id: String,
        #[arg(long)]
        limit: Option<i32>,
    },
    /// UserTaskRuns matching every filter given (at least one), oldest first.
    Search {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        def: Option<String>,
        /// UNASSIGNED, ASSIGNED, DONE or CANCELLED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<i32>,
    },
    /// Assigns to --user and/or --group (an owner not given is cleared).
    Assign {
        wf_run_id: String,
        guid: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// Take it from the user who holds it.
        #[arg(long)]
        force: bool,
    },
    /// Completes it as --user with results given as --result NAME=VALUE (NAME:TYPE=VALUE or a
    /// VariableValue in JSON, as `run --var`).
    Complete {
        wf_run_id: String,
        guid: String,
        #[arg(long)]
        user: String,
        #[arg(long = "result")]
        results: Vec<String>,
    },
    Cancel {
        wf_run_id: String,
        guid: String,
    },
    /// Adds a comment as --user.
    Comment {
        wf_run_id: String,
        guid: String,
        #[arg(long)]
        user: String,
        comment: String,
    },
}

fn run_id(wf_run_id: &str, guid: String) -> UserTaskRunId {
    UserTaskRunId {
        wf_run_id: Some(wf(wf_run_id)),
        user_task_guid: guid,
    }
}

fn field(spec: &str) -> anyhow::Result<UserTaskField> {
    let (name, ty) = spec
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--field takes NAME:TYPE, got '{spec}'"))?;
    let (ty, required) = match ty.strip_suffix('!') {
        Some(t) => (t, true),
        None => (ty, false),
    };
    let ty = VariableType::from_str_name(&ty.to_uppercase())
        .ok_or_else(|| anyhow::anyhow!("--field {spec}: unknown type '{ty}'"))?;
    Ok(UserTaskField {
        name: name.to_string(),
        r#type: ty as i32,
        display_name: name.to_string(),
        required,
        description: None,
    })
}

pub async fn def(lh: &mut LittleHorseClient<Channel>, c: UserTaskDefCmd) -> anyhow::Result<Shown> {
    match c {
        UserTaskDefCmd::Put {
            name,
            fields,
            description,
        } => one(
            "littlehorse.UserTaskDef",
            &lh.put_user_task_def(PutUserTaskDefRequest {
                name,
                fields: fields.iter().map(|f| field(f)).collect::<Result<_, _>>()?,
                description,
            })
            .await?
            .into_inner(),
        ),
        UserTaskDefCmd::Get {
            name,
            version: Some(version),
        } => one(
            "littlehorse.UserTaskDef",
            &lh.get_user_task_def(UserTaskDefId { name, version })
                .await?
                .into_inner(),
        ),
        UserTaskDefCmd::Get {
            name,
            version: None,
        } => one(
            "littlehorse.UserTaskDef",
            &lh.get_latest_user_task_def(GetLatestUserTaskDefRequest { name })
                .await?
                .into_inner(),
        ),
        UserTaskDefCmd::Delete { name, version } => {
            lh.delete_user_task_def(DeleteUserTaskDefRequest {
                id: Some(UserTaskDefId { name, version }),
            })
            .await?;
            Ok(Shown::One(serde_json::json!({"deleted": true})))
        }
        UserTaskDefCmd::Search { prefix, limit } => many(
            "littlehorse.UserTaskDefIdList",
            &lh.search_user_task_def(SearchUserTaskDefRequest {
                bookmark: None,
                limit,
                user_task_def_criteria: prefix
                    .map(search_user_task_def_request::UserTaskDefCriteria::Prefix),
            })
            .await?
            .into_inner(),
        ),
    }
}

pub async fn run(lh: &mut LittleHorseClient<Channel>, c: UserTaskCmd) -> anyhow::Result<Shown> {
    match c {
        UserTaskCmd::Get { wf_run_id, guid } => one(
            "littlehorse.UserTaskRun",
            &lh.get_user_task_run(run_id(&wf_run_id, guid))
                .await?
                .into_inner(),
        ),
        UserTaskCmd::List { wf_run_id, limit } => many(
            "littlehorse.UserTaskRunList",
            &lh.list_user_task_runs(ListUserTaskRunRequest {
                wf_run_id: Some(wf(&wf_run_id)),
                bookmark: None,
                limit,
            })
            .await?
            .into_inner(),
        ),
        UserTaskCmd::Search {
            user,
            group,
            def,
            status,
            limit,
        } => {
            let status = status
                .map(|s| {
                    UserTaskRunStatus::from_str_name(&s.to_uppercase())
                        .map(|s| s as i32)
                        .ok_or_else(|| anyhow::anyhow!("unknown status '{s}'"))
                })
                .transpose()?;
            many(
                "littlehorse.UserTaskRunIdList",
                &lh.search_user_task_run(SearchUserTaskRunRequest {
                    limit,
                    status,
                    user_task_def_name: def,
                    user_id: user,
                    user_group: group,
                    ..Default::default()
                })
                .await?
                .into_inner(),
            )
        }
        UserTaskCmd::Assign {
            wf_run_id,
            guid,
            user,
            group,
            force,
        } => {
            lh.assign_user_task_run(AssignUserTaskRunRequest {
                user_task_run_id: Some(run_id(&wf_run_id, guid)),
                override_claim: force,
                user_group: group,
                user_id: user,
            })
            .await?;
            Ok(Shown::One(serde_json::json!({"assigned": true})))
        }
        UserTaskCmd::Complete {
            wf_run_id,
            guid,
            user,
            results,
        } => {
            lh.complete_user_task_run(CompleteUserTaskRunRequest {
                user_task_run_id: Some(run_id(&wf_run_id, guid)),
                results: results
                    .iter()
                    .map(|r| parse_var(r))
                    .collect::<Result<_, _>>()?,
                user_id: user,
            })
            .await?;
            Ok(Shown::One(serde_json::json!({"completed": true})))
        }
        UserTaskCmd::Cancel { wf_run_id, guid } => {
            lh.cancel_user_task_run(CancelUserTaskRunRequest {
                user_task_run_id: Some(run_id(&wf_run_id, guid)),
            })
            .await?;
            Ok(Shown::One(serde_json::json!({"cancelled": true})))
        }
        UserTaskCmd::Comment {
            wf_run_id,
            guid,
            user,
            comment,
        } => one(
            "littlehorse.UserTaskRun",
            &lh.put_user_task_run_comment(PutUserTaskRunCommentRequest {
                user_task_run_id: Some(run_id(&wf_run_id, guid)),
                user_id: user,
                comment,
            })
            .await?
            .into_inner(),
        ),
    }
}
