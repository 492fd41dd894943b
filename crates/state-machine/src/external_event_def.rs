//! Put/Delete ExternalEventDef (semantics §2).

use halter_api::littlehorse::{
    external_event_retention_policy::ExtEvtGcPolicy, DeleteExternalEventDefRequest,
    ExternalEventDef, ExternalEventDefId, PutExternalEventDefRequest,
};
use halter_api::{names::check_name, values};
use halter_storage::codec;

use crate::ctx::Ctx;
use crate::error::{invalid, HResult, Rejection};
use crate::time::ts;

/// The ExternalEventDef `name`, for checks that answer with a [`Rejection`] (see
/// [`crate::ctx::find_named`]).
pub(crate) fn find(ctx: &Ctx, name: &str) -> Result<Option<ExternalEventDef>, Rejection> {
    crate::ctx::find_named(&ctx.tables.external_event_defs, name)
}

pub fn put(ctx: &mut Ctx, req: &PutExternalEventDefRequest) -> HResult<ExternalEventDef> {
    check_name("ExternalEventDef name", &req.name)?;
    if let Some(policy) = &req.retention_policy {
        match policy.ext_evt_gc_policy {
            Some(ExtEvtGcPolicy::SecondsAfterPut(s)) if s <= 0 => {
                return Err(invalid(format!(
                    "retention_policy.seconds_after_put must be positive, got {s}"
                ))
                .into())
            }
            _ => {}
        }
    }
    values::return_type_of(req.content_type.as_ref()).map_err(|what| {
        invalid(format!(
            "ExternalEventDef '{}': content_type uses {what}, which Halter does not support yet",
            req.name
        ))
    })?;
    if let Some(cfg) = &req.correlated_event_config {
        if cfg.ttl_seconds.is_some_and(|t| t <= 0) {
            return Err(invalid("correlated_event_config.ttl_seconds must be positive").into());
        }
    }
    let existing: Option<ExternalEventDef> =
        codec::get(ctx.tables.external_event_defs.open()?, req.name.as_str())?;
    let def = ExternalEventDef {
        id: Some(ExternalEventDefId {
            name: req.name.clone(),
        }),
        // An upsert keeps the time the def was first created.
        created_at: existing.and_then(|d| d.created_at).or(Some(ts(ctx.now_ms))),
        retention_policy: Some(req.retention_policy.unwrap_or_default()),
        type_information: req.content_type.clone(),
        correlated_event_config: req.correlated_event_config,
    };
    codec::put(
        ctx.tables.external_event_defs.open_mut()?,
        req.name.as_str(),
        &def,
    )?;
    Ok(def)
}

/// Deleting is idempotent: deleting a def that does not exist succeeds. Events already put
/// stay where they are (with their WfRun, or until their retention).
pub fn delete(ctx: &mut Ctx, req: &DeleteExternalEventDefRequest) -> HResult<()> {
    let name = crate::error::id_name(
        "ExternalEventDef name",
        req.id.as_ref().map(|i| i.name.as_str()),
    )?;
    ctx.tables.external_event_defs.open_mut()?.remove(name)?;
    Ok(())
}
