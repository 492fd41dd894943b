//! A WfRun loaded for one command: the run, its threads and its spec, written back at the end.

use std::collections::BTreeMap;

use halter_api::littlehorse::{
    LhStatus, Node, NodeRun, ThreadRun, ThreadSpec, ThreadVarDef, Variable, VariableId,
    VariableValue, WfRun, WfRunId, WfSpec, WfSpecId,
};
use halter_api::wf_run_id::wf_run_key;
use halter_storage::codec;
use redb::ReadableTable;

use crate::ctx::{Ctx, Effect};
use crate::error::HResult;

pub struct RunState {
    pub wf_run: WfRun,
    pub threads: BTreeMap<i32, ThreadRun>,
    pub spec: WfSpec,
    /// `wf_run.id` as a storage key, computed once.
    key: String,
}

impl RunState {
    pub fn new(wf_run: WfRun, threads: BTreeMap<i32, ThreadRun>, spec: WfSpec) -> Self {
        let key = wf_run.id.as_ref().map(wf_run_key).unwrap_or_default();
        Self {
            wf_run,
            threads,
            spec,
            key,
        }
    }

    /// The WfRunId the WfRun's objects carry.
    pub fn wf_run_id(&self) -> WfRunId {
        self.wf_run.id.clone().unwrap_or_default()
    }

    /// The key the WfRun is stored under (its id, after its ancestors' for a child).
    pub fn id(&self) -> &str {
        &self.key
    }

    /// The spec's node a NodeRun of this WfRun runs (`None` only for a NodeRun of another spec).
    pub fn spec_node(&self, nr: &NodeRun) -> Option<&Node> {
        self.spec
            .thread_specs
            .get(&nr.thread_spec_name)
            .and_then(|t| t.nodes.get(&nr.node_name))
    }

    /// Loads the WfRun `id`, or `None` if it does not exist (or its spec is gone).
    pub fn load(ctx: &Ctx, id: &str) -> HResult<Option<RunState>> {
        let Some(wf_run) = codec::get::<_, WfRun, _>(ctx.tables.wf_runs.open()?, id)? else {
            return Ok(None);
        };
        let threads = load_threads(ctx.tables.thread_runs.open()?, id)?
            .into_iter()
            .map(|t| (t.number, t))
            .collect();
        let spec_id = wf_run.wf_spec_id.clone().unwrap_or_default();
        let key = (
            spec_id.name.as_str(),
            spec_id.major_version as u32,
            spec_id.revision as u32,
        );
        let Some(spec) = codec::get::<_, WfSpec, _>(ctx.tables.wf_specs.open()?, key)? else {
            return Ok(None);
        };
        Ok(Some(RunState::new(wf_run, threads, spec)))
    }

    pub fn save(&self, ctx: &mut Ctx) -> HResult<()> {
        let id = self.id().to_string();
        codec::put(ctx.tables.wf_runs.open_mut()?, id.as_str(), &self.wf_run)?;
        for (n, t) in &self.threads {
            codec::put(
                ctx.tables.thread_runs.open_mut()?,
                (id.as_str(), *n as u32),
                t,
            )?;
        }
        ctx.effects.push(Effect::WfRunChanged { wf_run_id: id });
        Ok(())
    }
}

/// A WfRun's thread runs, in number order.
pub fn load_threads<T>(table: &T, id: &str) -> HResult<Vec<ThreadRun>>
where
    T: ReadableTable<(&'static str, u32), &'static [u8]>,
{
    let mut out = Vec::new();
    for row in table.range((id, 0u32)..=(id, u32::MAX))? {
        let (_, v) = row?;
        out.push(codec::decode(v.value())?);
    }
    Ok(out)
}

/// The WfRun as clients see it: with its thread runs inlined.
pub fn assemble<R, T>(runs: &R, threads: &T, id: &str) -> HResult<Option<WfRun>>
where
    R: ReadableTable<&'static str, &'static [u8]>,
    T: ReadableTable<(&'static str, u32), &'static [u8]>,
{
    let Some(mut run) = codec::get::<_, WfRun, _>(runs, id)? else {
        return Ok(None);
    };
    run.thread_runs = load_threads(threads, id)?;
    Ok(Some(run))
}

/// A NodeRun as this command sees it: what it wrote, else what is stored.
pub fn get_node(ctx: &Ctx, wf: &str, thread: i32, pos: i32) -> HResult<Option<NodeRun>> {
    if let Some(nr) = ctx.written_node(wf, thread as u32, pos as u32) {
        return Ok(Some(nr.clone()));
    }
    Ok(codec::get(
        ctx.tables.node_runs.open()?,
        (wf, thread as u32, pos as u32),
    )?)
}

/// Writes a NodeRun; it reaches the table when the command succeeds (see [`Ctx::flush_nodes`]).
pub fn put_node(ctx: &mut Ctx, nr: &NodeRun) -> HResult<()> {
    let id = nr.id.clone().unwrap_or_default();
    let wf = id.wf_run_id.as_ref().map(wf_run_key).unwrap_or_default();
    ctx.write_node(
        wf,
        id.thread_run_number as u32,
        id.position as u32,
        nr.clone(),
    );
    Ok(())
}

pub fn get_variable(ctx: &Ctx, wf: &str, thread: i32, name: &str) -> HResult<Option<Variable>> {
    Ok(codec::get(
        ctx.tables.variables.open()?,
        (wf, thread as u32, name),
    )?)
}

/// Writes a variable. A `searchable` one (as its ThreadVarDef says) also moves its row in
/// SearchVariable's index from its stored value to the new one.
pub fn put_variable(ctx: &mut Ctx, v: &Variable, searchable: bool) -> HResult<()> {
    let id = v.id.clone().unwrap_or_default();
    let wf = id.wf_run_id.as_ref().map(wf_run_key).unwrap_or_default();
    if searchable {
        if let Some(old) = get_variable(ctx, &wf, id.thread_run_number, &id.name)? {
            crate::variable_index::remove(ctx, &old)?;
        }
        crate::variable_index::add(ctx, v)?;
    }
    codec::put(
        ctx.tables.variables.open_mut()?,
        (wf.as_str(), id.thread_run_number as u32, id.name.as_str()),
        v,
    )?;
    Ok(())
}

/// How `thread` declares its variable `name`.
pub(crate) fn var_def<'t>(thread: &'t ThreadSpec, name: &str) -> Option<&'t ThreadVarDef> {
    thread
        .variable_defs
        .iter()
        .find(|v| v.var_def.as_ref().is_some_and(|d| d.name == name))
}

/// How `spec`'s entrypoint thread declares its variable `name`.
pub(crate) fn entry_var_def<'s>(spec: &'s WfSpec, name: &str) -> Option<&'s ThreadVarDef> {
    spec.thread_specs
        .get(&spec.entrypoint_thread_name)
        .and_then(|t| var_def(t, name))
}

/// A variable a new thread starts with, and how its ThreadVarDef declares it.
pub struct NewVariable {
    pub name: String,
    pub value: VariableValue,
    pub masked: bool,
    pub searchable: bool,
}

impl NewVariable {
    /// The variable `def` declares, with `value`.
    pub fn of(def: &ThreadVarDef, value: VariableValue) -> Self {
        let var_def = def.var_def.clone().unwrap_or_default();
        Self {
            name: var_def.name,
            value,
            masked: var_def.masked_value.unwrap_or(false),
            searchable: def.searchable,
        }
    }
}

/// Creates a new thread's variables, stamped with the command's time.
pub fn create_variables(
    ctx: &mut Ctx,
    wf: &WfRunId,
    wf_spec_id: Option<WfSpecId>,
    thread: i32,
    vars: Vec<NewVariable>,
) -> HResult<()> {
    for NewVariable {
        name,
        value,
        masked,
        searchable,
    } in vars
    {
        put_variable(
            ctx,
            &Variable {
                id: Some(VariableId {
                    wf_run_id: Some(wf.clone()),
                    thread_run_number: thread,
                    name,
                }),
                value: Some(value),
                created_at: Some(crate::time::ts(ctx.now_ms)),
                wf_spec_id: wf_spec_id.clone(),
                masked,
            },
            searchable,
        )?;
    }
    Ok(())
}

pub fn status(s: i32) -> LhStatus {
    LhStatus::try_from(s).unwrap_or(LhStatus::Starting)
}
