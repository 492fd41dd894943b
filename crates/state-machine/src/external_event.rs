//! PutExternalEvent (semantics §3) and the event indexes: claiming the oldest matching
//! unclaimed event, retention, deletion.
//!
//! Every event is in `EXTERNAL_EVENTS`; while unclaimed it is also in `UNCLAIMED_EVENTS`
//! (per WfRun and def, in creation order) and in `EVENTS_BY_DEF` under `claimed = false`.
//! Claiming moves it out of the first index and to `claimed = true` in the second, in the same
//! command, so no event is ever claimed twice.

use std::borrow::Cow;

use halter_api::halter::{timer, StoredExternalEvent};
use halter_api::limits::MAX_VALUE_BYTES;
use halter_api::littlehorse::{
    ExternalEvent, ExternalEventDef, ExternalEventId, PutExternalEventRequest, VariableValue,
};
use halter_api::names::{check_guid, check_name};
use halter_api::values;
use halter_api::wf_run_id::{checked_wf_run_key, key_of};
use halter_storage::{codec, tables::meta};
use prost::Message;
use redb::ReadableTable;

use crate::ctx::Ctx;
use crate::error::{invalid, HResult, Rejection};
use crate::interpreter;
use crate::run_state::{put_node, RunState};
use crate::time::{after_seconds, ms, ts};
use crate::timers;
use crate::wf_run::is_terminal;

fn key(id: &ExternalEventId) -> (Cow<'_, str>, &str, &str) {
    (
        id.wf_run_id.as_ref().map(key_of).unwrap_or_default(),
        id.external_event_def_id
            .as_ref()
            .map(|d| d.name.as_str())
            .unwrap_or_default(),
        id.guid.as_str(),
    )
}

pub fn get(ctx: &Ctx, id: &ExternalEventId) -> HResult<Option<StoredExternalEvent>> {
    let (wf, def, guid) = key(id);
    let wf: &str = &wf;
    Ok(codec::get(
        ctx.tables.external_events.open()?,
        (wf, def, guid),
    )?)
}

/// The sequence number the next stored event gets.
pub fn peek_seq(ctx: &Ctx) -> HResult<u64> {
    Ok(ctx
        .tables
        .meta
        .open()?
        .get(meta::EVENT_SEQ)?
        .map(|g| g.value())
        .unwrap_or(0))
}

/// Takes the next event sequence number.
pub fn next_seq(ctx: &mut Ctx) -> HResult<u64> {
    let seq = peek_seq(ctx)?;
    ctx.tables
        .meta
        .open_mut()?
        .insert(meta::EVENT_SEQ, seq + 1)?;
    Ok(seq)
}

/// Validates the request completely before anything is written.
fn check(ctx: &Ctx, req: &PutExternalEventRequest) -> Result<ExternalEventDef, Rejection> {
    let wf = req
        .wf_run_id
        .as_ref()
        .ok_or_else(|| invalid("missing wf_run_id"))?;
    checked_wf_run_key(wf)?;
    let def_name = req
        .external_event_def_id
        .as_ref()
        .map(|d| d.name.as_str())
        .ok_or_else(|| invalid("missing external_event_def_id"))?;
    check_name("ExternalEventDef name", def_name)?;
    let def = crate::external_event_def::find(ctx, def_name)?
        .ok_or_else(|| invalid(format!("No ExternalEventDef named '{def_name}'")))?;
    // The receiving node generates a missing guid before proposing, so the log always has one.
    let guid = req
        .guid
        .as_deref()
        .ok_or_else(|| invalid("missing guid (the server fills it in before proposing)"))?;
    check_guid(guid)?;
    if req.thread_run_number.is_some_and(|t| t < 0) {
        return Err(invalid("thread_run_number must not be negative"));
    }
    if req.node_run_position.is_some_and(|p| p < 0) {
        return Err(invalid("node_run_position must not be negative"));
    }
    Ok(def)
}

/// Content fits the def's size limit, supported kinds and declared type (unset = null).
pub fn check_content(def: &ExternalEventDef, content: &VariableValue) -> Result<(), Rejection> {
    if content.encoded_len() > MAX_VALUE_BYTES {
        return Err(Rejection::ResourceExhausted(format!(
            "event content is {} bytes, more than the limit of {MAX_VALUE_BYTES}",
            content.encoded_len()
        )));
    }
    if let Some(kind) = values::is_unsupported_kind(content) {
        return Err(invalid(format!(
            "{kind} are not supported yet as event content"
        )));
    }
    let ty = values::return_type_of(def.type_information.as_ref())
        .map_err(|w| invalid(format!("def type uses {w}")))?;
    if let Some(ty) = ty {
        if !values::admits(ty, content) {
            return Err(invalid(format!(
                "ExternalEventDef '{}' expects content of type {}, got {}",
                def.id.as_ref().map(|i| i.name.as_str()).unwrap_or_default(),
                ty.as_str_name(),
                values::type_name(values::type_of(content))
            )));
        }
    }
    Ok(())
}

pub fn put(ctx: &mut Ctx, req: &PutExternalEventRequest) -> HResult<ExternalEvent> {
    // Opened here, so that a storage failure is fatal, not a rejection from `check`.
    ctx.tables.external_event_defs.open()?;
    let def = check(ctx, req)?;
    let id = ExternalEventId {
        wf_run_id: req.wf_run_id.clone(),
        external_event_def_id: req.external_event_def_id.clone(),
        guid: req.guid.clone().unwrap_or_default(),
    };
    // Step 3: the same id again. An identical retry gets the stored event; anything else is a
    // conflict. Compared against what was asked, not where the event was claimed.
    if let Some(stored) = get(ctx, &id)? {
        let event = stored.event.clone().unwrap_or_default();
        let same = event.content.clone().unwrap_or_default()
            == req.content.clone().unwrap_or_default()
            && stored.target_thread_run_number == req.thread_run_number
            && stored.target_node_run_position == req.node_run_position;
        return if same {
            Ok(event)
        } else {
            Err(Rejection::AlreadyExists(format!(
                "ExternalEvent {}/{}/{} exists with different content or targeting",
                key(&id).0,
                key(&id).1,
                key(&id).2
            ))
            .into())
        };
    }
    if let Some(content) = &req.content {
        check_content(&def, content)?;
    }
    let (wf, def_name, _) = key(&id);
    let wf: &str = &wf;
    let live = RunState::load(ctx, wf)?.filter(|run| !is_terminal(run.wf_run.status()));
    if let Some(mut run) = live {
        if let Some(event) = put_claimed(ctx, &mut run, req, def_name)? {
            return Ok(event);
        }
        store_with_def(ctx, req, Some(&def))?;
        // Step 7: a live WfRun is interrupted by the event, or else gets it offered to its
        // waiting nodes.
        let content = req.content.clone().unwrap_or_default();
        let target = req.thread_run_number;
        if interpreter::interrupts::trigger(ctx, &mut run, def_name, &id, &content, target)? {
            claim_for_interrupt(ctx, &id)?;
            interpreter::advance(ctx, &mut run)?;
        } else {
            interpreter::offer_events(ctx, &mut run, def_name)?;
        }
        // The event may have been claimed just now: answer with it as stored.
        return Ok(get(ctx, &id)?.and_then(|s| s.event).unwrap_or_default());
    }
    // A missing (or ended) WfRun keeps the event ("pre-emptive"): a WfRun created later with
    // this id claims it on arrival (an interrupt trigger put before its WfRun never fires).
    store_with_def(ctx, req, Some(&def))
}

/// The common case of step 7 in one go: the live WfRun `run` has no unclaimed event of the
/// def, the event triggers no interrupt, and a NodeRun waits for it. `offer_events` would then
/// hand this event to the first such NodeRun; it is stored claimed by that NodeRun at once,
/// without the unclaimed index rows and retention timer that the claim would remove again.
/// The tables end exactly as on the long way round. Returns `None` (nothing written) otherwise.
fn put_claimed(
    ctx: &mut Ctx,
    run: &mut RunState,
    req: &PutExternalEventRequest,
    def: &str,
) -> HResult<Option<ExternalEvent>> {
    let wf = run.id().to_string();
    let (thread, position) = (req.thread_run_number, req.node_run_position);
    if !interpreter::interrupts::targets(run, def, thread).is_empty()
        || has_unclaimed(ctx, &wf, def)?
    {
        return Ok(None);
    }
    let Some((number, mut nr)) = interpreter::first_claimant(ctx, run, def, thread, position)?
    else {
        return Ok(None);
    };
    let at = nr.id.as_ref().map(|i| i.position).unwrap_or_default();
    let mut stored = new_stored(ctx, req)?;
    let mut event = stored.event.take().unwrap_or_default();
    event.claimed = true;
    event.thread_run_number = Some(number);
    event.node_run_position = Some(at);
    stored.event = Some(event.clone());
    let guid = req.guid.as_deref().unwrap_or_default();
    codec::put(
        ctx.tables.external_events.open_mut()?,
        (wf.as_str(), def, guid),
        &stored,
    )?;
    ctx.tables
        .events_by_def
        .open_mut()?
        .insert((def, true, ctx.now_ms, stored.seq), (wf.as_str(), guid))?;
    interpreter::took_event(ctx, &wf, number, &mut nr, &event)?;
    put_node(ctx, &nr)?;
    interpreter::advance(ctx, run)?;
    Ok(Some(event))
}

/// Whether `(wf, def)` has an unclaimed event.
fn has_unclaimed(ctx: &Ctx, wf: &str, def: &str) -> HResult<bool> {
    Ok(ctx
        .tables
        .unclaimed_events
        .open()?
        .range((wf, def, i64::MIN, 0u64)..=(wf, def, i64::MAX, u64::MAX))?
        .next()
        .is_some())
}

/// Steps 5 and 6: stores a checked, new event unclaimed, with its indexes and retention timer.
pub fn store(ctx: &mut Ctx, req: &PutExternalEventRequest) -> HResult<ExternalEvent> {
    let def_name = req
        .external_event_def_id
        .as_ref()
        .map(|d| d.name.as_str())
        .unwrap_or_default();
    let def: Option<ExternalEventDef> =
        codec::get(ctx.tables.external_event_defs.open()?, def_name)?;
    store_with_def(ctx, req, def.as_ref())
}

/// A new event as a put stores it, unclaimed, with the next sequence number (taken here).
fn new_stored(ctx: &mut Ctx, req: &PutExternalEventRequest) -> HResult<StoredExternalEvent> {
    let id = ExternalEventId {
        wf_run_id: req.wf_run_id.clone(),
        external_event_def_id: req.external_event_def_id.clone(),
        guid: req.guid.clone().unwrap_or_default(),
    };
    let seq = next_seq(ctx)?;
    let event = ExternalEvent {
        id: Some(id),
        created_at: Some(ts(ctx.now_ms)),
        content: Some(req.content.clone().unwrap_or_default()),
        thread_run_number: req.thread_run_number,
        node_run_position: req.node_run_position,
        claimed: false,
    };
    Ok(StoredExternalEvent {
        event: Some(event),
        seq,
        target_thread_run_number: req.thread_run_number,
        target_node_run_position: req.node_run_position,
    })
}

/// [`store`] with the event's def already read (`put` has it from its checks).
fn store_with_def(
    ctx: &mut Ctx,
    req: &PutExternalEventRequest,
    def: Option<&ExternalEventDef>,
) -> HResult<ExternalEvent> {
    let stored = new_stored(ctx, req)?;
    let id = stored
        .event
        .as_ref()
        .and_then(|e| e.id.clone())
        .unwrap_or_default();
    let seq = stored.seq;
    let (wf, def_name, guid) = key(&id);
    let wf: &str = &wf;
    codec::put(
        ctx.tables.external_events.open_mut()?,
        (wf, def_name, guid),
        &stored,
    )?;
    ctx.tables
        .unclaimed_events
        .open_mut()?
        .insert((wf, def_name, ctx.now_ms, seq), guid)?;
    ctx.tables
        .events_by_def
        .open_mut()?
        .insert((def_name, false, ctx.now_ms, seq), (wf, guid))?;

    use halter_api::littlehorse::external_event_retention_policy::ExtEvtGcPolicy;
    if let Some(ExtEvtGcPolicy::SecondsAfterPut(s)) = def
        .and_then(|d| d.retention_policy.as_ref())
        .and_then(|p| p.ext_evt_gc_policy)
    {
        timers::arm(
            ctx,
            &timers::event_retention_timer_id(wf, def_name, guid),
            after_seconds(ctx.now_ms, s),
            timer::Kind::EventRetention(id.clone()),
        )?;
    }

    Ok(stored.event.unwrap_or_default())
}

/// Claims, for the NodeRun at (thread, position), the oldest unclaimed event of `(wf, def)`
/// whose targeting allows it. Returns the event as claimed.
pub fn claim_oldest(
    ctx: &mut Ctx,
    wf: &str,
    def: &str,
    thread: i32,
    position: i32,
) -> HResult<Option<ExternalEvent>> {
    let mut found = None;
    for row in ctx
        .tables
        .unclaimed_events
        .open()?
        .range((wf, def, i64::MIN, 0u64)..=(wf, def, i64::MAX, u64::MAX))?
    {
        let (k, v) = row?;
        let (_, _, created, seq) = k.value();
        let guid = v.value().to_string();
        let stored: Option<StoredExternalEvent> =
            codec::get(ctx.tables.external_events.open()?, (wf, def, guid.as_str()))?;
        let Some(stored) = stored else { continue };
        let thread_ok = stored.target_thread_run_number.is_none_or(|t| t == thread);
        let pos_ok = stored
            .target_node_run_position
            .is_none_or(|p| p == position);
        if thread_ok && pos_ok {
            found = Some((created, seq, guid, stored));
            break;
        }
    }
    let Some((created, seq, guid, stored)) = found else {
        return Ok(None);
    };
    let at = Some((thread, position));
    mark_claimed(ctx, (wf, def, guid.as_str()), created, seq, stored, at).map(Some)
}

/// The event `id` triggered an interrupt: it is claimed, by no NodeRun.
pub fn claim_for_interrupt(ctx: &mut Ctx, id: &ExternalEventId) -> HResult<()> {
    let Some(stored) = get(ctx, id)? else {
        return Ok(());
    };
    let created = stored
        .event
        .as_ref()
        .and_then(|e| e.created_at.as_ref())
        .map(ms)
        .unwrap_or_default();
    let seq = stored.seq;
    let (wf, def, guid) = key(id);
    let wf: &str = &wf;
    mark_claimed(ctx, (wf, def, guid), created, seq, stored, None)?;
    Ok(())
}

/// Moves an unclaimed event to claimed in every index; `at` is the claiming NodeRun's
/// (thread, position).
fn mark_claimed(
    ctx: &mut Ctx,
    (wf, def, guid): (&str, &str, &str),
    created: i64,
    seq: u64,
    mut stored: StoredExternalEvent,
    at: Option<(i32, i32)>,
) -> HResult<ExternalEvent> {
    let mut event = stored.event.take().unwrap_or_default();
    event.claimed = true;
    if let Some((thread, position)) = at {
        event.thread_run_number = Some(thread);
        event.node_run_position = Some(position);
    }
    stored.event = Some(event.clone());
    ctx.tables
        .unclaimed_events
        .open_mut()?
        .remove((wf, def, created, seq))?;
    ctx.tables
        .events_by_def
        .open_mut()?
        .remove((def, false, created, seq))?;
    ctx.tables
        .events_by_def
        .open_mut()?
        .insert((def, true, created, seq), (wf, guid))?;
    codec::put(
        ctx.tables.external_events.open_mut()?,
        (wf, def, guid),
        &stored,
    )?;
    // A claimed event stays with its WfRun: its retention no longer applies.
    timers::cancel(ctx, &timers::event_retention_timer_id(wf, def, guid))?;
    Ok(event)
}

/// Removes an event and its index rows and timer.
pub fn delete(ctx: &mut Ctx, wf: &str, def: &str, guid: &str) -> HResult<()> {
    let stored: Option<StoredExternalEvent> =
        codec::get(ctx.tables.external_events.open()?, (wf, def, guid))?;
    let Some(stored) = stored else { return Ok(()) };
    let event = stored.event.unwrap_or_default();
    let created = event.created_at.as_ref().map(ms).unwrap_or_default();
    ctx.tables
        .external_events
        .open_mut()?
        .remove((wf, def, guid))?;
    ctx.tables
        .unclaimed_events
        .open_mut()?
        .remove((wf, def, created, stored.seq))?;
    ctx.tables
        .events_by_def
        .open_mut()?
        .remove((def, event.claimed, created, stored.seq))?;
    timers::cancel(ctx, &timers::event_retention_timer_id(wf, def, guid))?;
    Ok(())
}

/// Retention fired: the event goes if nobody claimed it.
pub fn expire(ctx: &mut Ctx, id: &ExternalEventId) -> HResult<()> {
    let (wf, def, guid) = key(id);
    let wf: &str = &wf;
    if let Some(stored) = get(ctx, id)? {
        if !stored.event.is_some_and(|e| e.claimed) {
            delete(ctx, wf, def, guid)?;
        }
    }
    Ok(())
}

/// Every event of a WfRun (claimed or not, put before or after it existed).
pub fn delete_all_of(ctx: &mut Ctx, wf: &str) -> HResult<()> {
    let mut keys = Vec::new();
    for row in ctx.tables.external_events.open()?.range((wf, "", "")..)? {
        let (k, _) = row?;
        let (w, d, g) = k.value();
        if w != wf {
            break;
        }
        keys.push((d.to_string(), g.to_string()));
    }
    for (d, g) in &keys {
        delete(ctx, wf, d, g)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! `put_claimed` is a shortcut: these tests hold it to the long way round (store the event
    //! unclaimed, then offer it), table for table.

    use halter_api::build::{entry, exit, single_thread_spec, wait, wait_once_spec};
    use halter_api::halter::command::Kind;
    use halter_api::littlehorse::{
        external_event_retention_policy::ExtEvtGcPolicy, ExternalEventDefId,
        ExternalEventRetentionPolicy, PutExternalEventDefRequest, PutWfSpecRequest, RunWfRequest,
    };
    use halter_api::values;
    use halter_api::wf_run_id::{wf_run_id_of, wf_run_key};
    use halter_storage::{digest::digest, Store, Tables};

    use super::*;
    use crate::{apply, command};

    const NOW: i64 = 1_700_000_000_000;

    /// A store with the defs `go` (retention 60 s, so the long way arms and cancels a timer)
    /// and `other`, the specs and WfRuns asked for, and `before` events put before the runs.
    fn store(
        specs: &[PutWfSpecRequest],
        runs: &[(&str, &str)],
        before: &[PutExternalEventRequest],
    ) -> Store {
        let store = Store::in_memory().expect("store");
        let mut kinds = vec![
            Kind::PutExternalEventDef(PutExternalEventDefRequest {
                name: "go".into(),
                retention_policy: Some(ExternalEventRetentionPolicy {
                    ext_evt_gc_policy: Some(ExtEvtGcPolicy::SecondsAfterPut(60)),
                }),
                ..Default::default()
            }),
            Kind::PutExternalEventDef(PutExternalEventDefRequest {
                name: "other".into(),
                ..Default::default()
            }),
        ];
        kinds.extend(specs.iter().cloned().map(Kind::PutWfSpec));
        kinds.extend(before.iter().cloned().map(Kind::PutExternalEvent));
        kinds.extend(runs.iter().map(|(spec, id)| {
            Kind::RunWf(RunWfRequest {
                wf_spec_name: (*spec).into(),
                id: Some((*id).into()),
                ..Default::default()
            })
        }));
        for kind in kinds {
            let txn = store.begin_write().expect("txn");
            {
                let mut tables = Tables::new(&txn);
                let applied = apply(&mut tables, &command(kind, NOW)).expect("apply");
                assert!(applied.response.is_ok(), "{:?}", applied.response);
            }
            txn.commit().expect("commit");
        }
        store
    }

    /// Runs `f` as `apply` would run a command at `NOW + 1`; returns its answer and the digest.
    fn step(
        store: &Store,
        f: impl FnOnce(&mut Ctx) -> HResult<ExternalEvent>,
    ) -> (ExternalEvent, String) {
        let txn = store.begin_write().expect("txn");
        let event = {
            let mut tables = Tables::new(&txn);
            let mut ctx = Ctx::new(&mut tables, NOW + 1);
            let event = f(&mut ctx).unwrap_or_else(|_| panic!("command failed"));
            ctx.flush_nodes().expect("flush");
            ctx.tables
                .meta
                .open_mut()
                .expect("meta")
                .insert(meta::CLOCK_MS, (NOW + 1) as u64)
                .expect("clock");
            event
        };
        txn.commit().expect("commit");
        (
            event,
            digest(&store.begin_read().expect("read")).expect("digest"),
        )
    }

    fn event(
        wf: &str,
        guid: &str,
        thread: Option<i32>,
        position: Option<i32>,
    ) -> PutExternalEventRequest {
        PutExternalEventRequest {
            wf_run_id: Some(wf_run_id_of(wf)),
            external_event_def_id: Some(ExternalEventDefId { name: "go".into() }),
            guid: Some(guid.into()),
            content: Some(values::str("paid")),
            thread_run_number: thread,
            node_run_position: position,
        }
    }

    /// The long way round, as `put` took it before the shortcut existed.
    fn long_way(ctx: &mut Ctx, req: &PutExternalEventRequest) -> HResult<ExternalEvent> {
        let def = codec::get(ctx.tables.external_event_defs.open()?, "go")?;
        store_with_def(ctx, req, def.as_ref())?;
        let wf = req.wf_run_id.as_ref().map(wf_run_key).unwrap_or_default();
        if let Some(mut run) = RunState::load(ctx, &wf)? {
            interpreter::offer_events(ctx, &mut run, "go")?;
        }
        let id = ExternalEventId {
            wf_run_id: req.wf_run_id.clone(),
            external_event_def_id: req.external_event_def_id.clone(),
            guid: req.guid.clone().unwrap_or_default(),
        };
        Ok(get(ctx, &id)?.and_then(|s| s.event).unwrap_or_default())
    }

    /// `put` and the long way end with the same answer and byte-identical tables.
    fn same_both_ways(
        specs: &[PutWfSpecRequest],
        runs: &[(&str, &str)],
        before: &[PutExternalEventRequest],
        req: PutExternalEventRequest,
    ) -> ExternalEvent {
        let (short, short_digest) = step(&store(specs, runs, before), |ctx| put(ctx, &req));
        let (long, long_digest) = step(&store(specs, runs, before), |ctx| long_way(ctx, &req));
        assert_eq!(short, long, "answers differ");
        assert_eq!(short_digest, long_digest, "tables differ");
        short
    }

    #[test]
    fn a_waiting_node_run_takes_the_event_as_on_the_long_way() {
        let spec = wait_once_spec("pay", "go", Some(30));
        let e = same_both_ways(
            &[spec],
            &[("pay", "wf-1")],
            &[],
            event("wf-1", "g1", None, None),
        );
        assert!(e.claimed, "the waiting NodeRun claimed it");
        assert_eq!(
            (e.thread_run_number, e.node_run_position),
            (Some(0), Some(1))
        );
    }

    #[test]
    fn targeting_that_matches_or_misses_ends_as_on_the_long_way() {
        let spec = wait_once_spec("pay", "go", None);
        let hit = event("wf-1", "g1", Some(0), Some(1));
        assert!(same_both_ways(std::slice::from_ref(&spec), &[("pay", "wf-1")], &[], hit).claimed);
        let miss = event("wf-1", "g2", Some(0), Some(7));
        assert!(!same_both_ways(&[spec], &[("pay", "wf-1")], &[], miss).claimed);
    }

    #[test]
    fn an_older_unclaimed_event_is_taken_first_as_on_the_long_way() {
        // Two waits in a row; an event targeted at the second one is put before the WfRun
        // exists, so the first wait leaves it unclaimed and the new event goes the long way.
        let spec = single_thread_spec(
            "twice",
            vec![
                ("0-entrypoint", entry("1-wait")),
                ("1-wait", wait("go", None, "2-wait")),
                ("2-wait", wait("go", None, "3-exit")),
                ("3-exit", exit()),
            ],
        );
        let early = event("wf-1", "g0", None, Some(2));
        let e = same_both_ways(
            &[spec],
            &[("twice", "wf-1")],
            &[early],
            event("wf-1", "g1", None, None),
        );
        assert!(e.claimed);
    }

    #[test]
    fn an_event_nobody_waits_for_stays_unclaimed_as_on_the_long_way() {
        let spec = wait_once_spec("pay", "other", None);
        let e = same_both_ways(
            &[spec],
            &[("pay", "wf-1")],
            &[],
            event("wf-1", "g1", None, None),
        );
        assert!(!e.claimed);
    }
}
