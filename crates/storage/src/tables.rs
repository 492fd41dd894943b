//! The state tables and their key layouts.
//!
//! Keys are tuples ordered so that every scan a query or the engine needs is one range scan:
//! a WfRun's children share its id as key prefix, events of a (WfRun, def) are ordered by
//! creation, timers by due time. Values are protobuf-encoded public objects (or our internal
//! wrappers from `halter.proto`), never Rust-layout bytes, so the format is stable.
//!
//! `ThreadRun`s are kept in their own table and assembled into the `WfRun` on read, so a
//! command touching one thread rewrites only that row.

use std::cell::OnceCell;

use redb::{
    Key, ReadOnlyTable, ReadTransaction, Table, TableDefinition, TableHandle, Value,
    WriteTransaction,
};

use crate::error::{Result, StorageError};

/// `ExternalEventDef` by name.
pub const EXTERNAL_EVENT_DEFS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("external_event_defs");
/// `WfSpec` by (name, major_version, revision).
pub const WF_SPECS: TableDefinition<(&str, u32, u32), &[u8]> = TableDefinition::new("wf_specs");
/// `WfRun` (without its thread runs) by id.
pub const WF_RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("wf_runs");
/// Index for SearchWfRun: (WfSpec name, start time ms, WfRun id).
pub const WF_RUNS_BY_SPEC: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("wf_runs_by_spec");
/// `ThreadRun` by (WfRun id, thread run number).
pub const THREAD_RUNS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("thread_runs");
/// `NodeRun` by (WfRun id, thread run number, position).
pub const NODE_RUNS: TableDefinition<(&str, u32, u32), &[u8]> = TableDefinition::new("node_runs");
/// `Variable` by (WfRun id, thread run number, name).
pub const VARIABLES: TableDefinition<(&str, u32, &str), &[u8]> = TableDefinition::new("variables");
/// SearchVariable's index of `searchable` variables: (WfSpec name, variable name, value key,
/// variable created ms, WfRun id, thread number) -> (WfSpec major version, revision). The
/// value key is `variable_index::value_key` of the state machine.
pub const VARIABLES_BY_VALUE: TableDefinition<VariableIndexKey, (u32, u32)> =
    TableDefinition::new("variables_by_value");

/// The key of [`VARIABLES_BY_VALUE`].
pub type VariableIndexKey = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    &'static str,
    u32,
);

/// `StoredExternalEvent` by (WfRun id, ExternalEventDef name, guid).
pub const EXTERNAL_EVENTS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("external_events");
/// Unclaimed events of a (WfRun id, def) in creation order: (WfRun id, def, created ms, seq) ->
/// guid. Claiming takes the first matching row, which is the oldest.
pub const UNCLAIMED_EVENTS: TableDefinition<(&str, &str, i64, u64), &str> =
    TableDefinition::new("unclaimed_events");
/// Index for SearchExternalEvent: (def, claimed, created ms, seq) -> (WfRun id, guid).
pub const EVENTS_BY_DEF: TableDefinition<(&str, bool, i64, u64), (&str, &str)> =
    TableDefinition::new("events_by_def");
/// `CorrelatedEvent` by (def, key).
pub const CORRELATED_EVENTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("correlated_events");
/// EXTERNAL_EVENT NodeRuns waiting for a CorrelatedEvent: (def, key, WfRun id, thread,
/// position). A NodeRun is in it from its arrival until it claims, times out or is deleted.
pub const CORRELATION_WAITERS: TableDefinition<(&str, &str, &str, u32, u32), ()> =
    TableDefinition::new("correlation_waiters");
/// Index for SearchCorrelatedEvent: (def, created ms, key).
pub const CORRELATED_BY_TIME: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("correlated_by_time");
/// `TaskDef` by name.
pub const TASK_DEFS: TableDefinition<&str, &[u8]> = TableDefinition::new("task_defs");
/// `TaskRun` by (WfRun id, task guid).
pub const TASK_RUNS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("task_runs");
/// SearchTaskRun's index: (TaskDef name, scheduled ms, WfRun id, task guid). A row never
/// moves: it is written with its TaskRun and removed with it.
pub const TASK_RUNS_BY_DEF: TableDefinition<(&str, i64, &str, &str), ()> =
    TableDefinition::new("task_runs_by_def");
/// SearchTaskRun's index with a status: (TaskDef name, `TaskStatus` number, scheduled ms,
/// WfRun id, task guid). A row moves with every change of its TaskRun's status.
pub const TASK_RUNS_BY_STATUS: TableDefinition<(&str, i32, i64, &str, &str), ()> =
    TableDefinition::new("task_runs_by_status");
/// Task attempts scheduled and not yet handed to a worker: (TaskDef name, scheduled ms, WfRun
/// id, task guid). A claim takes the first row of its TaskDef: the oldest.
pub const TASK_QUEUE: TableDefinition<(&str, i64, &str, &str), ()> =
    TableDefinition::new("task_queue");
/// WorkflowEventDef name -> `WorkflowEventDef`.
pub const WORKFLOW_EVENT_DEFS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("workflow_event_defs");
/// (WfRun id, WorkflowEventDef name, number) -> `WorkflowEvent`: a WfRun's events together,
/// each def's numbered from 0 in the order they were thrown.
pub const WORKFLOW_EVENTS: TableDefinition<(&str, &str, u32), &[u8]> =
    TableDefinition::new("workflow_events");
/// SearchWorkflowEvent's index: (WorkflowEventDef name, created ms, WfRun id, number).
pub const WORKFLOW_EVENTS_BY_DEF: TableDefinition<(&str, i64, &str, u32), ()> =
    TableDefinition::new("workflow_events_by_def");
/// TaskWorkerGroups by TaskDef name.
pub const TASK_WORKER_GROUPS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("task_worker_groups");
/// Checkpoints by (WfRun id, TaskRun guid, number).
pub const CHECKPOINTS: TableDefinition<(&str, &str, u32), &[u8]> =
    TableDefinition::new("checkpoints");
/// UserTaskDefs by (name, version).
pub const USER_TASK_DEFS: TableDefinition<(&str, u32), &[u8]> =
    TableDefinition::new("user_task_defs");
/// UserTaskRuns by (WfRun id, guid).
pub const USER_TASK_RUNS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("user_task_runs");
/// SearchUserTaskRun's index: (attribute, value, scheduled ms, WfRun id, guid), one row per
/// attribute a run has (`def`, `status`, and `user` and `group` when set).
pub const USER_TASK_RUNS_BY: TableDefinition<(&str, &str, i64, &str, &str), ()> =
    TableDefinition::new("user_task_runs_by");
/// ScheduledWfRun id -> `halter.StoredSchedule`.
pub const SCHEDULED_WF_RUNS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("scheduled_wf_runs");
/// Every timer (event timeouts, sleeps, retention): (due ms, timer id) -> `halter.Timer`.
pub const TIMERS: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("timers");
/// Timer id -> due ms, to cancel a timer by id.
pub const TIMER_DUE: TableDefinition<&str, i64> = TableDefinition::new("timer_due");
/// Counters and markers of the state machine itself (see [`meta`]).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Keys of [`META`].
pub mod meta {
    /// Next commit sequence number given to an ExternalEvent.
    pub const EVENT_SEQ: &str = "event_seq";
    /// The latest time any applied command carried; applied time never goes backwards.
    pub const CLOCK_MS: &str = "clock_ms";
    /// Present once the search indexes (`variables_by_value`, `task_runs_by_def`,
    /// `task_runs_by_status`) hold a row for everything they index: set when a state without
    /// them (from a build older than the indexes) is opened or installed.
    pub const SEARCH_INDEXES: &str = "search_indexes";
    /// Present once `workflow_events_by_def` holds a row for every WorkflowEvent (set like
    /// [`SEARCH_INDEXES`], for a state from a build that threw events without the index).
    pub const WORKFLOW_EVENT_INDEX: &str = "workflow_event_index";
}

/// Runs `$m!(NAME)` for every state table, in a fixed order: digests and snapshots rely on
/// this one list, so a new table cannot be forgotten by one of them.
#[macro_export]
macro_rules! for_each_table {
    ($m:ident) => {
        $m!(EXTERNAL_EVENT_DEFS);
        $m!(WF_SPECS);
        $m!(WF_RUNS);
        $m!(WF_RUNS_BY_SPEC);
        $m!(THREAD_RUNS);
        $m!(NODE_RUNS);
        $m!(VARIABLES);
        $m!(VARIABLES_BY_VALUE);
        $m!(EXTERNAL_EVENTS);
        $m!(UNCLAIMED_EVENTS);
        $m!(EVENTS_BY_DEF);
        $m!(CORRELATED_EVENTS);
        $m!(CORRELATION_WAITERS);
        $m!(CORRELATED_BY_TIME);
        $m!(TASK_DEFS);
        $m!(TASK_RUNS);
        $m!(TASK_RUNS_BY_DEF);
        $m!(TASK_RUNS_BY_STATUS);
        $m!(TASK_QUEUE);
        $m!(CHECKPOINTS);
        $m!(TASK_WORKER_GROUPS);
        $m!(WORKFLOW_EVENT_DEFS);
        $m!(WORKFLOW_EVENTS);
        $m!(WORKFLOW_EVENTS_BY_DEF);
        $m!(USER_TASK_DEFS);
        $m!(USER_TASK_RUNS);
        $m!(USER_TASK_RUNS_BY);
        $m!(SCHEDULED_WF_RUNS);
        $m!(TIMERS);
        $m!(TIMER_DUE);
        $m!(META);
    };
}

/// What `cell` holds, opened by `open` if it holds nothing yet (a table of one transaction,
/// read or write side, opened once and then shared).
fn open_once<T>(cell: &OnceCell<T>, open: impl FnOnce() -> Result<T>) -> Result<&T> {
    if let Some(t) = cell.get() {
        return Ok(t);
    }
    let opened = open()?;
    Ok(cell.get_or_init(|| opened))
}

/// One state table of a write transaction, opened the first time a command uses it.
pub struct LazyTable<'t, K: Key + 'static, V: Value + 'static> {
    txn: &'t WriteTransaction,
    def: TableDefinition<'static, K, V>,
    table: OnceCell<Table<'t, K, V>>,
}

impl<'t, K: Key + 'static, V: Value + 'static> LazyTable<'t, K, V> {
    fn new(txn: &'t WriteTransaction, def: TableDefinition<'static, K, V>) -> Self {
        Self {
            txn,
            def,
            table: OnceCell::new(),
        }
    }

    /// The table, to read; opened now if no command of the transaction has used it yet.
    pub fn open(&self) -> Result<&Table<'t, K, V>> {
        open_once(&self.table, || Ok(self.txn.open_table(self.def)?))
    }

    /// The table, to write; opened now if no command of the transaction has used it yet.
    pub fn open_mut(&mut self) -> Result<&mut Table<'t, K, V>> {
        self.open()?;
        self.table
            .get_mut()
            .ok_or_else(|| StorageError::NotOpen(self.def.name().to_string()))
    }
}

/// Declares [`Tables`]: one [`LazyTable`] per state table.
macro_rules! tables {
    ($($field:ident: $def:ident => $k:ty, $v:ty;)*) => {
        /// Every state table of one write transaction, each opened the first time a command
        /// uses it. They are fields, so a command can hold several at once. Opening all of
        /// them (a lookup in redb's table of tables each) cost 45-55 us per apply transaction
        /// in the cluster, a quarter of the apply of a W1 event at one client, where a command
        /// uses three to nine (`docs/bench/analysis.md`, eleventh and thirteenth sessions).
        pub struct Tables<'t> {
            $(pub $field: LazyTable<'t, $k, $v>,)*
        }

        impl<'t> Tables<'t> {
            /// The tables of `txn`; none is opened yet, so this cannot fail.
            pub fn new(txn: &'t WriteTransaction) -> Self {
                Self {
                    $($field: LazyTable::new(txn, $def),)*
                }
            }

            /// Opens every table, creating any that is missing.
            fn open_all(&self) -> Result<()> {
                $(self.$field.open()?;)*
                Ok(())
            }
        }
    };
}

/// Declares [`ReadTables`]: one lazily opened cell and one accessor per state table.
macro_rules! read_tables {
    ($($field:ident: $def:ident => $k:ty, $v:ty;)*) => {
        /// Every state table of one consistent snapshot, each opened the first time it is asked
        /// for. A read uses one or two of the tables, and opening all of them (a lookup in
        /// redb's table of tables each) cost more than the query: under W2, 1.8 % of the
        /// machine's CPU against 0.5 %; in the apply bench, 8.3 -> 2.4 us per `GetWfRun`
        /// (`docs/bench/analysis.md`, twelfth session).
        pub struct ReadTables<'t> {
            txn: &'t ReadTransaction,
            $($field: OnceCell<ReadOnlyTable<$k, $v>>,)*
        }

        impl<'t> ReadTables<'t> {
            /// The tables of `txn`; none is opened yet, so this cannot fail.
            pub fn new(txn: &'t ReadTransaction) -> Self {
                Self {
                    txn,
                    $($field: OnceCell::new(),)*
                }
            }

            $(
                #[doc = concat!("[`", stringify!($def), "`], opened on first use.")]
                pub fn $field(&self) -> Result<&ReadOnlyTable<$k, $v>> {
                    open_once(&self.$field, || Ok(self.txn.open_table($def)?))
                }
            )*
        }
    };
}

/// Declares [`Tables`] and [`ReadTables`] from one list of the state tables and their types.
macro_rules! state_tables {
    ($($field:ident: $def:ident => $k:ty, $v:ty;)*) => {
        tables! { $($field: $def => $k, $v;)* }
        read_tables! { $($field: $def => $k, $v;)* }
    };
}

state_tables! {
    external_event_defs: EXTERNAL_EVENT_DEFS => &'static str, &'static [u8];
    wf_specs: WF_SPECS => (&'static str, u32, u32), &'static [u8];
    wf_runs: WF_RUNS => &'static str, &'static [u8];
    wf_runs_by_spec: WF_RUNS_BY_SPEC => (&'static str, i64, &'static str), ();
    thread_runs: THREAD_RUNS => (&'static str, u32), &'static [u8];
    node_runs: NODE_RUNS => (&'static str, u32, u32), &'static [u8];
    variables: VARIABLES => (&'static str, u32, &'static str), &'static [u8];
    variables_by_value: VARIABLES_BY_VALUE => VariableIndexKey, (u32, u32);
    external_events: EXTERNAL_EVENTS => (&'static str, &'static str, &'static str), &'static [u8];
    unclaimed_events: UNCLAIMED_EVENTS => (&'static str, &'static str, i64, u64), &'static str;
    events_by_def: EVENTS_BY_DEF => (&'static str, bool, i64, u64), (&'static str, &'static str);
    correlated_events: CORRELATED_EVENTS => (&'static str, &'static str), &'static [u8];
    correlation_waiters: CORRELATION_WAITERS => (&'static str, &'static str, &'static str, u32, u32), ();
    correlated_by_time: CORRELATED_BY_TIME => (&'static str, i64, &'static str), ();
    task_defs: TASK_DEFS => &'static str, &'static [u8];
    task_runs: TASK_RUNS => (&'static str, &'static str), &'static [u8];
    task_runs_by_def: TASK_RUNS_BY_DEF => (&'static str, i64, &'static str, &'static str), ();
    task_runs_by_status: TASK_RUNS_BY_STATUS => (&'static str, i32, i64, &'static str, &'static str), ();
    task_queue: TASK_QUEUE => (&'static str, i64, &'static str, &'static str), ();
    checkpoints: CHECKPOINTS => (&'static str, &'static str, u32), &'static [u8];
    task_worker_groups: TASK_WORKER_GROUPS => &'static str, &'static [u8];
    workflow_event_defs: WORKFLOW_EVENT_DEFS => &'static str, &'static [u8];
    workflow_events: WORKFLOW_EVENTS => (&'static str, &'static str, u32), &'static [u8];
    workflow_events_by_def: WORKFLOW_EVENTS_BY_DEF => (&'static str, i64, &'static str, u32), ();
    user_task_defs: USER_TASK_DEFS => (&'static str, u32), &'static [u8];
    user_task_runs: USER_TASK_RUNS => (&'static str, &'static str), &'static [u8];
    user_task_runs_by: USER_TASK_RUNS_BY => (&'static str, &'static str, i64, &'static str, &'static str), ();
    scheduled_wf_runs: SCHEDULED_WF_RUNS => &'static str, &'static [u8];
    timers: TIMERS => (i64, &'static str), &'static [u8];
    timer_due: TIMER_DUE => &'static str, i64;
    meta: META => &'static str, u64;
}

/// Creates any missing state table, so that read transactions never meet a missing table.
pub fn create_all(txn: &WriteTransaction) -> Result<()> {
    Tables::new(txn).open_all()
}

#[cfg(test)]
mod tests {
    use redb::{ReadableTable, ReadableTableMetadata};

    use super::*;
    use crate::Store;

    /// Invariant: a [`LazyTable`] is opened once per transaction and then shared by reads and
    /// writes (redb refuses to open a table twice in one write transaction), and a write through
    /// it is seen by reads through it at once and by the commit.
    #[test]
    fn a_lazy_table_opens_once_and_reads_its_own_writes() {
        let store = Store::in_memory().unwrap();
        let txn = store.begin_write().unwrap();
        {
            let mut t = Tables::new(&txn);
            assert!(t.meta.open().unwrap().get("k").unwrap().is_none());
            t.meta.open_mut().unwrap().insert("k", 7).unwrap();
            assert_eq!(t.meta.open().unwrap().get("k").unwrap().unwrap().value(), 7);
            t.meta.open_mut().unwrap().insert("k", 8).unwrap();
            // A table first used after the others is opened then, in the same transaction.
            t.timer_due.open_mut().unwrap().insert("x", 1).unwrap();
            assert_eq!(t.meta.open().unwrap().len().unwrap(), 1);
        }
        txn.commit().unwrap();
        let read = store.begin_read().unwrap();
        let t = ReadTables::new(&read);
        assert_eq!(t.meta().unwrap().get("k").unwrap().unwrap().value(), 8);
        assert_eq!(t.timer_due().unwrap().get("x").unwrap().unwrap().value(), 1);
    }

    /// Invariant: a table [`ReadTables`] opens late still belongs to the snapshot its read
    /// transaction took, so one read never mixes states, whichever of its tables it opens
    /// before or after another transaction commits.
    #[test]
    fn a_table_opened_late_sees_the_reads_snapshot() {
        let store = Store::in_memory().unwrap();
        let write = |key: &str| {
            let txn = store.begin_write().unwrap();
            let mut t = Tables::new(&txn);
            t.meta.open_mut().unwrap().insert(key, 1).unwrap();
            t.wf_runs
                .open_mut()
                .unwrap()
                .insert(key, b"run".as_slice())
                .unwrap();
            drop(t);
            txn.commit().unwrap();
        };
        write("before");
        let txn = store.begin_read().unwrap();
        let t = ReadTables::new(&txn);
        // `meta` opened before the next commit, `wf_runs` only after it.
        assert_eq!(t.meta().unwrap().len().unwrap(), 1);
        write("after");
        assert_eq!(t.wf_runs().unwrap().len().unwrap(), 1);
        assert!(t.wf_runs().unwrap().get("after").unwrap().is_none());
        assert!(t.meta().unwrap().get("after").unwrap().is_none());
        // The commit is there for a read that begins after it: the check above could fail.
        let later = store.begin_read().unwrap();
        let t2 = ReadTables::new(&later);
        assert!(t2.wf_runs().unwrap().get("after").unwrap().is_some());
    }
}
