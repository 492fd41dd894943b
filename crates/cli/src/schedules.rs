//! `halterctl scheduled-wf-run`: WfRuns started on a cron schedule.

use std::collections::BTreeMap;

use clap::Subcommand;
use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::*;
use tonic::transport::Channel;

use crate::{many, one, parse_var, Shown};

#[derive(Subcommand)]
pub enum ScheduleCmd {
    /// Start a WfRun of SPEC at every time CRON names (five fields, UTC, e.g. '0 * * * *'
    /// or '@daily'). Each run is named ID-<time in ms>. Variables as for `wf-run run`.
    Create {
        spec: String,
        cron: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        major_version: Option<i32>,
        #[arg(long)]
        revision: Option<i32>,
        #[arg(long = "var")]
        vars: Vec<String>,
    },
    Get {
        id: String,
    },
    /// Stop the schedule. The WfRuns it started stay.
    Delete {
        id: String,
    },
    /// The schedules of a WfSpec (of one version, with --major-version / --revision).
    Search {
        spec: String,
        #[arg(long)]
        major_version: Option<i32>,
        #[arg(long)]
        revision: Option<i32>,
    },
}

fn sid(id: String) -> ScheduledWfRunId {
    ScheduledWfRunId { id }
}

pub async fn run(lh: &mut LittleHorseClient<Channel>, c: ScheduleCmd) -> anyhow::Result<Shown> {
    match c {
        ScheduleCmd::Create {
            spec,
            cron,
            id,
            major_version,
            revision,
            vars,
        } => {
            let variables: BTreeMap<String, VariableValue> = vars
                .iter()
                .map(|v| parse_var(v))
                .collect::<Result<_, _>>()?;
            one(
                "littlehorse.ScheduledWfRun",
                &lh.schedule_wf(ScheduleWfRequest {
                    id,
                    wf_spec_name: spec,
                    major_version,
                    revision,
                    variables,
                    parent_wf_run_id: None,
                    cron_expression: cron,
                })
                .await?
                .into_inner(),
            )
        }
        ScheduleCmd::Get { id } => one(
            "littlehorse.ScheduledWfRun",
            &lh.get_scheduled_wf_run(sid(id)).await?.into_inner(),
        ),
        ScheduleCmd::Delete { id } => {
            lh.delete_scheduled_wf_run(DeleteScheduledWfRunRequest {
                id: Some(sid(id.clone())),
            })
            .await?;
            Ok(Shown::One(serde_json::json!({"deleted": id})))
        }
        ScheduleCmd::Search {
            spec,
            major_version,
            revision,
        } => many(
            "littlehorse.ScheduledWfRunIdList",
            &lh.search_scheduled_wf_run(SearchScheduledWfRunRequest {
                wf_spec_name: spec,
                major_version,
                revision,
            })
            .await?
            .into_inner(),
        ),
    }
}
