//! The index behind `SearchVariable`: every variable a WfSpec declares `searchable`, by WfSpec
//! name, variable name and value, so that "which WfRun has order id 42" is a range scan, not a
//! walk over every WfRun.
//!
//! As in LittleHorse, only `searchable` variables of the primitive types STR, INT, DOUBLE and
//! BOOL are indexed; a null value is not. A row is keyed by the variable's creation time after
//! its value, so a search lists the matching variables oldest first. Everything a row's key
//! holds comes from the `Variable` itself (its WfSpec id, name, value, creation time), so the
//! row of a stored variable can always be found again to be removed.

use halter_api::wf_run_id::wf_run_key;
use std::collections::{BTreeMap, BTreeSet};

use halter_api::littlehorse::{variable_value::Value, ThreadRun, Variable, VariableValue, WfSpec};
use halter_storage::{codec, ReadTables, Tables};
use redb::ReadableTable;

use crate::ctx::Ctx;
use crate::error::{ApplyError, HResult};
use crate::time::ms;

/// The value part of an index key: the value's type, then the value, so that equal-looking
/// values of different types ("5" and 5) never match. `None` for null and for the types that
/// are not indexed.
pub fn value_key(v: &VariableValue) -> Option<String> {
    Some(match v.value.as_ref()? {
        Value::Str(s) => format!("STR:{s}"),
        Value::Int(i) => format!("INT:{i}"),
        // 0.0 and -0.0 are equal numbers; Rust prints the shortest text that reads back as the
        // same double, so equal doubles get equal keys.
        Value::Double(d) => format!("DOUBLE:{}", if *d == 0.0 { 0.0 } else { *d }),
        Value::Bool(b) => format!("BOOL:{b}"),
        _ => return None,
    })
}

/// A row's key, owned: (WfSpec name, variable name, value key, created ms, WfRun id, thread).
type RowKey = (String, String, String, i64, String, u32);

fn row_of(v: &Variable) -> Option<(RowKey, (u32, u32))> {
    let id = v.id.as_ref()?;
    let spec = v.wf_spec_id.as_ref()?;
    let value = value_key(v.value.as_ref()?)?;
    let key = (
        spec.name.clone(),
        id.name.clone(),
        value,
        v.created_at.as_ref().map(ms).unwrap_or_default(),
        id.wf_run_id.as_ref().map(wf_run_key).unwrap_or_default(),
        id.thread_run_number as u32,
    );
    Some((key, (spec.major_version as u32, spec.revision as u32)))
}

/// The table's view of an owned key.
fn borrowed(k: &RowKey) -> (&str, &str, &str, i64, &str, u32) {
    (&k.0, &k.1, &k.2, k.3, &k.4, k.5)
}

/// Adds the row of `v`, if its value is indexed.
pub fn add(ctx: &mut Ctx, v: &Variable) -> HResult<()> {
    if let Some((k, version)) = row_of(v) {
        ctx.tables
            .variables_by_value
            .open_mut()?
            .insert(borrowed(&k), version)?;
    }
    Ok(())
}

/// Removes the row of `v`, if it has one (removing a row that is not there is harmless).
pub fn remove(ctx: &mut Ctx, v: &Variable) -> HResult<()> {
    if let Some((k, _)) = row_of(v) {
        ctx.tables
            .variables_by_value
            .open_mut()?
            .remove(borrowed(&k))?;
    }
    Ok(())
}

/// Every index row the stored variables call for, as (key, version): those of variables the
/// ThreadSpec of their thread declares `searchable`.
fn rows_called_for<V, T, S>(
    variables: &V,
    thread_runs: &T,
    wf_specs: &S,
) -> HResult<BTreeSet<(RowKey, (u32, u32))>>
where
    V: ReadableTable<(&'static str, u32, &'static str), &'static [u8]>,
    T: ReadableTable<(&'static str, u32), &'static [u8]>,
    S: ReadableTable<(&'static str, u32, u32), &'static [u8]>,
{
    let mut specs: BTreeMap<(String, u32, u32), Option<WfSpec>> = BTreeMap::new();
    let mut rows = BTreeSet::new();
    for row in variables.iter()? {
        let (k, v) = row?;
        let (wf, thread, name) = k.value();
        let var: Variable = codec::decode(v.value())?;
        let Some(thread_run) = codec::get::<_, ThreadRun, _>(thread_runs, (wf, thread))? else {
            continue;
        };
        let sid = var.wf_spec_id.clone().unwrap_or_default();
        let key = (
            sid.name.clone(),
            sid.major_version as u32,
            sid.revision as u32,
        );
        if !specs.contains_key(&key) {
            let spec = codec::get(wf_specs, (key.0.as_str(), key.1, key.2))?;
            specs.insert(key.clone(), spec);
        }
        let searchable = specs[&key]
            .as_ref()
            .and_then(|s| s.thread_specs.get(&thread_run.thread_spec_name))
            .and_then(|ts| crate::run_state::var_def(ts, name))
            .is_some_and(|d| d.searchable);
        if let (true, Some(row)) = (searchable, row_of(&var)) {
            rows.insert(row);
        }
    }
    Ok(rows)
}

/// Every way the index differs from the variables: a searchable variable without its row, or
/// a row no searchable variable stands for. Empty when they agree. It reads every variable, so
/// it is for tests, not for serving.
pub fn audit(t: &ReadTables) -> HResult<Vec<String>> {
    let expected = rows_called_for(t.variables()?, t.thread_runs()?, t.wf_specs()?)?;
    let mut found = BTreeSet::new();
    for row in t.variables_by_value()?.iter()? {
        let (k, v) = row?;
        let (a, b, c, d, e, f) = k.value();
        let key = (a.into(), b.into(), c.into(), d, e.into(), f);
        found.insert((key, v.value()));
    }
    let mut problems = Vec::new();
    for missing in expected.difference(&found) {
        problems.push(format!("no index row for {missing:?}"));
    }
    for stray in found.difference(&expected) {
        problems.push(format!(
            "index row {stray:?} stands for no searchable variable"
        ));
    }
    Ok(problems)
}

/// Rewrites the index from the stored variables (see `indexes::build_if_missing`).
pub fn rebuild(tables: &mut Tables<'_>) -> Result<(), ApplyError> {
    let rows = rows_called_for(
        tables.variables.open()?,
        tables.thread_runs.open()?,
        tables.wf_specs.open()?,
    )
    .map_err(crate::indexes::fatal)?;
    let index = tables.variables_by_value.open_mut()?;
    index.retain(|_, _| false)?;
    for (k, version) in &rows {
        index.insert(borrowed(k), *version)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use halter_api::values;

    /// Invariant: values of different types never share a key, equal doubles always do, and
    /// null and non-primitive values are not indexed.
    #[test]
    fn keys_tell_types_apart_and_equal_doubles_match() {
        assert_ne!(value_key(&values::str("5")), value_key(&values::int(5)));
        assert_ne!(value_key(&values::int(5)), value_key(&values::double(5.0)));
        assert_eq!(
            value_key(&values::double(0.0)),
            value_key(&values::double(-0.0))
        );
        assert_eq!(
            value_key(&values::double(0.1 + 0.2)),
            value_key(&values::double(0.30000000000000004))
        );
        assert_ne!(
            value_key(&values::double(0.1 + 0.2)),
            value_key(&values::double(0.3))
        );
        assert_eq!(value_key(&values::null()), None);
        assert_eq!(
            value_key(&VariableValue {
                value: Some(Value::Bytes(vec![1])),
            }),
            None
        );
    }
}
