//! Small builders for the WfSpecs that tests, examples, the simulation and the benchmarks all
//! need: a chain of nodes from the entrypoint to an exit, with EXTERNAL_EVENT waits between.
//! One copy, so a change in the wire shape of a node is made once.

use std::collections::BTreeMap;

use crate::littlehorse::{
    node, variable_assignment, Edge, EntrypointNode, ExitNode, ExternalEventDefId,
    ExternalEventNode, Node, PutWfSpecRequest, ThreadSpec, VariableAssignment,
};
use crate::values;

/// An edge to `to`, unconditional and without mutations.
pub fn edge(to: &str) -> Edge {
    Edge {
        sink_node_name: to.into(),
        ..Default::default()
    }
}

/// The entrypoint node, leading to `to`.
pub fn entry(to: &str) -> Node {
    Node {
        outgoing_edges: vec![edge(to)],
        node: Some(node::Node::Entrypoint(EntrypointNode {})),
        ..Default::default()
    }
}

/// An EXTERNAL_EVENT node waiting for an event of `def`, with an optional timeout in seconds,
/// leading to `to`.
pub fn wait(def: &str, timeout_seconds: Option<i64>, to: &str) -> Node {
    Node {
        outgoing_edges: vec![edge(to)],
        node: Some(node::Node::ExternalEvent(ExternalEventNode {
            external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
            timeout_seconds: timeout_seconds.map(literal_int),
            correlation_key: None,
            mask_correlation_key: false,
        })),
        ..Default::default()
    }
}

/// An exit node.
pub fn exit() -> Node {
    Node {
        node: Some(node::Node::Exit(ExitNode { result: None })),
        ..Default::default()
    }
}

/// A literal INT assignment.
pub fn literal_int(i: i64) -> VariableAssignment {
    VariableAssignment {
        source: Some(variable_assignment::Source::LiteralValue(values::int(i))),
        ..Default::default()
    }
}

/// A spec with a single thread `entrypoint` made of `nodes` (name, node).
pub fn single_thread_spec(name: &str, nodes: Vec<(&str, Node)>) -> PutWfSpecRequest {
    PutWfSpecRequest {
        name: name.into(),
        thread_specs: BTreeMap::from([(
            "entrypoint".to_string(),
            ThreadSpec {
                nodes: nodes
                    .into_iter()
                    .map(|(n, node)| (n.to_string(), node))
                    .collect(),
                ..Default::default()
            },
        )]),
        entrypoint_thread_name: "entrypoint".into(),
        ..Default::default()
    }
}

/// The spec the benchmarks and smoke tests share: entrypoint, wait for `def` (with an optional
/// timeout), exit.
pub fn wait_once_spec(name: &str, def: &str, timeout_seconds: Option<i64>) -> PutWfSpecRequest {
    single_thread_spec(
        name,
        vec![
            ("0-entrypoint", entry("1-wait")),
            ("1-wait", wait(def, timeout_seconds, "2-exit")),
            ("2-exit", exit()),
        ],
    )
}
