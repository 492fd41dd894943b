//! Correlated events (semantics §7): an event put by key rather than by WfRun id, matched to
//! every EXTERNAL_EVENT NodeRun that waits for that key.
//!
//! A match is part of one command: the put that finds waiters, or the arrival that finds the
//! event, creates one ExternalEvent per NodeRun, targeted at it, and claims it in the same
//! transaction. There is no second hop in which a match could be lost or made twice.
//! Waiting NodeRuns are indexed in `CORRELATION_WAITERS` from arrival until they claim, time out
//! or are deleted.

use halter_api::halter::timer;
use halter_api::limits::MAX_GUID_LEN as MAX_ID_LEN;
use halter_api::littlehorse::{
    node_run::NodeType, CorrelatedEvent, CorrelatedEventId, DeleteCorrelatedEventRequest,
    ExternalEventDef, ExternalEventDefId, ExternalEventId, LhStatus, PutCorrelatedEventRequest,
    PutExternalEventRequest, VariableValue,
};
use halter_api::names::check_name;
use halter_api::wf_run_id::wf_run_id_of;
use halter_storage::codec;
use redb::ReadableTable;

use crate::ctx::Ctx;
use crate::error::{invalid, HResult, Rejection};
use crate::external_event;
use crate::interpreter;
use crate::run_state::{get_node, status, RunState};
use crate::time::{after_seconds, ms, ts};
use crate::timers;
use crate::wf_run::is_terminal;

pub fn ttl_timer_id(def: &str, key: &str) -> String {
    format!("c/{def}/{key}")
}

fn def_name(id: Option<&ExternalEventDefId>) -> Result<&str, Rejection> {
    let name = id
        .map(|d| d.name.as_str())
        .ok_or_else(|| invalid("missing external_event_def_id"))?;
    check_name("ExternalEventDef name", name)?;
    Ok(name)
}

/// A key is any non-empty string up to the id length limit without `/` or `~` (LittleHorse's
/// rule: both separate parts of its store keys).
pub fn check_key(key: &str) -> Result<(), Rejection> {
    if key.is_empty() {
        return Err(invalid("a correlation key must not be empty"));
    }
    if key.len() > MAX_ID_LEN {
        return Err(invalid(format!(
            "correlation key is longer than {MAX_ID_LEN} bytes"
        )));
    }
    if key.contains('/') || key.contains('~') {
        return Err(invalid(format!(
            "CorrelatedEvent keys cannot contain '/' or '~': '{key}'"
        )));
    }
    Ok(())
}

pub fn get(ctx: &Ctx, def: &str, key: &str) -> HResult<Option<CorrelatedEvent>> {
    Ok(codec::get(
        ctx.tables.correlated_events.open()?,
        (def, key),
    )?)
}

fn save(ctx: &mut Ctx, ev: &CorrelatedEvent) -> HResult<()> {
    let id = ev.id.clone().unwrap_or_default();
    let def = id.external_event_def_id.map(|d| d.name).unwrap_or_default();
    codec::put(
        ctx.tables.correlated_events.open_mut()?,
        (def.as_str(), id.key.as_str()),
        ev,
    )?;
    Ok(())
}

/// Removes a CorrelatedEvent, its index row and its ttl timer; a missing one is no error.
pub fn remove(ctx: &mut Ctx, def: &str, key: &str) -> HResult<()> {
    if let Some(ev) = get(ctx, def, key)? {
        let created = ev.created_at.as_ref().map(ms).unwrap_or_default();
        ctx.tables
            .correlated_by_time
            .open_mut()?
            .remove((def, created, key))?;
        ctx.tables
            .correlated_events
            .open_mut()?
            .remove((def, key))?;
    }
    timers::cancel(ctx, &ttl_timer_id(def, key))
}

/// PutCorrelatedEvent: stores the event and matches every NodeRun waiting for its key. An
/// existing key is ALREADY_EXISTS, except that an identical retry (same content) gets the stored
/// event back.
pub fn put(ctx: &mut Ctx, req: &PutCorrelatedEventRequest) -> HResult<CorrelatedEvent> {
    let def_name = def_name(req.external_event_def_id.as_ref())?;
    check_key(&req.key)?;
    let def: ExternalEventDef = codec::get(ctx.tables.external_event_defs.open()?, def_name)?
        .ok_or_else(|| invalid(format!("No ExternalEventDef named '{def_name}'")))?;
    let Some(cfg) = def.correlated_event_config else {
        return Err(invalid(format!(
            "ExternalEventDef '{def_name}' does not have correlated events enabled (correlated_event_config)"
        ))
        .into());
    };
    let content = req.content.clone().unwrap_or_default();
    external_event::check_content(&def, &content)?;
    if let Some(existing) = get(ctx, def_name, &req.key)? {
        if existing.content.clone().unwrap_or_default() == content {
            return Ok(existing);
        }
        return Err(Rejection::AlreadyExists(format!(
            "CorrelatedEvent with key '{}' of '{def_name}' already exists",
            req.key
        ))
        .into());
    }
    let mut ev = CorrelatedEvent {
        id: Some(CorrelatedEventId {
            key: req.key.clone(),
            external_event_def_id: Some(ExternalEventDefId {
                name: def_name.to_string(),
            }),
        }),
        created_at: Some(ts(ctx.now_ms)),
        content: Some(content),
        external_events: vec![],
    };
    ctx.tables
        .correlated_by_time
        .open_mut()?
        .insert((def_name, ctx.now_ms, req.key.as_str()), ())?;
    if let Some(ttl) = cfg.ttl_seconds {
        timers::arm(
            ctx,
            &ttl_timer_id(def_name, &req.key),
            after_seconds(ctx.now_ms, ttl),
            timer::Kind::CorrelatedEventTtl(ev.id.clone().unwrap_or_default()),
        )?;
    }
    let waiters = take_waiters(ctx, def_name, &req.key)?;
    for (wf, thread, position) in waiters {
        if let Some(id) = deliver(ctx, &ev, &wf, thread, position)? {
            ev.external_events.push(id);
        }
    }
    save(ctx, &ev)?;
    if cfg.delete_after_first_correlation && !ev.external_events.is_empty() {
        // Deleted, but answered as it stood: the caller sees which events it made.
        remove(ctx, def_name, &req.key)?;
    }
    Ok(ev)
}

/// Every NodeRun registered as waiting for (def, key), removed from the index.
fn take_waiters(ctx: &mut Ctx, def: &str, key: &str) -> HResult<Vec<(String, i32, i32)>> {
    let mut out = Vec::new();
    for row in ctx
        .tables
        .correlation_waiters
        .open()?
        .range((def, key, "", 0u32, 0u32)..=(def, key, "\u{10FFFF}", u32::MAX, u32::MAX))?
    {
        let (k, _) = row?;
        let (_, _, wf, t, p) = k.value();
        out.push((wf.to_string(), t as i32, p as i32));
    }
    for (wf, t, p) in &out {
        ctx.tables.correlation_waiters.open_mut()?.remove((
            def,
            key,
            wf.as_str(),
            *t as u32,
            *p as u32,
        ))?;
    }
    Ok(out)
}

/// Gives the NodeRun (wf, thread, position), if it still waits for this event's key, its own
/// ExternalEvent with the event's content, and lets it claim (a halted NodeRun claims when its
/// thread resumes). Returns the new event's id.
fn deliver(
    ctx: &mut Ctx,
    ev: &CorrelatedEvent,
    wf: &str,
    thread: i32,
    position: i32,
) -> HResult<Option<ExternalEventId>> {
    let id = ev.id.clone().unwrap_or_default();
    let def = id.external_event_def_id.clone().unwrap_or_default();
    let Some(mut run) = RunState::load(ctx, wf)? else {
        return Ok(None);
    };
    if is_terminal(run.wf_run.status()) {
        return Ok(None);
    }
    if crate::interpreter::threads::halted_for_good(&run, thread) {
        return Ok(None);
    }
    let Some(nr) = get_node(ctx, wf, thread, position)? else {
        return Ok(None);
    };
    let waits = matches!(status(nr.status), LhStatus::Running | LhStatus::Halted)
        && matches!(&nr.node_type, Some(NodeType::ExternalEvent(e))
            if e.external_event_id.is_none()
                && e.correlation_key.as_deref() == Some(id.key.as_str())
                && e.external_event_def_id.as_ref() == Some(&def));
    if !waits {
        return Ok(None);
    }
    let event_id = create_event(ctx, wf, &def.name, ev.content.clone(), thread, position)?;
    interpreter::offer_events(ctx, &mut run, &def.name)?;
    Ok(Some(event_id))
}

/// Stores an ExternalEvent for a correlation, targeted at (thread, position). Its guid is
/// derived from the event sequence number, so every replica makes the same one: `ce` and 30 hex
/// digits (a guid a client already used for this WfRun and def is skipped).
fn create_event(
    ctx: &mut Ctx,
    wf: &str,
    def: &str,
    content: Option<VariableValue>,
    thread: i32,
    position: i32,
) -> HResult<ExternalEventId> {
    let mut id = ExternalEventId {
        wf_run_id: Some(wf_run_id_of(wf)),
        external_event_def_id: Some(ExternalEventDefId {
            name: def.to_string(),
        }),
        guid: String::new(),
    };
    loop {
        id.guid = format!("ce{:030x}", external_event::peek_seq(ctx)?);
        if external_event::get(ctx, &id)?.is_none() {
            break;
        }
        external_event::next_seq(ctx)?;
    }
    let req = PutExternalEventRequest {
        wf_run_id: id.wf_run_id,
        external_event_def_id: id.external_event_def_id,
        guid: Some(id.guid),
        content,
        thread_run_number: Some(thread),
        node_run_position: Some(position),
    };
    let event = external_event::store(ctx, &req)?;
    Ok(event.id.unwrap_or_default())
}

/// An EXTERNAL_EVENT NodeRun arrived waiting for `key`: an existing CorrelatedEvent gives it its
/// ExternalEvent at once (the caller's claim then takes it); otherwise it is registered as a
/// waiter.
pub fn on_arrival(
    ctx: &mut Ctx,
    wf: &str,
    def: &str,
    key: &str,
    thread: i32,
    position: i32,
) -> HResult<()> {
    let Some(mut ev) = get(ctx, def, key)? else {
        ctx.tables
            .correlation_waiters
            .open_mut()?
            .insert((def, key, wf, thread as u32, position as u32), ())?;
        return Ok(());
    };
    let id = create_event(ctx, wf, def, ev.content.clone(), thread, position)?;
    ev.external_events.push(id);
    let delete_after_first =
        codec::get::<_, ExternalEventDef, _>(ctx.tables.external_event_defs.open()?, def)?
            .and_then(|d| d.correlated_event_config)
            .is_some_and(|c| c.delete_after_first_correlation);
    if delete_after_first {
        remove(ctx, def, key)
    } else {
        save(ctx, &ev)
    }
}

/// A NodeRun stopped waiting (claimed, timed out, deleted): it leaves the waiter index.
pub fn forget_waiter(
    ctx: &mut Ctx,
    wf: &str,
    def: &str,
    key: &str,
    thread: i32,
    position: i32,
) -> HResult<()> {
    ctx.tables.correlation_waiters.open_mut()?.remove((
        def,
        key,
        wf,
        thread as u32,
        position as u32,
    ))?;
    Ok(())
}

/// DeleteCorrelatedEvent: idempotent. The ExternalEvents it made stay with their WfRuns.
pub fn delete(ctx: &mut Ctx, req: &DeleteCorrelatedEventRequest) -> HResult<()> {
    let id = req.id.as_ref().ok_or_else(|| invalid("missing id"))?;
    let def = def_name(id.external_event_def_id.as_ref())?;
    check_key(&id.key)?;
    remove(ctx, def, &id.key)
}

/// The ttl of (def, key) ran out.
pub fn expire(ctx: &mut Ctx, id: &CorrelatedEventId) -> HResult<()> {
    let def = id
        .external_event_def_id
        .as_ref()
        .map(|d| d.name.as_str())
        .unwrap_or_default();
    remove(ctx, def, &id.key)
}
