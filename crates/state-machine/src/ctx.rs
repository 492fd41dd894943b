//! The context one command is applied in: the open tables, the entry's time, and the effects
//! collected for the node.

use std::collections::BTreeMap;

use halter_api::littlehorse::NodeRun;
use halter_storage::{codec, tables::LazyTable, Tables};

use crate::error::{invalid, ApplyError, Rejection};

/// The row `name` of a table keyed by name (a def), for checks that answer with a
/// [`Rejection`] (a failed lookup rejects, as it always has). Their handlers open the table
/// first with `?`, so a failure to open it stays fatal for the node.
pub(crate) fn find_named<M: prost::Message + Default>(
    table: &LazyTable<'_, &'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<M>, Rejection> {
    let table = table.open().map_err(|e| invalid(e.to_string()))?;
    codec::get(table, name).map_err(|e| invalid(e.to_string()))
}

/// Something the node should do after the batch commits. Followers ignore effects; they exist
/// so the leader does not have to rescan storage after every entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A timer was armed to fire at `due_ms`.
    TimerArmed { due_ms: i64 },
    /// A WfRun changed state (for watchers and long polls).
    WfRunChanged { wf_run_id: String },
    /// A task attempt of this TaskDef is waiting for a worker (wakes held polls).
    TaskQueued { task_def: String },
    /// A WfRun threw a WorkflowEvent (wakes held `AwaitWorkflowEvent` calls on every node).
    WorkflowEventThrown { wf_run_id: String },
}

pub struct Ctx<'a, 't> {
    /// The transaction's tables, each opened on first use. The NodeRuns this command wrote are
    /// not in `node_runs` yet (see `nodes`): code that reads that table must also read them
    /// (`get_node`, the `NodeOutput` scan) or call [`Ctx::flush_nodes`] first.
    pub tables: &'a mut Tables<'t>,
    /// The command's time: the leader's stamp, never earlier than any command applied before.
    pub now_ms: i64,
    pub effects: Vec<Effect>,
    /// NodeRuns written by this command, by (WfRun id, thread, position), not yet in
    /// `tables.node_runs`. A command writes a NodeRun several times and reads back what it
    /// wrote (a W2 event: the waiting node completes, the exit node is created and completed),
    /// and each of those was a B-tree insert or lookup: 13 % of the apply bench's time went to
    /// writing NodeRuns. Kept here, each is written once, in key order, when the command
    /// succeeds. A rejected command drops them; like every handler, it must reject before its
    /// first write, since `apply` does not undo the other tables.
    nodes: BTreeMap<(String, u32, u32), NodeRun>,
    /// WfRuns to advance once the command's own work is done, by key: a parent whose child
    /// ended, or whose variable a child changed. Deferred because the parent may be loaded
    /// further up this very call stack (a RUN_CHILD_WF node whose child ends at once).
    pub(crate) wakes: std::collections::BTreeSet<String>,
    /// Child WfRuns this command started: bounded, since a spec may start children of itself.
    pub(crate) children_started: usize,
}

impl<'a, 't> Ctx<'a, 't> {
    pub fn new(tables: &'a mut Tables<'t>, now_ms: i64) -> Self {
        Self {
            tables,
            now_ms,
            effects: Vec::new(),
            nodes: BTreeMap::new(),
            wakes: Default::default(),
            children_started: 0,
        }
    }

    /// The NodeRun this command last wrote at this key, if it wrote one.
    pub(crate) fn written_node(&self, wf: &str, thread: u32, pos: u32) -> Option<&NodeRun> {
        // Most lookups come before the command writes any NodeRun: no key to build then.
        if self.nodes.is_empty() {
            return None;
        }
        self.nodes.get(&(wf.to_string(), thread, pos))
    }

    /// The NodeRuns of thread `thread` of `wf` this command wrote, by position.
    pub(crate) fn written_nodes_of(
        &self,
        wf: &str,
        thread: u32,
    ) -> impl DoubleEndedIterator<Item = (u32, &NodeRun)> {
        let wf = wf.to_string();
        self.nodes
            .range((wf.clone(), thread, 0)..=(wf, thread, u32::MAX))
            .map(|((_, _, p), nr)| (*p, nr))
    }

    pub(crate) fn write_node(&mut self, wf: String, thread: u32, pos: u32, nr: NodeRun) {
        self.nodes.insert((wf, thread, pos), nr);
    }

    /// Writes the NodeRuns this command wrote to `tables.node_runs`, in key order (the same on
    /// every replica), and forgets them. `apply` calls it when the command succeeds; code that
    /// reads or changes `tables.node_runs` directly calls it first.
    pub fn flush_nodes(&mut self) -> Result<(), ApplyError> {
        for ((wf, t, p), nr) in std::mem::take(&mut self.nodes) {
            codec::put(self.tables.node_runs.open_mut()?, (wf.as_str(), t, p), &nr)?;
        }
        Ok(())
    }
}
