//! WorkflowEventDefs and the WorkflowEvents THROW_EVENT nodes throw: how a WfRun tells the
//! clients waiting on it (`AwaitWorkflowEvent`) that something happened.
//!
//! An event belongs to its WfRun (deleted with it) and is numbered per (WfRun, def) from 0 in
//! the order it was thrown, as LittleHorse numbers them, so a client can name the events it has
//! already seen in `workflow_events_to_ignore`.

use halter_api::wf_run_id::{key_of, wf_run_id_of};
use std::collections::BTreeSet;

use halter_api::littlehorse::{
    DeleteWorkflowEventDefRequest, NodeRunId, PutWorkflowEventDefRequest, VariableValue,
    WorkflowEvent, WorkflowEventDef, WorkflowEventDefId, WorkflowEventId,
};
use halter_api::{names::check_name, values};
use halter_storage::{codec, ReadTables, Tables};
use redb::ReadableTable;

use crate::ctx::{Ctx, Effect};
use crate::error::{invalid, ApplyError, HResult, Rejection};
use crate::time::ts;

/// The WorkflowEventDef `name`, for PutWfSpec's checks (see [`crate::ctx::find_named`]).
pub(crate) fn find_def(ctx: &Ctx, name: &str) -> Result<Option<WorkflowEventDef>, Rejection> {
    crate::ctx::find_named(&ctx.tables.workflow_event_defs, name)
}

/// Creates the def. Putting the same def again answers the stored one (SDKs register their
/// defs at every start); a different `content_type` under the same name is `ALREADY_EXISTS`,
/// since WfRuns already throwing it rely on its type.
pub fn put_def(ctx: &mut Ctx, req: &PutWorkflowEventDefRequest) -> HResult<WorkflowEventDef> {
    check_name("WorkflowEventDef name", &req.name)?;
    values::return_type_of(req.content_type.as_ref()).map_err(|what| {
        invalid(format!(
            "WorkflowEventDef '{}': content_type uses {what}, which Halter does not support yet",
            req.name
        ))
    })?;
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
    let name = crate::error::id_name(
        "WorkflowEventDef name",
        req.id.as_ref().map(|i| i.name.as_str()),
    )?;
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
    let wf = node.wf_run_id.as_ref().map(key_of).unwrap_or_default();
    let wf: &str = &wf;
    let stored: Option<WorkflowEventDef> = codec::get(ctx.tables.workflow_event_defs.open()?, def)?;
    let Some(stored) = stored else {
        return Ok(Err(format!("No WorkflowEventDef named '{def}'")));
    };
    let Ok(ty) = values::return_type_of(stored.content_type.as_ref()) else {
        return Ok(Err(format!(
            "WorkflowEventDef '{def}' has a content_type Halter does not support"
        )));
    };
    if let Some(ty) = ty {
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
        Some(row) => row?.0.value().2.checked_add(1),
        None => Some(0),
    };
    let Some((number, public)) = number.and_then(|n| Some((n, i32::try_from(n).ok()?))) else {
        return Ok(Err(format!(
            "WfRun '{wf}' has thrown as many WorkflowEvents of '{def}' as can be numbered"
        )));
    };
    let id = WorkflowEventId {
        wf_run_id: Some(wf_run_id_of(wf)),
        workflow_event_def_id: Some(WorkflowEventDefId { name: def.into() }),
        number: public,
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
    ctx.tables
        .workflow_events_by_def
        .open_mut()?
        .insert((def, ctx.now_ms, wf, number), ())?;
    ctx.effects.push(Effect::WorkflowEventThrown {
        wf_run_id: wf.to_string(),
    });
    Ok(Ok(id))
}

/// Removes every WorkflowEvent of the WfRun, and its index rows (the WfRun's deletion).
pub(crate) fn delete_all_of(ctx: &mut Ctx, wf: &str) -> HResult<()> {
    let mut keys = Vec::new();
    for row in ctx.tables.workflow_events.open()?.range((wf, "", 0u32)..)? {
        let (k, v) = row?;
        let (w, d, n) = k.value();
        if w != wf {
            break;
        }
        let event: WorkflowEvent = codec::decode(v.value())?;
        keys.push((d.to_string(), n, created_ms(&event)));
    }
    for (d, n, at) in &keys {
        ctx.tables
            .workflow_events
            .open_mut()?
            .remove((wf, d.as_str(), *n))?;
        ctx.tables
            .workflow_events_by_def
            .open_mut()?
            .remove((d.as_str(), *at, wf, *n))?;
    }
    Ok(())
}

/// When the event was thrown, in ms (the index's and `AwaitWorkflowEvent`'s order).
pub(crate) fn created_ms(event: &WorkflowEvent) -> i64 {
    event
        .created_at
        .as_ref()
        .map(crate::time::ms)
        .unwrap_or_default()
}

/// The index rows the stored WorkflowEvents call for, in key order.
fn index_rows<T>(events: &T) -> HResult<BTreeSet<(String, i64, String, u32)>>
where
    T: ReadableTable<(&'static str, &'static str, u32), &'static [u8]>,
{
    let mut rows = BTreeSet::new();
    for row in events.iter()? {
        let (k, v) = row?;
        let (wf, def, n) = k.value();
        let event: WorkflowEvent = codec::decode(v.value())?;
        rows.insert((def.to_string(), created_ms(&event), wf.to_string(), n));
    }
    Ok(rows)
}

/// Rebuilds `workflow_events_by_def` from the events (`indexes::build_if_missing`).
pub fn rebuild_index(tables: &mut Tables<'_>) -> Result<(), ApplyError> {
    let rows = index_rows(tables.workflow_events.open()?).map_err(crate::indexes::fatal)?;
    let index = tables.workflow_events_by_def.open_mut()?;
    index.retain(|_, _| false)?;
    for (def, at, wf, n) in &rows {
        index.insert((def.as_str(), *at, wf.as_str(), *n), ())?;
    }
    Ok(())
}

/// Differences between `workflow_events_by_def` and what the events call for (empty when they
/// agree), for tests.
pub fn audit(t: &ReadTables) -> HResult<Vec<String>> {
    let want = index_rows(t.workflow_events()?)?;
    let mut have = BTreeSet::new();
    for row in t.workflow_events_by_def()?.iter()? {
        let (k, _) = row?;
        let (def, at, wf, n) = k.value();
        have.insert((def.to_string(), at, wf.to_string(), n));
    }
    let missing = want
        .difference(&have)
        .map(|r| format!("missing index row {r:?}"));
    let stray = have
        .difference(&want)
        .map(|r| format!("stray index row {r:?}"));
    Ok(missing.chain(stray).collect())
}
