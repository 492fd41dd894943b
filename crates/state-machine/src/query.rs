//! The read side: Get/List/Search over one consistent read snapshot (semantics §9).
//!
//! Pages are ordered by the tables' keys. A bookmark is the key of the first item not yet
//! returned, encoded as `halter.Bookmark`; a malformed one is INVALID_ARGUMENT, never a panic.

use halter_api::halter::{bookmark_part::Part, Bookmark, BookmarkPart, StoredExternalEvent};
use halter_api::limits::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use halter_api::littlehorse::*;
use halter_api::names::{check_guid, check_name};
use halter_api::wf_run_id::{checked_wf_run_key, key_of, wf_run_id_of};
use halter_storage::{codec, ReadTables};
use prost::Message;

use crate::error::{invalid, HResult, Rejection};
use crate::run_state::assemble;
use crate::time::ms;

fn not_found(what: impl std::fmt::Display) -> Rejection {
    Rejection::NotFound(format!("{what} not found"))
}

fn page_limit(limit: Option<i32>) -> Result<usize, Rejection> {
    match limit {
        None | Some(0) => Ok(DEFAULT_PAGE_LIMIT),
        Some(l) if l < 0 => Err(invalid(format!("limit must be positive, got {l}"))),
        Some(l) => Ok((l as usize).min(MAX_PAGE_LIMIT)),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum P {
    S(String),
    I(i64),
}

fn encode_bookmark(parts: &[P]) -> Vec<u8> {
    Bookmark {
        parts: parts
            .iter()
            .map(|p| BookmarkPart {
                part: Some(match p {
                    P::S(s) => Part::Str(s.clone()),
                    P::I(i) => Part::Int(*i),
                }),
            })
            .collect(),
    }
    .encode_to_vec()
}

fn decode_bookmark(b: &Option<Vec<u8>>) -> Result<Option<Vec<P>>, Rejection> {
    let Some(bytes) = b else { return Ok(None) };
    let bad = || invalid("malformed bookmark");
    let bm = Bookmark::decode(bytes.as_slice()).map_err(|_| bad())?;
    bm.parts
        .into_iter()
        .map(|p| match p.part {
            Some(Part::Str(s)) => Ok(P::S(s)),
            Some(Part::Int(i)) => Ok(P::I(i)),
            None => Err(bad()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn s(parts: &[P], i: usize) -> Result<&str, Rejection> {
    match parts.get(i) {
        Some(P::S(s)) => Ok(s),
        _ => Err(invalid("malformed bookmark")),
    }
}

fn n(parts: &[P], i: usize) -> Result<i64, Rejection> {
    match parts.get(i) {
        Some(P::I(v)) => Ok(*v),
        _ => Err(invalid("malformed bookmark")),
    }
}

/// The key of a WfRunId a client sent, its ids checked.
fn wf_run_id(id: &Option<WfRunId>) -> Result<String, Rejection> {
    let id = id.as_ref().ok_or_else(|| invalid("missing wf_run_id"))?;
    Ok(checked_wf_run_key(id)?)
}

fn non_negative(what: &str, v: i32) -> Result<u32, Rejection> {
    u32::try_from(v).map_err(|_| invalid(format!("{what} must not be negative")))
}

pub fn get_external_event_def(
    t: &ReadTables,
    id: &ExternalEventDefId,
) -> HResult<ExternalEventDef> {
    check_name("ExternalEventDef name", &id.name)?;
    Ok(codec::get(t.external_event_defs()?, id.name.as_str())?
        .ok_or_else(|| not_found(format!("ExternalEventDef '{}'", id.name)))?)
}

pub fn search_external_event_defs(
    t: &ReadTables,
    req: &SearchExternalEventDefRequest,
) -> HResult<ExternalEventDefIdList> {
    let (names, bookmark) = names_by_prefix(
        t.external_event_defs()?,
        &req.prefix,
        &req.bookmark,
        req.limit,
    )?;
    Ok(ExternalEventDefIdList {
        results: names
            .into_iter()
            .map(|name| ExternalEventDefId { name })
            .collect(),
        bookmark,
    })
}

/// A page of the names in a table keyed by name that start with `prefix`, in name order.
fn names_by_prefix<T>(
    table: &T,
    prefix: &Option<String>,
    bookmark: &Option<Vec<u8>>,
    limit: Option<i32>,
) -> HResult<(Vec<String>, Option<Vec<u8>>)>
where
    T: redb::ReadableTable<&'static str, &'static [u8]>,
{
    let limit = page_limit(limit)?;
    let prefix = prefix.clone().unwrap_or_default();
    let start = match decode_bookmark(bookmark)? {
        Some(p) => s(&p, 0)?.to_string(),
        None => prefix.clone(),
    };
    let mut names = Vec::new();
    for row in table.range(start.as_str()..)? {
        let (k, _) = row?;
        let name = k.value();
        if !name.starts_with(&prefix) {
            break;
        }
        if names.len() == limit {
            return Ok((names, Some(encode_bookmark(&[P::S(name.to_string())]))));
        }
        names.push(name.to_string());
    }
    Ok((names, None))
}

fn event_key(id: &ExternalEventId) -> Result<(String, &str, &str), Rejection> {
    let wf = wf_run_id(&id.wf_run_id)?;
    let def = id
        .external_event_def_id
        .as_ref()
        .map(|d| d.name.as_str())
        .ok_or_else(|| invalid("missing external_event_def_id"))?;
    check_name("ExternalEventDef name", def)?;
    check_guid(&id.guid)?;
    Ok((wf, def, id.guid.as_str()))
}

pub fn get_external_event(t: &ReadTables, id: &ExternalEventId) -> HResult<ExternalEvent> {
    let key = event_key(id)?;
    let stored: Option<StoredExternalEvent> =
        codec::get(t.external_events()?, (key.0.as_str(), key.1, key.2))?;
    Ok(stored
        .and_then(|s| s.event)
        .ok_or_else(|| not_found(format!("ExternalEvent {}/{}/{}", key.0, key.1, key.2)))?)
}

pub fn list_external_events(
    t: &ReadTables,
    req: &ListExternalEventsRequest,
) -> HResult<ExternalEventList> {
    let wf_key = wf_run_id(&req.wf_run_id)?;
    let wf = wf_key.as_str();
    let limit = page_limit(req.limit)?;
    let bm = decode_bookmark(&req.bookmark)?;
    let (d0, g0) = match &bm {
        Some(p) => (s(p, 0)?, s(p, 1)?),
        None => ("", ""),
    };
    let mut out = ExternalEventList::default();
    for row in t.external_events()?.range((wf, d0, g0)..)? {
        let (k, v) = row?;
        let (w, d, g) = k.value();
        if w != wf {
            break;
        }
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[P::S(d.into()), P::S(g.into())]));
            break;
        }
        let stored: StoredExternalEvent = codec::decode(v.value())?;
        out.results.extend(stored.event);
    }
    Ok(out)
}

pub fn search_external_events(
    t: &ReadTables,
    req: &SearchExternalEventRequest,
) -> HResult<ExternalEventIdList> {
    let def = req
        .external_event_def_id
        .as_ref()
        .map(|d| d.name.as_str())
        .ok_or_else(|| invalid("missing external_event_def_id"))?;
    check_name("ExternalEventDef name", def)?;
    if codec::get::<_, ExternalEventDef, _>(t.external_event_defs()?, def)?.is_none() {
        return Err(invalid(format!("No ExternalEventDef named '{def}'")).into());
    }
    let limit = page_limit(req.limit)?;
    let earliest = req.earliest_start.as_ref().map(ms).unwrap_or(i64::MIN);
    let latest = req.latest_start.as_ref().map(ms).unwrap_or(i64::MAX);
    let bm = decode_bookmark(&req.bookmark)?;
    let claimed_states: Vec<bool> = match req.is_claimed {
        Some(c) => vec![c],
        None => vec![false, true],
    };
    let mut out = ExternalEventIdList::default();
    for claimed in claimed_states {
        let (mut from_t, mut from_s) = (earliest, 0u64);
        if let Some(p) = &bm {
            let b_claimed = n(p, 0)? != 0;
            if !claimed && b_claimed {
                continue; // this half was finished on an earlier page
            }
            if claimed == b_claimed {
                from_t = n(p, 1)?;
                from_s = n(p, 2)? as u64;
            }
        }
        for row in t
            .events_by_def()?
            .range((def, claimed, from_t, from_s)..=(def, claimed, latest, u64::MAX))?
        {
            let (k, v) = row?;
            let (_, _, created, seq) = k.value();
            if out.results.len() == limit {
                out.bookmark = Some(encode_bookmark(&[
                    P::I(claimed as i64),
                    P::I(created),
                    P::I(seq as i64),
                ]));
                return Ok(out);
            }
            let (wf, guid) = v.value();
            out.results.push(ExternalEventId {
                wf_run_id: Some(wf_run_id_of(wf)),
                external_event_def_id: Some(ExternalEventDefId {
                    name: def.to_string(),
                }),
                guid: guid.to_string(),
            });
        }
    }
    Ok(out)
}

pub fn get_wf_spec(t: &ReadTables, id: &WfSpecId) -> HResult<WfSpec> {
    check_name("WfSpec name", &id.name)?;
    let major = non_negative("major_version", id.major_version)?;
    let rev = non_negative("revision", id.revision)?;
    Ok(
        codec::get(t.wf_specs()?, (id.name.as_str(), major, rev))?.ok_or_else(|| {
            not_found(format!(
                "WfSpec {} v{}.{}",
                id.name, id.major_version, id.revision
            ))
        })?,
    )
}

pub fn get_latest_wf_spec(t: &ReadTables, req: &GetLatestWfSpecRequest) -> HResult<WfSpec> {
    check_name("WfSpec name", &req.name)?;
    let major = req
        .major_version
        .map(|m| non_negative("major_version", m))
        .transpose()?;
    Ok(crate::wf_spec::latest(t.wf_specs()?, &req.name, major)?
        .ok_or_else(|| not_found(format!("WfSpec '{}'", req.name)))?)
}

pub fn search_wf_specs(t: &ReadTables, req: &SearchWfSpecRequest) -> HResult<WfSpecIdList> {
    use search_wf_spec_request::WfSpecCriteria;
    let limit = page_limit(req.limit)?;
    let (prefix, exact) = match &req.wf_spec_criteria {
        None => (String::new(), false),
        Some(WfSpecCriteria::Name(n)) => (n.clone(), true),
        Some(WfSpecCriteria::Prefix(p)) => (p.clone(), false),
        Some(WfSpecCriteria::TaskDefName(_)) => return Ok(WfSpecIdList::default()),
    };
    let bm = decode_bookmark(&req.bookmark)?;
    let start = match &bm {
        Some(p) => (s(p, 0)?.to_string(), n(p, 1)? as u32, n(p, 2)? as u32),
        None => (prefix.clone(), 0, 0),
    };
    let mut out = WfSpecIdList::default();
    for row in t
        .wf_specs()?
        .range((start.0.as_str(), start.1, start.2)..)?
    {
        let (k, _) = row?;
        let (name, major, rev) = k.value();
        if (exact && name != prefix) || !name.starts_with(&prefix) {
            break;
        }
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[
                P::S(name.into()),
                P::I(major.into()),
                P::I(rev.into()),
            ]));
            break;
        }
        out.results.push(WfSpecId {
            name: name.into(),
            major_version: major as i32,
            revision: rev as i32,
        });
    }
    Ok(out)
}

pub fn get_wf_run(t: &ReadTables, id: &WfRunId) -> HResult<WfRun> {
    let key = checked_wf_run_key(id)?;
    Ok(assemble(t.wf_runs()?, t.thread_runs()?, &key)?
        .ok_or_else(|| not_found(format!("WfRun '{key}'")))?)
}

pub fn search_wf_runs(t: &ReadTables, req: &SearchWfRunRequest) -> HResult<WfRunIdList> {
    check_name("WfSpec name", &req.wf_spec_name)?;
    let limit = page_limit(req.limit)?;
    let earliest = req.earliest_start.as_ref().map(ms).unwrap_or(i64::MIN);
    let latest = req.latest_start.as_ref().map(ms).unwrap_or(i64::MAX);
    let name = req.wf_spec_name.as_str();
    let bm = decode_bookmark(&req.bookmark)?;
    let start = match &bm {
        Some(p) => (n(p, 0)?, s(p, 1)?.to_string()),
        None => (earliest, String::new()),
    };
    let mut out = WfRunIdList::default();
    for row in t
        .wf_runs_by_spec()?
        .range((name, start.0, start.1.as_str())..)?
    {
        let (k, _) = row?;
        let (spec, started, id) = k.value();
        if spec != name || started > latest {
            break;
        }
        let Some(run) = codec::get::<_, WfRun, _>(t.wf_runs()?, id)? else {
            continue;
        };
        let sid = run.wf_spec_id.clone().unwrap_or_default();
        if req
            .wf_spec_major_version
            .is_some_and(|m| m != sid.major_version)
            || req.wf_spec_revision.is_some_and(|r| r != sid.revision)
            || req.status.is_some_and(|s| s != run.status)
        {
            continue;
        }
        let mut vars_match = true;
        for f in &req.variable_filters {
            let v: Option<Variable> = codec::get(t.variables()?, (id, 0u32, f.var_name.as_str()))?;
            if !v.is_some_and(|v| {
                crate::expr::equal(
                    &v.value.unwrap_or_default(),
                    &f.value.clone().unwrap_or_default(),
                )
            }) {
                vars_match = false;
                break;
            }
        }
        if !vars_match {
            continue;
        }
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[P::I(started), P::S(id.into())]));
            break;
        }
        out.results.push(wf_run_id_of(id));
    }
    Ok(out)
}

/// SearchVariable, with LittleHorse's rules: the WfSpec (the given version, else the latest)
/// must declare the variable `searchable`, and the value must be a STR, INT, DOUBLE or BOOL of
/// the variable's type; anything else is INVALID_ARGUMENT. Without a version, every WfRun of
/// the WfSpec's name is searched; with one, only that version's. Oldest variable first.
pub fn search_variables(t: &ReadTables, req: &SearchVariableRequest) -> HResult<VariableIdList> {
    check_name("WfSpec name", &req.wf_spec_name)?;
    if req.var_name.is_empty() {
        return Err(invalid("var_name is required").into());
    }
    let limit = page_limit(req.limit)?;
    let version = match (req.wf_spec_major_version, req.wf_spec_revision) {
        (Some(m), Some(r)) => Some((
            non_negative("wf_spec_major_version", m)?,
            non_negative("wf_spec_revision", r)?,
        )),
        // As in LittleHorse, a revision without a major version is ignored.
        (None, _) => None,
        (Some(_), None) => {
            return Err(invalid(
                "wf_spec_major_version needs wf_spec_revision: give both, or neither",
            )
            .into())
        }
    };
    let spec: Option<WfSpec> = match version {
        Some((m, r)) => codec::get(t.wf_specs()?, (req.wf_spec_name.as_str(), m, r))?,
        None => crate::wf_spec::latest(t.wf_specs()?, &req.wf_spec_name, None)?,
    };
    let Some(spec) = spec else {
        return Err(invalid(format!("WfSpec '{}' not found", req.wf_spec_name)).into());
    };
    let Some(def) = spec
        .thread_specs
        .values()
        .flat_map(|ts| &ts.variable_defs)
        .find(|v| v.var_def.as_ref().is_some_and(|d| d.name == req.var_name))
    else {
        return Err(invalid(format!(
            "WfSpec '{}' declares no variable '{}'",
            req.wf_spec_name, req.var_name
        ))
        .into());
    };
    if !def.searchable {
        return Err(invalid(format!(
            "variable '{}' of WfSpec '{}' is not searchable (declare it searchable to index it)",
            req.var_name, req.wf_spec_name
        ))
        .into());
    }
    let value = req.value.clone().unwrap_or_default();
    let Some(key) = crate::variable_index::value_key(&value) else {
        return Err(invalid(format!(
            "searching for a {} value is not supported: only STR, INT, DOUBLE and BOOL",
            halter_api::values::type_name(halter_api::values::type_of(&value))
        ))
        .into());
    };
    let declared = def
        .var_def
        .as_ref()
        .map(halter_api::values::declared_type)
        .and_then(Result::ok);
    if declared != halter_api::values::type_of(&value) {
        return Err(invalid(format!(
            "variable '{}' is {}, the value is {}",
            req.var_name,
            halter_api::values::type_name(declared),
            halter_api::values::type_name(halter_api::values::type_of(&value))
        ))
        .into());
    }
    let bm = decode_bookmark(&req.bookmark)?;
    let start = match &bm {
        Some(p) => (
            n(p, 0)?,
            s(p, 1)?.to_string(),
            u32::try_from(n(p, 2)?).map_err(|_| invalid("malformed bookmark"))?,
        ),
        None => (i64::MIN, String::new(), 0),
    };
    let (spec_name, var) = (req.wf_spec_name.as_str(), req.var_name.as_str());
    let mut out = VariableIdList::default();
    for row in t.variables_by_value()?.range(
        (
            spec_name,
            var,
            key.as_str(),
            start.0,
            start.1.as_str(),
            start.2,
        )..,
    )? {
        let (k, v) = row?;
        let (row_spec, row_var, row_key, created, wf, thread) = k.value();
        if (row_spec, row_var, row_key) != (spec_name, var, key.as_str()) {
            break;
        }
        if version.is_some_and(|ver| ver != v.value()) {
            continue;
        }
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[
                P::I(created),
                P::S(wf.into()),
                P::I(thread.into()),
            ]));
            break;
        }
        out.results.push(VariableId {
            wf_run_id: Some(wf_run_id_of(wf)),
            thread_run_number: thread as i32,
            name: req.var_name.clone(),
        });
    }
    Ok(out)
}

/// SearchTaskRun: the TaskRuns of a TaskDef (in one status, if given) scheduled within
/// [earliest_start, latest_start], oldest first. An unknown TaskDef has none.
pub fn search_task_runs(t: &ReadTables, req: &SearchTaskRunRequest) -> HResult<TaskRunIdList> {
    check_name("TaskDef name", &req.task_def_name)?;
    let limit = page_limit(req.limit)?;
    let status = req
        .status
        .map(|s| {
            TaskStatus::try_from(s)
                .map(|s| s as i32)
                .map_err(|_| invalid(format!("unknown TaskStatus {s}")))
        })
        .transpose()?;
    let earliest = req.earliest_start.as_ref().map(ms).unwrap_or(i64::MIN);
    let latest = req.latest_start.as_ref().map(ms).unwrap_or(i64::MAX);
    let bm = decode_bookmark(&req.bookmark)?;
    let start = match &bm {
        Some(p) => (n(p, 0)?, s(p, 1)?.to_string(), s(p, 2)?.to_string()),
        None => (earliest, String::new(), String::new()),
    };
    let def = req.task_def_name.as_str();
    let mut rows: Vec<(i64, String, String)> = Vec::with_capacity(limit + 1);
    // One row past the page says whether there is another page.
    match status {
        Some(st) => {
            for row in t
                .task_runs_by_status()?
                .range((def, st, start.0, start.1.as_str(), start.2.as_str())..)?
            {
                let (k, _) = row?;
                let (d, s, at, wf, guid) = k.value();
                if d != def || s != st || at > latest || rows.len() > limit {
                    break;
                }
                rows.push((at, wf.to_string(), guid.to_string()));
            }
        }
        None => {
            for row in t
                .task_runs_by_def()?
                .range((def, start.0, start.1.as_str(), start.2.as_str())..)?
            {
                let (k, _) = row?;
                let (d, at, wf, guid) = k.value();
                if d != def || at > latest || rows.len() > limit {
                    break;
                }
                rows.push((at, wf.to_string(), guid.to_string()));
            }
        }
    }
    let mut out = TaskRunIdList::default();
    if rows.len() > limit {
        let (at, wf, guid) = rows.pop().unwrap_or_default();
        out.bookmark = Some(encode_bookmark(&[P::I(at), P::S(wf), P::S(guid)]));
    }
    out.results = rows
        .into_iter()
        .map(|(_, wf, guid)| TaskRunId {
            wf_run_id: Some(wf_run_id_of(&wf)),
            task_guid: guid,
        })
        .collect();
    Ok(out)
}

pub fn get_node_run(t: &ReadTables, id: &NodeRunId) -> HResult<NodeRun> {
    let wf_key = wf_run_id(&id.wf_run_id)?;
    let wf = wf_key.as_str();
    let thread = non_negative("thread_run_number", id.thread_run_number)?;
    let pos = non_negative("position", id.position)?;
    let nr: NodeRun = codec::get(t.node_runs()?, (wf, thread, pos))?
        .ok_or_else(|| not_found(format!("NodeRun {wf}/{thread}/{pos}")))?;
    Ok(masked(nr))
}

/// A NodeRun as clients see it: a correlation key the spec asked to mask is shown as `*****`
/// (stored unmasked: the engine matches on it).
fn masked(mut nr: NodeRun) -> NodeRun {
    if let Some(node_run::NodeType::ExternalEvent(ee)) = &mut nr.node_type {
        if ee.mask_correlation_key && ee.correlation_key.is_some() {
            ee.correlation_key = Some("*****".into());
        }
    }
    nr
}

pub fn list_node_runs(t: &ReadTables, req: &ListNodeRunsRequest) -> HResult<NodeRunList> {
    let wf_key = wf_run_id(&req.wf_run_id)?;
    let wf = wf_key.as_str();
    let limit = page_limit(req.limit)?;
    let (lo_t, hi_t) = match req.thread_run_number {
        Some(n) => {
            let n = non_negative("thread_run_number", n)?;
            (n, n)
        }
        None => (0, u32::MAX),
    };
    let bm = decode_bookmark(&req.bookmark)?;
    let start = match &bm {
        Some(p) => (n(p, 0)? as u32, n(p, 1)? as u32),
        None => (lo_t, 0),
    };
    let mut out = NodeRunList::default();
    for row in t
        .node_runs()?
        .range((wf, start.0, start.1)..=(wf, hi_t, u32::MAX))?
    {
        let (k, v) = row?;
        let (_, th, pos) = k.value();
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[P::I(th.into()), P::I(pos.into())]));
            break;
        }
        out.results.push(masked(codec::decode(v.value())?));
    }
    Ok(out)
}

pub fn get_variable(t: &ReadTables, id: &VariableId) -> HResult<Variable> {
    let wf_key = wf_run_id(&id.wf_run_id)?;
    let wf = wf_key.as_str();
    let thread = non_negative("thread_run_number", id.thread_run_number)?;
    Ok(codec::get(t.variables()?, (wf, thread, id.name.as_str()))?
        .ok_or_else(|| not_found(format!("Variable '{}' of {wf}/{thread}", id.name)))?)
}

pub fn list_variables(t: &ReadTables, req: &ListVariablesRequest) -> HResult<VariableList> {
    let wf_key = wf_run_id(&req.wf_run_id)?;
    let wf = wf_key.as_str();
    let limit = page_limit(req.limit)?;
    let bm = decode_bookmark(&req.bookmark)?;
    let start = match &bm {
        Some(p) => (n(p, 0)? as u32, s(p, 1)?.to_string()),
        None => (0, String::new()),
    };
    let mut out = VariableList::default();
    for row in t.variables()?.range((wf, start.0, start.1.as_str())..)? {
        let (k, v) = row?;
        let (w, th, name) = k.value();
        if w != wf {
            break;
        }
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[P::I(th.into()), P::S(name.into())]));
            break;
        }
        out.results.push(codec::decode(v.value())?);
    }
    Ok(out)
}

fn correlated_def(id: Option<&ExternalEventDefId>) -> Result<&str, Rejection> {
    let def = id
        .map(|d| d.name.as_str())
        .ok_or_else(|| invalid("missing external_event_def_id"))?;
    check_name("ExternalEventDef name", def)?;
    Ok(def)
}

pub fn get_correlated_event(t: &ReadTables, id: &CorrelatedEventId) -> HResult<CorrelatedEvent> {
    let def = correlated_def(id.external_event_def_id.as_ref())?;
    crate::correlated_event::check_key(&id.key)?;
    Ok(codec::get(t.correlated_events()?, (def, id.key.as_str()))?
        .ok_or_else(|| not_found(format!("CorrelatedEvent '{}' of '{def}'", id.key)))?)
}

/// CorrelatedEvents of a def, oldest first (then by key), optionally only those that did or did
/// not make ExternalEvents yet.
pub fn search_correlated_events(
    t: &ReadTables,
    req: &SearchCorrelatedEventRequest,
) -> HResult<CorrelatedEventIdList> {
    let def = correlated_def(req.external_event_def_id.as_ref())?;
    let limit = page_limit(req.limit)?;
    let earliest = req.earliest_start.as_ref().map(ms).unwrap_or(i64::MIN);
    let latest = req.latest_start.as_ref().map(ms).unwrap_or(i64::MAX);
    let bm = decode_bookmark(&req.bookmark)?;
    let (from_t, from_k) = match &bm {
        Some(p) => (n(p, 0)?, s(p, 1)?.to_string()),
        None => (earliest, String::new()),
    };
    let mut out = CorrelatedEventIdList::default();
    for row in t
        .correlated_by_time()?
        .range((def, from_t, from_k.as_str())..=(def, latest, "\u{10FFFF}"))?
    {
        let (k, _) = row?;
        let (_, created, key) = k.value();
        if let Some(want) = req.has_external_events {
            let ev: Option<CorrelatedEvent> = codec::get(t.correlated_events()?, (def, key))?;
            if ev.is_some_and(|e| !e.external_events.is_empty()) != want {
                continue;
            }
        }
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[P::I(created), P::S(key.into())]));
            break;
        }
        out.results.push(CorrelatedEventId {
            key: key.to_string(),
            external_event_def_id: Some(ExternalEventDefId {
                name: def.to_string(),
            }),
        });
    }
    Ok(out)
}

pub fn get_task_def(t: &ReadTables, id: &TaskDefId) -> HResult<TaskDef> {
    check_name("TaskDef name", &id.name)?;
    Ok(codec::get(t.task_defs()?, id.name.as_str())?
        .ok_or_else(|| not_found(format!("TaskDef '{}'", id.name)))?)
}

pub fn search_task_defs(t: &ReadTables, req: &SearchTaskDefRequest) -> HResult<TaskDefIdList> {
    let (names, bookmark) = names_by_prefix(t.task_defs()?, &req.prefix, &req.bookmark, req.limit)?;
    Ok(TaskDefIdList {
        results: names.into_iter().map(|name| TaskDefId { name }).collect(),
        bookmark,
    })
}

pub fn get_task_run(t: &ReadTables, id: &TaskRunId) -> HResult<TaskRun> {
    let (wf, guid) = crate::task::checked_run_key(id)?;
    Ok(codec::get(t.task_runs()?, (wf.as_str(), guid))?
        .ok_or_else(|| not_found(format!("TaskRun {wf}/{guid}")))?)
}

pub fn get_task_worker_group(t: &ReadTables, id: &TaskDefId) -> HResult<TaskWorkerGroup> {
    check_name("TaskDef name", &id.name)?;
    Ok(codec::get(t.task_worker_groups()?, id.name.as_str())?
        .ok_or_else(|| not_found(format!("TaskWorkerGroup of TaskDef '{}'", id.name)))?)
}

pub fn get_checkpoint(t: &ReadTables, id: &CheckpointId) -> HResult<Checkpoint> {
    let (wf, guid, n) = crate::checkpoint::key(id)?;
    Ok(codec::get(t.checkpoints()?, (wf.as_str(), guid, n))?
        .ok_or_else(|| not_found(format!("Checkpoint {n} of TaskRun {wf}/{guid}")))?)
}

/// One page of a WfRun's rows in a table keyed (WfRun id, guid), in guid order, and the
/// bookmark of the next page.
fn page_by_guid<T, M>(
    table: &T,
    wf: &str,
    bookmark: &Option<Vec<u8>>,
    limit: Option<i32>,
) -> HResult<(Vec<M>, Option<Vec<u8>>)>
where
    T: redb::ReadableTable<(&'static str, &'static str), &'static [u8]>,
    M: Message + Default,
{
    let limit = page_limit(limit)?;
    let start = match decode_bookmark(bookmark)? {
        Some(p) => s(&p, 0)?.to_string(),
        None => String::new(),
    };
    let mut out = Vec::new();
    for row in table.range((wf, start.as_str())..=(wf, "\u{10FFFF}"))? {
        let (k, v) = row?;
        let (_, guid) = k.value();
        if out.len() == limit {
            return Ok((out, Some(encode_bookmark(&[P::S(guid.to_string())]))));
        }
        out.push(codec::decode(v.value())?);
    }
    Ok((out, None))
}

/// A WfRun's TaskRuns in guid order.
pub fn list_task_runs(t: &ReadTables, req: &ListTaskRunsRequest) -> HResult<TaskRunList> {
    let wf_key = wf_run_id(&req.wf_run_id)?;
    let wf = wf_key.as_str();
    let (results, bookmark) = page_by_guid(t.task_runs()?, wf, &req.bookmark, req.limit)?;
    Ok(TaskRunList { results, bookmark })
}

/// Whether an attempt of the TaskDef waits for a worker (what a held poll checks before it
/// proposes a claim).
pub fn task_queued(t: &ReadTables, def: &str) -> HResult<bool> {
    Ok(t.task_queue()?
        .range((def, i64::MIN, "", "")..=(def, i64::MAX, "\u{10FFFF}", "\u{10FFFF}"))?
        .next()
        .is_some())
}

pub fn get_workflow_event_def(
    t: &ReadTables,
    id: &WorkflowEventDefId,
) -> HResult<WorkflowEventDef> {
    check_name("WorkflowEventDef name", &id.name)?;
    Ok(codec::get(t.workflow_event_defs()?, id.name.as_str())?
        .ok_or_else(|| not_found(format!("WorkflowEventDef '{}'", id.name)))?)
}

pub fn search_workflow_event_defs(
    t: &ReadTables,
    req: &SearchWorkflowEventDefRequest,
) -> HResult<WorkflowEventDefIdList> {
    let (names, bookmark) = names_by_prefix(
        t.workflow_event_defs()?,
        &req.prefix,
        &req.bookmark,
        req.limit,
    )?;
    Ok(WorkflowEventDefIdList {
        results: names
            .into_iter()
            .map(|name| WorkflowEventDefId { name })
            .collect(),
        bookmark,
    })
}

pub fn get_workflow_event(t: &ReadTables, id: &WorkflowEventId) -> HResult<WorkflowEvent> {
    let wf_key = wf_run_id(&id.wf_run_id)?;
    let wf = wf_key.as_str();
    let def = workflow_event_def_name(&id.workflow_event_def_id)?;
    let number = non_negative("number", id.number)?;
    Ok(codec::get(t.workflow_events()?, (wf, def, number))?
        .ok_or_else(|| not_found(format!("WorkflowEvent {wf}/{def}/{number}")))?)
}

fn workflow_event_def_name(id: &Option<WorkflowEventDefId>) -> Result<&str, Rejection> {
    let def = id
        .as_ref()
        .map(|d| d.name.as_str())
        .ok_or_else(|| invalid("missing workflow_event_def_id"))?;
    check_name("WorkflowEventDef name", def)?;
    Ok(def)
}

/// A WfRun's WorkflowEvents by (def, number), paged.
pub fn list_workflow_events(
    t: &ReadTables,
    req: &ListWorkflowEventsRequest,
) -> HResult<WorkflowEventList> {
    let wf_key = wf_run_id(&req.wf_run_id)?;
    let wf = wf_key.as_str();
    let limit = page_limit(req.limit)?;
    let bm = decode_bookmark(&req.bookmark)?;
    let (d0, n0) = match &bm {
        Some(p) => (
            s(p, 0)?,
            u32::try_from(n(p, 1)?).map_err(|_| invalid("malformed bookmark"))?,
        ),
        None => ("", 0),
    };
    let mut out = WorkflowEventList::default();
    for row in t.workflow_events()?.range((wf, d0, n0)..)? {
        let (k, v) = row?;
        let (w, d, num) = k.value();
        if w != wf {
            break;
        }
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[P::S(d.into()), P::I(num.into())]));
            break;
        }
        out.results.push(codec::decode(v.value())?);
    }
    Ok(out)
}

/// Checks an `AwaitWorkflowEvent` request before it waits: a malformed one is answered at
/// once, not after the wait.
pub fn check_await_workflow_event(req: &AwaitWorkflowEventRequest) -> Result<(), Rejection> {
    wf_run_id(&req.wf_run_id)?;
    for d in &req.event_def_ids {
        check_name("WorkflowEventDef name", &d.name)?;
    }
    Ok(())
}

/// The WorkflowEvent an `AwaitWorkflowEvent` call returns now, if the WfRun has thrown one: the
/// first thrown of the asked defs (any def when none is asked) that the caller does not ignore.
/// "First" is by throw time; events thrown in the same millisecond come in (def name, number)
/// order, which is also LittleHorse's store order.
pub fn first_workflow_event(
    t: &ReadTables,
    req: &AwaitWorkflowEventRequest,
) -> HResult<Option<WorkflowEvent>> {
    let wf_key = wf_run_id(&req.wf_run_id)?;
    let wf = wf_key.as_str();
    let ignored: std::collections::BTreeSet<(&str, i32)> = req
        .workflow_events_to_ignore
        .iter()
        .filter(|i| i.wf_run_id.as_ref().is_some_and(|w| key_of(w) == wf))
        .filter_map(|i| {
            let def = i.workflow_event_def_id.as_ref()?;
            Some((def.name.as_str(), i.number))
        })
        .collect();
    let table = t.workflow_events()?;
    // Each def's events: numbers rise with throw time (the applied clock never goes back), so
    // the first one not ignored is that def's candidate.
    let first_of = |def: &str| -> HResult<Option<WorkflowEvent>> {
        for row in table.range((wf, def, 0u32)..=(wf, def, u32::MAX))? {
            let (k, v) = row?;
            let (_, _, n) = k.value();
            if i32::try_from(n).is_ok_and(|n| ignored.contains(&(def, n))) {
                continue;
            }
            return Ok(Some(codec::decode(v.value())?));
        }
        Ok(None)
    };
    let defs: std::collections::BTreeSet<String> = if req.event_def_ids.is_empty() {
        let mut all = std::collections::BTreeSet::new();
        let mut from = String::new();
        // One seek per def the WfRun threw, not one row per event.
        while let Some(row) = table.range((wf, from.as_str(), 0u32)..)?.next() {
            let (k, _) = row?;
            let (w, d, _) = k.value();
            if w != wf {
                break;
            }
            all.insert(d.to_string());
            from = format!("{d}\0");
        }
        all
    } else {
        req.event_def_ids.iter().map(|d| d.name.clone()).collect()
    };
    let mut best: Option<(i64, WorkflowEvent)> = None;
    for def in &defs {
        if let Some(event) = first_of(def)? {
            let at = crate::workflow_event::created_ms(&event);
            // Defs come in name order, so the first seen wins a tie in time.
            if best.as_ref().is_none_or(|(b, _)| at < *b) {
                best = Some((at, event));
            }
        }
    }
    Ok(best.map(|(_, e)| e))
}

/// The WorkflowEvents of a def thrown within `[earliest_start, latest_start]`, oldest first
/// (`workflow_events_by_def`). A def with no events (or none at all) has an empty page.
pub fn search_workflow_events(
    t: &ReadTables,
    req: &SearchWorkflowEventRequest,
) -> HResult<WorkflowEventIdList> {
    let def = workflow_event_def_name(&req.workflow_event_def_id)?;
    let limit = page_limit(req.limit)?;
    let earliest = req.earliest_start.as_ref().map(ms).unwrap_or(i64::MIN);
    let latest = req.latest_start.as_ref().map(ms).unwrap_or(i64::MAX);
    let bm = decode_bookmark(&req.bookmark)?;
    let (at0, wf0, n0) = match &bm {
        Some(p) => (
            n(p, 0)?,
            s(p, 1)?,
            u32::try_from(n(p, 2)?).map_err(|_| invalid("malformed bookmark"))?,
        ),
        None => (earliest, "", 0),
    };
    let mut out = WorkflowEventIdList::default();
    for row in t.workflow_events_by_def()?.range((def, at0, wf0, n0)..)? {
        let (k, _) = row?;
        let (d, at, wf, num) = k.value();
        if d != def || at > latest {
            break;
        }
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[
                P::I(at),
                P::S(wf.into()),
                P::I(num.into()),
            ]));
            break;
        }
        out.results.push(WorkflowEventId {
            wf_run_id: Some(wf_run_id_of(wf)),
            workflow_event_def_id: Some(WorkflowEventDefId { name: def.into() }),
            number: num as i32,
        });
    }
    Ok(out)
}

// ---- User tasks ----

fn user_task_def_version(v: i32) -> Result<u32, Rejection> {
    u32::try_from(v).map_err(|_| invalid("UserTaskDef version must not be negative"))
}

pub fn get_user_task_def(t: &ReadTables, id: &UserTaskDefId) -> HResult<UserTaskDef> {
    check_name("UserTaskDef name", &id.name)?;
    let version = user_task_def_version(id.version)?;
    Ok(
        codec::get(t.user_task_defs()?, (id.name.as_str(), version))?.ok_or_else(|| {
            not_found(format!("UserTaskDef '{}' version {}", id.name, id.version))
        })?,
    )
}

pub fn get_latest_user_task_def(
    t: &ReadTables,
    req: &GetLatestUserTaskDefRequest,
) -> HResult<UserTaskDef> {
    check_name("UserTaskDef name", &req.name)?;
    crate::user_task::latest_def(t.user_task_defs()?, &req.name)?
        .ok_or_else(|| not_found(format!("UserTaskDef '{}'", req.name)).into())
}

/// SearchUserTaskDef: every version of one name, or of every name with a prefix (or of all
/// names), by name then version.
pub fn search_user_task_defs(
    t: &ReadTables,
    req: &SearchUserTaskDefRequest,
) -> HResult<UserTaskDefIdList> {
    use search_user_task_def_request::UserTaskDefCriteria as C;
    let limit = page_limit(req.limit)?;
    let (exact, prefix) = match &req.user_task_def_criteria {
        Some(C::Name(n)) => {
            check_name("UserTaskDef name", n)?;
            (Some(n.as_str()), n.as_str())
        }
        Some(C::Prefix(p)) => (None, p.as_str()),
        None => (None, ""),
    };
    let start = match decode_bookmark(&req.bookmark)? {
        Some(p) => (
            s(&p, 0)?.to_string(),
            u32::try_from(n(&p, 1)?).map_err(|_| invalid("malformed bookmark"))?,
        ),
        None => (prefix.to_string(), 0),
    };
    let mut out = UserTaskDefIdList::default();
    for row in t.user_task_defs()?.range((start.0.as_str(), start.1)..)? {
        let (k, _) = row?;
        let (name, version) = k.value();
        let matches = match exact {
            Some(e) => name == e,
            None => name.starts_with(prefix),
        };
        if !matches {
            break;
        }
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[P::S(name.into()), P::I(version.into())]));
            break;
        }
        out.results.push(UserTaskDefId {
            name: name.to_string(),
            version: version as i32,
        });
    }
    Ok(out)
}

pub fn get_user_task_run(t: &ReadTables, id: &UserTaskRunId) -> HResult<UserTaskRun> {
    let wf_key = wf_run_id(&id.wf_run_id)?;
    let wf = wf_key.as_str();
    if id.user_task_guid.is_empty() || id.user_task_guid.len() > halter_api::limits::MAX_GUID_LEN {
        return Err(invalid("user_task_guid must be 1 to 128 characters").into());
    }
    Ok(
        codec::get(t.user_task_runs()?, (wf, id.user_task_guid.as_str()))?
            .ok_or_else(|| not_found(format!("UserTaskRun {wf}/{}", id.user_task_guid)))?,
    )
}

/// A WfRun's UserTaskRuns in guid order.
pub fn list_user_task_runs(
    t: &ReadTables,
    req: &ListUserTaskRunRequest,
) -> HResult<UserTaskRunList> {
    let wf_key = wf_run_id(&req.wf_run_id)?;
    let wf = wf_key.as_str();
    let (results, bookmark) = page_by_guid(t.user_task_runs()?, wf, &req.bookmark, req.limit)?;
    Ok(UserTaskRunList { results, bookmark })
}

/// SearchUserTaskRun: the UserTaskRuns matching every filter given (at least one of status,
/// def, user, group, as in LittleHorse), created within [earliest_start, latest_start], oldest
/// first. The index of the most selective filter given is scanned (user, then group, then def,
/// then status) and each run found is checked against the others.
pub fn search_user_task_runs(
    t: &ReadTables,
    req: &SearchUserTaskRunRequest,
) -> HResult<UserTaskRunIdList> {
    let limit = page_limit(req.limit)?;
    let status = req
        .status
        .map(|s| {
            UserTaskRunStatus::try_from(s)
                .map(|s| s.as_str_name().to_string())
                .map_err(|_| invalid(format!("unknown UserTaskRunStatus {s}")))
        })
        .transpose()?;
    if let Some(d) = &req.user_task_def_name {
        check_name("UserTaskDef name", d)?;
    }
    let filters: Vec<(&str, &str)> = [
        ("user", req.user_id.as_deref()),
        ("group", req.user_group.as_deref()),
        ("def", req.user_task_def_name.as_deref()),
        ("status", status.as_deref()),
    ]
    .into_iter()
    .filter_map(|(attr, v)| v.map(|v| (attr, v)))
    .collect();
    let Some(&(attr, value)) = filters.first() else {
        return Err(invalid(
            "Must provide at least one search criteria: status, user_id, user_group, \
             user_task_def_name",
        )
        .into());
    };
    let earliest = req.earliest_start.as_ref().map(ms).unwrap_or(i64::MIN);
    let latest = req.latest_start.as_ref().map(ms).unwrap_or(i64::MAX);
    let start = match decode_bookmark(&req.bookmark)? {
        Some(p) => (n(&p, 0)?, s(&p, 1)?.to_string(), s(&p, 2)?.to_string()),
        None => (earliest, String::new(), String::new()),
    };
    let mut out = UserTaskRunIdList::default();
    for row in t
        .user_task_runs_by()?
        .range((attr, value, start.0, start.1.as_str(), start.2.as_str())..)?
    {
        let (k, _) = row?;
        let (a, v, at, wf, guid) = k.value();
        if a != attr || v != value || at > latest {
            break;
        }
        if filters.len() > 1 {
            let Some(r) = codec::get::<_, UserTaskRun, _>(t.user_task_runs()?, (wf, guid))? else {
                continue;
            };
            let attrs = crate::user_task::index_attributes(&r);
            if !filters[1..]
                .iter()
                .all(|(fa, fv)| attrs.iter().any(|(ra, rv)| ra == fa && rv == fv))
            {
                continue;
            }
        }
        if out.results.len() == limit {
            out.bookmark = Some(encode_bookmark(&[
                P::I(at),
                P::S(wf.to_string()),
                P::S(guid.to_string()),
            ]));
            break;
        }
        out.results.push(UserTaskRunId {
            wf_run_id: Some(wf_run_id_of(wf)),
            user_task_guid: guid.to_string(),
        });
    }
    Ok(out)
}

pub fn get_scheduled_wf_run(t: &ReadTables, id: &ScheduledWfRunId) -> HResult<ScheduledWfRun> {
    check_name("ScheduledWfRun id", &id.id)?;
    let stored: Option<halter_api::halter::StoredSchedule> =
        codec::get(t.scheduled_wf_runs()?, id.id.as_str())?;
    Ok(stored
        .and_then(|s| s.scheduled)
        .ok_or_else(|| not_found(format!("ScheduledWfRun '{}'", id.id)))?)
}

/// The schedules of a WfSpec, by the version each resolved when it was made, in id order.
/// LittleHorse's request has no paging; schedules are few (one per recurring job), so this
/// scans them all.
pub fn search_scheduled_wf_runs(
    t: &ReadTables,
    req: &SearchScheduledWfRunRequest,
) -> HResult<ScheduledWfRunIdList> {
    check_name("WfSpec name", &req.wf_spec_name)?;
    if req.revision.is_some() && req.major_version.is_none() {
        return Err(invalid("revision given without major_version").into());
    }
    let mut results = Vec::new();
    for row in redb::ReadableTable::iter(t.scheduled_wf_runs()?)? {
        let (_, v) = row?;
        let stored: halter_api::halter::StoredSchedule = codec::decode(v.value())?;
        let Some(s) = stored.scheduled else { continue };
        let Some(spec) = &s.wf_spec_id else { continue };
        if spec.name == req.wf_spec_name
            && req.major_version.is_none_or(|m| m == spec.major_version)
            && req.revision.is_none_or(|r| r == spec.revision)
        {
            results.extend(s.id);
        }
    }
    Ok(ScheduledWfRunIdList { results })
}
