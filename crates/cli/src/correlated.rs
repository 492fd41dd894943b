//! `halterctl correlated-event`.

use clap::Subcommand;
use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::*;
use tonic::transport::Channel;

use crate::{many, one, Content, Shown};

#[derive(Subcommand)]
pub enum CorrelatedCmd {
    /// Put an event by key: every WfRun waiting for KEY on DEF gets it.
    Put {
        key: String,
        def: String,
        #[command(flatten)]
        content: Content,
    },
    Get {
        key: String,
        def: String,
    },
    Delete {
        key: String,
        def: String,
    },
    Search {
        def: String,
        /// Only those that did (true) or did not (false) reach a WfRun yet.
        #[arg(long)]
        has_events: Option<bool>,
        #[arg(long)]
        limit: Option<i32>,
    },
}

fn id(key: String, def: String) -> CorrelatedEventId {
    CorrelatedEventId {
        key,
        external_event_def_id: Some(ExternalEventDefId { name: def }),
    }
}

pub async fn run(lh: &mut LittleHorseClient<Channel>, c: CorrelatedCmd) -> anyhow::Result<Shown> {
    match c {
        CorrelatedCmd::Put { key, def, content } => one(
            "littlehorse.CorrelatedEvent",
            &lh.put_correlated_event(PutCorrelatedEventRequest {
                key,
                external_event_def_id: Some(ExternalEventDefId { name: def }),
                content: Some(content.into_value()?),
            })
            .await?
            .into_inner(),
        ),
        CorrelatedCmd::Get { key, def } => one(
            "littlehorse.CorrelatedEvent",
            &lh.get_correlated_event(id(key, def)).await?.into_inner(),
        ),
        CorrelatedCmd::Delete { key, def } => {
            lh.delete_correlated_event(DeleteCorrelatedEventRequest {
                id: Some(id(key, def)),
            })
            .await?;
            Ok(Shown::One(serde_json::json!({"deleted": true})))
        }
        CorrelatedCmd::Search {
            def,
            has_events,
            limit,
        } => many(
            "littlehorse.CorrelatedEventIdList",
            &lh.search_correlated_event(SearchCorrelatedEventRequest {
                external_event_def_id: Some(ExternalEventDefId { name: def }),
                has_external_events: has_events,
                limit,
                ..Default::default()
            })
            .await?
            .into_inner(),
        ),
    }
}
