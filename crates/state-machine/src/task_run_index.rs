//! The indexes behind `SearchTaskRun`: every TaskRun by TaskDef name and scheduled time
//! (`task_runs_by_def`), and the same with its status (`task_runs_by_status`), as LittleHorse
//! searches them. Every key part comes from the `TaskRun` itself, so the rows of a stored
//! TaskRun can always be found again: `save_run` moves the status row when the status changes,
//! and a WfRun's deletion removes both rows of each of its TaskRuns.

use halter_api::wf_run_id::wf_run_key;
use std::collections::BTreeSet;

use halter_api::littlehorse::TaskRun;
use halter_storage::{codec, Tables};
use redb::ReadableTable;

use crate::ctx::Ctx;
use crate::error::{ApplyError, HResult};
use crate::time::ms;

/// (TaskDef name, status, scheduled ms, WfRun id, task guid).
type Key = (String, i32, i64, String, String);

fn key_of(tr: &TaskRun) -> Key {
    let id = tr.id.clone().unwrap_or_default();
    (
        tr.task_def_id.clone().unwrap_or_default().name,
        tr.status,
        tr.scheduled_at.as_ref().map(ms).unwrap_or_default(),
        id.wf_run_id.as_ref().map(wf_run_key).unwrap_or_default(),
        id.task_guid,
    )
}

fn insert(tables: &mut Tables<'_>, k: &Key) -> Result<(), ApplyError> {
    tables
        .task_runs_by_def
        .open_mut()?
        .insert((k.0.as_str(), k.2, k.3.as_str(), k.4.as_str()), ())?;
    tables
        .task_runs_by_status
        .open_mut()?
        .insert((k.0.as_str(), k.1, k.2, k.3.as_str(), k.4.as_str()), ())?;
    Ok(())
}

/// `tr` is about to be stored over `old` (None: it is new): its rows follow.
pub fn saved(ctx: &mut Ctx, old: Option<&TaskRun>, tr: &TaskRun) -> HResult<()> {
    let new = key_of(tr);
    if let Some(old) = old.map(key_of) {
        if old == new {
            return Ok(());
        }
        remove_key(ctx.tables, &old)?;
    }
    insert(ctx.tables, &new)?;
    Ok(())
}

fn remove_key(tables: &mut Tables<'_>, k: &Key) -> Result<(), ApplyError> {
    tables
        .task_runs_by_def
        .open_mut()?
        .remove((k.0.as_str(), k.2, k.3.as_str(), k.4.as_str()))?;
    tables.task_runs_by_status.open_mut()?.remove((
        k.0.as_str(),
        k.1,
        k.2,
        k.3.as_str(),
        k.4.as_str(),
    ))?;
    Ok(())
}

/// `tr` is being deleted: its rows go.
pub fn removed(ctx: &mut Ctx, tr: &TaskRun) -> HResult<()> {
    remove_key(ctx.tables, &key_of(tr))?;
    Ok(())
}

/// The rows the stored TaskRuns call for.
fn rows_called_for<T>(task_runs: &T) -> HResult<BTreeSet<Key>>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    let mut rows = BTreeSet::new();
    for row in task_runs.iter()? {
        let (_, v) = row?;
        rows.insert(key_of(&codec::decode::<TaskRun>(v.value())?));
    }
    Ok(rows)
}

/// Every way the indexes differ from the TaskRuns; empty when they agree. For tests.
pub fn audit(t: &halter_storage::ReadTables) -> HResult<Vec<String>> {
    let expected = rows_called_for(t.task_runs()?)?;
    let mut by_def = BTreeSet::new();
    for row in t.task_runs_by_def()?.iter()? {
        let (k, _) = row?;
        let (a, b, c, d) = k.value();
        by_def.insert((a.to_string(), b, c.to_string(), d.to_string()));
    }
    let mut by_status = BTreeSet::new();
    for row in t.task_runs_by_status()?.iter()? {
        let (k, _) = row?;
        let (a, b, c, d, e) = k.value();
        by_status.insert((a.to_string(), b, c, d.to_string(), e.to_string()));
    }
    let mut problems = Vec::new();
    let want_by_def: BTreeSet<_> = expected
        .iter()
        .map(|k| (k.0.clone(), k.2, k.3.clone(), k.4.clone()))
        .collect();
    if want_by_def != by_def {
        problems.push(format!(
            "task_runs_by_def has {by_def:?}, the TaskRuns call for {want_by_def:?}"
        ));
    }
    if expected != by_status {
        problems.push(format!(
            "task_runs_by_status has {by_status:?}, the TaskRuns call for {expected:?}"
        ));
    }
    Ok(problems)
}

/// Rewrites both indexes from the stored TaskRuns (see `indexes::build_if_missing`).
pub fn rebuild(tables: &mut Tables<'_>) -> Result<(), ApplyError> {
    let rows = rows_called_for(tables.task_runs.open()?).map_err(crate::indexes::fatal)?;
    tables.task_runs_by_def.open_mut()?.retain(|_, _| false)?;
    tables
        .task_runs_by_status
        .open_mut()?
        .retain(|_, _| false)?;
    for k in &rows {
        insert(tables, k)?;
    }
    Ok(())
}
