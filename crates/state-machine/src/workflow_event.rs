//! WorkflowEventDefs and the WorkflowEvents THROW_EVENT nodes throw: how a WfRun tells the
//! clients waiting on it (`AwaitWorkflowEvent`) that something happened.
//!
//! An event belongs to its WfRun (deleted with it) and is numbered per (WfRun, def) from 0 in
//! the order it was thrown, as LittleHorse numbers them, so a client can name the events it has
//! already seen in `workflow_events_to_ignore`.

use halter_api::littlehorse::{
    DeleteWorkflowEventDefRequest, NodeRunId, PutWorkflowEventDefRequest, VariableValue, WfRunId,
    WorkflowEvent, WorkflowEventDef, WorkflowEventDefId, WorkflowEventId,
};
use halter_api::{names::check_name, values};
use halter_storage::codec;
use redb::ReadableTable;

use crate::ctx::{Ctx, Effect};
use crate::error::{invalid, HResult, Rejection};
use crate::time::ts;

/// The WorkflowEventDef `name`, for checks that answer with a [`Rejection`] (PutWfSpec's).
pub(crate) fn find_def(ctx: &Ctx, name: &str) -> Result<Option<WorkflowEventDef>, Rejection> {
    let table = ctx
        .tables
        .workflow_event_defs
        .open()
        .map_err(|e| invalid(e.to_string()))?;
    codec::get(table, name).map_err(|e| invalid(e.to_string()))
}

/// Creates the def. Putting the same def again answers the stored one (SDKs register their
/// defs at every start); a different `content_type` under the same name is `ALREADY_EXISTS`,
/// since WfRuns already throwing it rely on its type.
pub fn put_def(ctx: &mut Ctx, req: &PutWorkflowEventDefRequest) -> HResult<WorkflowEventDef> {
    check_name("WorkflowEventDef name", &req.name)?;
    if let Some(td) = req
        .content_type
        .as_ref()
        .and_then(|c| c.return_type.as_ref())
    {
        values::primitive_of(td).map_err(|what| {
            invalid(format!(
                "WorkflowEventDef '{}': content_type uses {what}, which Halter does not support yet",
                req.name
            ))
        })?;
    }
    let content_type = Some(req.content_type.clone().unwrap_or_default());
    let existing: Option<WorkflowEventDef> =
        codec::get(ctx.tables.workflow_event_defs.open()?, req.name.as_str())?;
    if let Some(existing) = existing {
        if existing.content_type == content_type {
            return Ok(existing);
        }
        return Err(Rejection::AlreadyExists(format!(
            "WorkflowEventDef '{}' already exists with a different content_type",
            req.name
        ))
        .into());
    }
    let def = WorkflowEventDef {
        id: Some(WorkflowEventDefId {
            name: req.name.clone(),
        }),
        created_at: Some(ts(ctx.now_ms)),
        content_type,
    };
    codec::put(
        ctx.tables.workflow_event_defs.open_mut()?,
        req.name.as_str(),
        &def,
    )?;
    Ok(def)
}

/// Deleting is idempotent. Events already thrown stay with their WfRuns; a WfSpec that throws
/// the def fails that THROW_EVENT node from then on.
pub fn delete_def(ctx: &mut Ctx, req: &DeleteWorkflowEventDefRequest) -> HResult<()> {
    let name = req
        .id
        .as_ref()
        .map(|i| i.name.as_str())
        .ok_or_else(|| invalid("missing id"))?;
    check_name("WorkflowEventDef name", name)?;
    ctx.tables.workflow_event_defs.open_mut()?.remove(name)?;
    Ok(())
}

/// Throws an event of `def` with `content` from the NodeRun `node`. `Ok(Err(why))` when the
/// event cannot be thrown (the def is gone, or the content is not of its type): the node fails
/// with `VAR_SUB_ERROR` and nothing was written.
pub(crate) fn throw(
    ctx: &mut Ctx,
    node: &NodeRunId,
    def: &str,
    content: VariableValue,
) -> HResult<Result<WorkflowEventId, String>> {
    let wf = node
        .wf_run_id
        .as_ref()
        .map(|w| w.id.as_str())
        .unwrap_or_default();
    let stored: Option<WorkflowEventDef> = codec::get(ctx.tables.workflow_event_defs.open()?, def)?;
    let Some(stored) = stored else {
        return Ok(Err(format!("No WorkflowEventDef named '{def}'")));
    };
    if let Some(td) = stored
        .content_type
        .as_ref()
        .and_then(|c| c.return_type.as_ref())
    {
        let Ok(ty) = values::primitive_of(td) else {
            return Ok(Err(format!(
                "WorkflowEventDef '{def}' has a content_type Halter does not support"
            )));
        };
        if !values::admits(ty, &content) {
            return Ok(Err(format!(
                "WorkflowEventDef '{def}' expects content of type {}, got {}",
                ty.as_str_name(),
                values::type_name(values::type_of(&content))
            )));
        }
    }
    let number = match ctx
        .tables
        .workflow_events
        .open()?
        .range((wf, def, 0u32)..=(wf, def, u32::MAX))?
        .next_back()
    {
        Some(row) => row?.0.value().2 + 1,
        None => 0,
    };
    let id = WorkflowEventId {
        wf_run_id: Some(WfRunId {
            id: wf.to_string(),
            ..Default::default()
        }),
        workflow_event_def_id: Some(WorkflowEventDefId { name: def.into() }),
        number: number as i32,
    };
    let event = WorkflowEvent {
        id: Some(id.clone()),
        content: Some(content),
        created_at: Some(ts(ctx.now_ms)),
        node_run_id: Some(node.clone()),
    };
    codec::put(
        ctx.tables.workflow_events.open_mut()?,
        (wf, def, number),
        &event,
    )?;
    ctx.effects.push(Effect::WorkflowEventThrown {
        wf_run_id: wf.to_string(),
    });
    Ok(Ok(id))
}

/// Removes every WorkflowEvent of the WfRun (its deletion).
pub(crate) fn delete_all_of(ctx: &mut Ctx, wf: &str) -> HResult<()> {
    let mut keys = Vec::new();
    for row in ctx.tables.workflow_events.open()?.range((wf, "", 0u32)..)? {
        let (k, _) = row?;
        let (w, d, n) = k.value();
        if w != wf {
            break;
        }
        keys.push((d.to_string(), n));
    }
    let table = ctx.tables.workflow_events.open_mut()?;
    for (d, n) in &keys {
        table.remove((wf, d.as_str(), *n))?;
    }
    Ok(())
}
