//! A newcomer's tour of Halter's core, with no server: define an event, deploy a spec that waits
//! for it (with a timeout), run it, post the event, and print the WfRun as JSON.
//!
//! `cargo run -p halter-state-machine --example approval`

use std::collections::BTreeMap;

use halter_api::halter::command::Kind;
use halter_api::json::to_json;
use halter_api::littlehorse::*;
use halter_api::values;
use halter_state_machine::{apply, command, query, Response};
use halter_storage::{ReadTables, Store, Tables};

fn step(store: &Store, now_ms: i64, kind: Kind) -> Response {
    let txn = store.begin_write().expect("begin");
    let applied = {
        let mut tables = Tables::new(&txn);
        apply(&mut tables, &command(kind, now_ms)).expect("apply")
    };
    txn.commit().expect("commit");
    applied.response.unwrap_or_else(|r| panic!("rejected: {r}"))
}

fn literal(v: VariableValue) -> VariableAssignment {
    VariableAssignment {
        source: Some(variable_assignment::Source::LiteralValue(v)),
        ..Default::default()
    }
}

fn main() {
    let store = Store::in_memory().expect("in-memory redb");
    let mut now = 1_760_000_000_000; // the leader's clock; here, a script's

    // 1. An ExternalEventDef: what "the document was signed" looks like.
    step(
        &store,
        now,
        Kind::PutExternalEventDef(PutExternalEventDefRequest {
            name: "document-signed".into(),
            ..Default::default()
        }),
    );

    // 2. A WfSpec: wait up to one day for the signature, keep who signed in a variable.
    let mut to_exit = Edge {
        sink_node_name: "2-done-EXIT".into(),
        ..Default::default()
    };
    to_exit.variable_mutations.push(VariableMutation {
        lhs_name: "signer".into(),
        operation: VariableMutationType::Assign as i32,
        rhs_value: Some(variable_mutation::RhsValue::NodeOutput(
            variable_mutation::NodeOutputSource {
                path: Some(variable_mutation::node_output_source::Path::Jsonpath(
                    "$.signer".into(),
                )),
            },
        )),
        ..Default::default()
    });
    let nodes = BTreeMap::from([
        (
            "0-entrypoint-ENTRYPOINT".to_string(),
            Node {
                outgoing_edges: vec![Edge {
                    sink_node_name: "1-document-signed-EXTERNAL_EVENT".into(),
                    ..Default::default()
                }],
                node: Some(node::Node::Entrypoint(EntrypointNode {})),
                ..Default::default()
            },
        ),
        (
            "1-document-signed-EXTERNAL_EVENT".to_string(),
            Node {
                outgoing_edges: vec![to_exit],
                node: Some(node::Node::ExternalEvent(ExternalEventNode {
                    external_event_def_id: Some(ExternalEventDefId {
                        name: "document-signed".into(),
                    }),
                    timeout_seconds: Some(literal(values::int(86_400))),
                    correlation_key: None,
                    mask_correlation_key: false,
                })),
                ..Default::default()
            },
        ),
        (
            "2-done-EXIT".to_string(),
            Node {
                node: Some(node::Node::Exit(ExitNode { result: None })),
                ..Default::default()
            },
        ),
    ]);
    let signer = ThreadVarDef {
        var_def: Some(VariableDef {
            name: "signer".into(),
            type_def: Some(TypeDefinition {
                defined_type: Some(type_definition::DefinedType::PrimitiveType(
                    VariableType::Str as i32,
                )),
                masked: false,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    step(
        &store,
        now,
        Kind::PutWfSpec(PutWfSpecRequest {
            name: "contract-approval".into(),
            thread_specs: BTreeMap::from([(
                "entrypoint".to_string(),
                ThreadSpec {
                    nodes,
                    variable_defs: vec![signer],
                    ..Default::default()
                },
            )]),
            entrypoint_thread_name: "entrypoint".into(),
            ..Default::default()
        }),
    );

    // 3. Run it. (A server generates the id when the client gives none.)
    step(
        &store,
        now,
        Kind::RunWf(RunWfRequest {
            wf_spec_name: "contract-approval".into(),
            id: Some("contract-42".into()),
            ..Default::default()
        }),
    );

    // 4. An hour later the signature arrives.
    now += 3_600_000;
    let event = step(
        &store,
        now,
        Kind::PutExternalEvent(PutExternalEventRequest {
            wf_run_id: Some(WfRunId {
                id: "contract-42".into(),
                parent_wf_run_id: None,
            }),
            external_event_def_id: Some(ExternalEventDefId {
                name: "document-signed".into(),
            }),
            guid: Some("5f1c0a9e7b3d4c2a8e6f1b0d9c8a7e6f".into()),
            content: Some(values::json_obj(r#"{"signer": "ada@example.com"}"#)),
            thread_run_number: None,
            node_run_position: None,
        }),
    );
    if let Response::ExternalEvent(e) = &event {
        println!(
            "event claimed: {}",
            serde_json::to_string(&to_json("littlehorse.ExternalEvent", e).expect("json"))
                .expect("json")
        );
    }

    // 5. Read the WfRun and its variable back.
    let txn = store.begin_read().expect("read");
    let tables = ReadTables::new(&txn);
    let run = query::get_wf_run(
        &tables,
        &WfRunId {
            id: "contract-42".into(),
            parent_wf_run_id: None,
        },
    )
    .expect("wf run");
    let json = to_json("littlehorse.WfRun", &run).expect("json");
    println!("{}", serde_json::to_string_pretty(&json).expect("json"));
    let var = query::get_variable(
        &tables,
        &VariableId {
            wf_run_id: run.id.clone(),
            thread_run_number: 0,
            name: "signer".into(),
        },
    )
    .expect("variable");
    println!(
        "signer = {}",
        serde_json::to_string(
            &to_json("littlehorse.VariableValue", &var.value.unwrap_or_default()).expect("json")
        )
        .expect("json")
    );
}
