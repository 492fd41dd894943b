//! Size limits on client input. Every one of them is enforced with `INVALID_ARGUMENT` (or
//! `RESOURCE_EXHAUSTED` for payloads) before anything is proposed, never with a panic.

/// Longest name of an ExternalEventDef, WfSpec, ThreadSpec, node, variable or WfRun id.
pub const MAX_NAME_LEN: usize = 128;
/// Longest client-chosen ExternalEvent guid (and CorrelatedEvent key, TaskRun guid).
pub const MAX_GUID_LEN: usize = 128;
/// Largest encoded event content or variable value.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Default page size of List/Search calls.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// Largest page a List/Search call may ask for.
pub const MAX_PAGE_LIMIT: usize = 1000;
/// Most nodes in one ThreadSpec and most ThreadSpecs in one WfSpec.
pub const MAX_SPEC_ITEMS: usize = 1000;
/// Most steps the interpreter takes for one WfRun in one command before failing the thread:
/// a spec whose edges loop through nodes that never wait would otherwise spin forever.
pub const MAX_STEPS_PER_COMMAND: usize = 10_000;
/// Deepest nesting of a VariableAssignment expression.
pub const MAX_ASSIGNMENT_DEPTH: usize = 32;

/// How deep child WfRuns nest (a top-level WfRun is depth 0): a WfSpec may run children of
/// itself, and each level is applied in the same command as the node that starts it.
pub const MAX_CHILD_WF_RUN_DEPTH: usize = 8;

/// How many child WfRuns one command may start (a loop around a RUN_CHILD_WF node, children
/// that start children): the rest fail their node with CHILD_FAILURE.
pub const MAX_CHILD_WF_RUNS_PER_COMMAND: usize = 100;
