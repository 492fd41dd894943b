//! `halterctl`: a command-line client for any Halter node.
//!
//! Tables for people by default, `-o json` for scripts. Errors print the gRPC code and the
//! server's reason, and the exit code is non-zero.

mod backup;
mod correlated;
mod output;
mod schedules;
mod tasks;
mod user_tasks;
mod workflow_events;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use halter_api::halter::cluster_client::ClusterClient;
use halter_api::halter::{AddLearnerRequest, ChangeMembershipRequest, Empty, NodeInfo};
use halter_api::json::{from_json, to_json};
use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::*;
use halter_api::values;
use output::Format;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(
    name = "halterctl",
    version,
    about = "Talk to a Halter cluster (any node)"
)]
struct Cli {
    /// A node's client address (LittleHorse API).
    #[arg(
        long,
        env = "HALTER_ADDR",
        default_value = "127.0.0.1:2023",
        global = true
    )]
    addr: String,
    /// A node's peer address (cluster administration).
    #[arg(
        long,
        env = "HALTER_PEER_ADDR",
        default_value = "127.0.0.1:2033",
        global = true
    )]
    peer_addr: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    output: Format,
    /// Seconds to wait for an answer.
    #[arg(long, default_value = "10", global = true)]
    timeout: u64,
    /// Connect with TLS, trusting the nodes' certificates this CA signed (PEM).
    #[arg(long, env = "HALTER_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    /// A client certificate (PEM) to present: needed on the peer port of a TLS cluster, and on
    /// its client port if the nodes require one.
    #[arg(
        long,
        env = "HALTER_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    client_cert: Option<std::path::PathBuf>,
    /// The key of --client-cert (PEM).
    #[arg(
        long,
        env = "HALTER_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    client_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// ExternalEventDefs: what kinds of events exist.
    #[command(subcommand, name = "external-event-def")]
    Def(DefCmd),
    /// ExternalEvents: things that happened.
    #[command(subcommand, name = "external-event")]
    Event(EventCmd),
    /// WfSpecs.
    #[command(subcommand, name = "wf-spec")]
    Spec(SpecCmd),
    /// WfRuns.
    #[command(subcommand, name = "wf-run")]
    Run(RunCmd),
    /// ScheduledWfRuns: WfRuns started on a cron schedule.
    #[command(subcommand, name = "scheduled-wf-run")]
    Schedule(schedules::ScheduleCmd),
    /// NodeRuns of a WfRun.
    #[command(subcommand, name = "node-run")]
    NodeRun(ListCmd),
    /// Variables: those of a WfRun, or the WfRuns whose searchable variable holds a value.
    #[command(subcommand, name = "variable")]
    Variable(VariableCmd),
    /// TaskDefs: what task workers can execute.
    #[command(subcommand, name = "task-def")]
    TaskDef(tasks::TaskDefCmd),
    /// TaskRuns: task executions of a WfRun.
    #[command(subcommand, name = "task-run")]
    TaskRun(tasks::TaskRunCmd),
    /// CorrelatedEvents: events put by key for every WfRun waiting for it.
    #[command(subcommand, name = "correlated-event")]
    Correlated(correlated::CorrelatedCmd),
    /// WorkflowEventDefs: what kinds of events WfRuns throw.
    #[command(subcommand, name = "workflow-event-def")]
    WorkflowEventDef(workflow_events::WorkflowEventDefCmd),
    /// WorkflowEvents: what a WfRun threw; `await` waits for the next one.
    #[command(subcommand, name = "workflow-event")]
    WorkflowEvent(workflow_events::WorkflowEventCmd),
    /// UserTaskDefs: the forms people fill in.
    #[command(subcommand, name = "user-task-def")]
    UserTaskDef(user_tasks::UserTaskDefCmd),
    /// UserTaskRuns: work waiting for people (search, assign, complete, cancel, comment).
    #[command(subcommand, name = "user-task")]
    UserTask(user_tasks::UserTaskCmd),
    /// Cluster membership and leadership (talks to --peer-addr).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Who the server says the caller is, and what it may do.
    Whoami,
}

#[derive(Subcommand)]
enum DefCmd {
    Put {
        name: String,
        /// Delete unclaimed events this many seconds after they are put.
        #[arg(long)]
        retention_seconds: Option<i64>,
        /// Require event content of this type (STR, INT, DOUBLE, BOOL, JSON_OBJ, JSON_ARR, BYTES).
        #[arg(long = "type")]
        content_type: Option<String>,
        /// Accept correlated events (put by key) for this def.
        #[arg(long)]
        correlated: bool,
        /// Correlated events expire this many seconds after they are put.
        #[arg(long, requires = "correlated")]
        ttl_seconds: Option<i64>,
        /// A correlated event is deleted once it reached the WfRuns waiting for it.
        #[arg(long, requires = "correlated")]
        delete_after_first: bool,
    },
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
    Search {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        limit: Option<i32>,
    },
}

#[derive(clap::Args)]
#[group(multiple = false)]
struct Content {
    /// Content as a JSON object or array (stored as JSON_OBJ / JSON_ARR).
    #[arg(long)]
    json: Option<String>,
    #[arg(long)]
    str: Option<String>,
    #[arg(long)]
    int: Option<i64>,
    #[arg(long)]
    double: Option<f64>,
    #[arg(long)]
    bool: Option<bool>,
    /// Content as protobuf JSON of a VariableValue, e.g. '{"int": "5"}'.
    #[arg(long)]
    value: Option<String>,
}

impl Content {
    fn into_value(self) -> anyhow::Result<VariableValue> {
        Ok(if let Some(j) = self.json {
            match serde_json::from_str::<Value>(&j).context("--json is not JSON")? {
                Value::Array(_) => values::json_arr(j),
                Value::Object(_) => values::json_obj(j),
                _ => {
                    return Err(anyhow!(
                        "--json takes an object or an array; use --str/--int/... for scalars"
                    ))
                }
            }
        } else if let Some(s) = self.str {
            values::str(s)
        } else if let Some(i) = self.int {
            values::int(i)
        } else if let Some(d) = self.double {
            values::double(d)
        } else if let Some(b) = self.bool {
            values::boolean(b)
        } else if let Some(v) = self.value {
            from_json("littlehorse.VariableValue", &v)?
        } else {
            values::null()
        })
    }
}

#[derive(Subcommand)]
enum EventCmd {
    Put {
        wf_run_id: String,
        def: String,
        #[arg(long)]
        guid: Option<String>,
        #[command(flatten)]
        content: Content,
        #[arg(long)]
        thread: Option<i32>,
        #[arg(long)]
        position: Option<i32>,
    },
    Get {
        wf_run_id: String,
        def: String,
        guid: String,
    },
    List {
        wf_run_id: String,
    },
    Search {
        def: String,
        #[arg(long)]
        claimed: Option<bool>,
        #[arg(long)]
        limit: Option<i32>,
    },
}

#[derive(Subcommand)]
enum SpecCmd {
    /// Deploy a spec from a JSON PutWfSpecRequest file (`-` for standard input).
    Put { file: PathBuf },
    /// The latest version, or the one given.
    Get {
        name: String,
        #[arg(long)]
        major: Option<i32>,
        #[arg(long, requires = "major")]
        revision: Option<i32>,
    },
    Search {
        #[arg(long)]
        prefix: Option<String>,
    },
}

#[derive(Subcommand)]
enum RunCmd {
    /// Start a WfRun. Variables as NAME=VALUE with VALUE a protobuf-JSON VariableValue
    /// (e.g. amount='{"int":"5"}') or NAME:str=TEXT / NAME:int=N.
    Run {
        spec: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long = "var")]
        vars: Vec<String>,
        /// Start it as a child of this WfRun (its spec names the parent's in parent_wf_spec).
        #[arg(long)]
        parent: Option<String>,
    },
    Get {
        id: String,
    },
    Stop {
        id: String,
        #[arg(long, default_value = "0")]
        thread: i32,
    },
    Resume {
        id: String,
        #[arg(long, default_value = "0")]
        thread: i32,
    },
    /// Runs a failed (ERROR) thread's failed node again, or moves past it with --skip.
    Rescue {
        id: String,
        #[arg(long, default_value = "0")]
        thread: i32,
        /// Take the failed node's outgoing edges instead of running it again.
        #[arg(long)]
        skip: bool,
    },
    Delete {
        id: String,
    },
    Search {
        spec: String,
        /// RUNNING, COMPLETED, ERROR, ...
        #[arg(long)]
        status: Option<String>,
    },
}

#[derive(Subcommand)]
enum ListCmd {
    List { wf_run_id: String },
}

#[derive(Subcommand)]
enum VariableCmd {
    List {
        wf_run_id: String,
    },
    /// The variables NAME of the spec's WfRuns that hold VALUE, oldest first; the spec must
    /// declare NAME searchable. MATCH is NAME:TYPE=VALUE (e.g. order:str=42) or NAME=JSON.
    Search {
        spec: String,
        #[arg(value_name = "MATCH")]
        matching: String,
        #[arg(long)]
        major: Option<i32>,
        #[arg(long, requires = "major")]
        revision: Option<i32>,
        #[arg(long)]
        limit: Option<i32>,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    Status,
    /// Add a node: as a learner, then (unless --learner) as a voter.
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long = "node-peer-addr")]
        node_peer_addr: String,
        #[arg(long = "node-client-addr")]
        node_client_addr: String,
        #[arg(long)]
        learner: bool,
    },
    /// Remove a voter from the membership.
    Remove {
        id: u64,
    },
    /// Make node ID leader (it starts an election).
    TransferLeader {
        id: u64,
    },
    /// Write an online backup of the whole state to FILE (every write acknowledged before
    /// it started is in it). `halter restore --from FILE` makes a data directory of it.
    Backup {
        file: std::path::PathBuf,
    },
}

/// How halterctl connects: plain, or TLS (with `--ca-cert`, and `--client-cert`/`--client-key`
/// to present).
struct Connect {
    timeout: Duration,
    tls: Option<Tls>,
}

#[cfg(not(madsim))]
type Tls = tonic::transport::ClientTlsConfig;
/// The simulated transport has no TLS.
#[cfg(madsim)]
type Tls = std::convert::Infallible;

#[cfg(not(madsim))]
fn load_tls(cli: &Cli) -> anyhow::Result<Option<Tls>> {
    use tonic::transport::{Certificate, Identity};
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let Some(ca) = &cli.ca_cert else {
        anyhow::ensure!(
            cli.client_cert.is_none(),
            "--client-cert needs --ca-cert (TLS)"
        );
        return Ok(None);
    };
    let mut tls = Tls::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

#[cfg(madsim)]
fn load_tls(cli: &Cli) -> anyhow::Result<Option<Tls>> {
    anyhow::ensure!(cli.ca_cert.is_none(), "TLS is not simulated");
    Ok(None)
}

impl Connect {
    fn new(cli: &Cli) -> anyhow::Result<Self> {
        Ok(Connect {
            timeout: Duration::from_secs(cli.timeout),
            tls: load_tls(cli)?,
        })
    }

    fn channel(&self, addr: &str) -> anyhow::Result<Channel> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.timeout);
        let endpoint = match &self.tls {
            #[cfg(not(madsim))]
            Some(tls) => endpoint.tls_config(tls.clone())?,
            #[cfg(madsim)]
            Some(never) => match *never {},
            None => endpoint,
        };
        Ok(endpoint.connect_lazy())
    }
}

fn parse_var(s: &str) -> anyhow::Result<(String, VariableValue)> {
    let (lhs, rhs) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("--var {s}: expected NAME=VALUE"))?;
    if let Some((name, ty)) = lhs.split_once(':') {
        let v = match ty {
            "str" => values::str(rhs),
            "int" => values::int(rhs.parse().context("not an integer")?),
            "double" => values::double(rhs.parse().context("not a number")?),
            "bool" => values::boolean(rhs.parse().context("not true/false")?),
            "json" => match serde_json::from_str::<Value>(rhs)? {
                Value::Array(_) => values::json_arr(rhs),
                _ => values::json_obj(rhs),
            },
            other => return Err(anyhow!("--var {s}: unknown type '{other}'")),
        };
        return Ok((name.to_string(), v));
    }
    Ok((
        lhs.to_string(),
        from_json("littlehorse.VariableValue", rhs)?,
    ))
}

fn type_def(name: &str) -> anyhow::Result<TypeDefinition> {
    let t = VariableType::from_str_name(&name.to_uppercase())
        .ok_or_else(|| anyhow!("unknown type {name}"))?;
    Ok(TypeDefinition {
        defined_type: Some(type_definition::DefinedType::PrimitiveType(t as i32)),
        masked: false,
    })
}

/// A WfRunId from its text form: a child's is `{parent}_{child}` (LittleHorse's own form).
pub(crate) fn wf(id: &str) -> WfRunId {
    halter_api::wf_run_id::wf_run_id_of(id)
}

/// What a command printed: one object, or a list (`results`) of them.
enum Shown {
    One(Value),
    Many(Value, Vec<Value>),
}

fn one<M: prost::Message>(name: &str, m: &M) -> anyhow::Result<Shown> {
    Ok(Shown::One(to_json(name, m)?))
}

fn many<M: prost::Message>(name: &str, m: &M) -> anyhow::Result<Shown> {
    let v = to_json(name, m)?;
    let rows = v
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(Shown::Many(v, rows))
}

async fn run(cli: Cli) -> anyhow::Result<Shown> {
    let connect = Connect::new(&cli)?;
    let mut lh = LittleHorseClient::new(connect.channel(&cli.addr)?);
    Ok(match cli.cmd {
        Cmd::Def(c) => match c {
            DefCmd::Put {
                name,
                retention_seconds,
                content_type,
                correlated,
                ttl_seconds,
                delete_after_first,
            } => {
                let req = PutExternalEventDefRequest {
                    name,
                    retention_policy: retention_seconds.map(|s| ExternalEventRetentionPolicy {
                        ext_evt_gc_policy: Some(
                            external_event_retention_policy::ExtEvtGcPolicy::SecondsAfterPut(s),
                        ),
                    }),
                    content_type: content_type
                        .map(|t| {
                            type_def(&t).map(|td| ReturnType {
                                return_type: Some(td),
                            })
                        })
                        .transpose()?,
                    correlated_event_config: correlated.then_some(CorrelatedEventConfig {
                        ttl_seconds,
                        delete_after_first_correlation: delete_after_first,
                    }),
                };
                one(
                    "littlehorse.ExternalEventDef",
                    &lh.put_external_event_def(req).await?.into_inner(),
                )?
            }
            DefCmd::Get { name } => one(
                "littlehorse.ExternalEventDef",
                &lh.get_external_event_def(ExternalEventDefId { name })
                    .await?
                    .into_inner(),
            )?,
            DefCmd::Delete { name } => {
                lh.delete_external_event_def(DeleteExternalEventDefRequest {
                    id: Some(ExternalEventDefId { name }),
                })
                .await?;
                Shown::One(serde_json::json!({"deleted": true}))
            }
            DefCmd::Search { prefix, limit } => many(
                "littlehorse.ExternalEventDefIdList",
                &lh.search_external_event_def(SearchExternalEventDefRequest {
                    bookmark: None,
                    limit,
                    prefix,
                })
                .await?
                .into_inner(),
            )?,
        },
        Cmd::Event(c) => match c {
            EventCmd::Put {
                wf_run_id,
                def,
                guid,
                content,
                thread,
                position,
            } => {
                let req = PutExternalEventRequest {
                    wf_run_id: Some(wf(&wf_run_id)),
                    external_event_def_id: Some(ExternalEventDefId { name: def }),
                    guid,
                    content: Some(content.into_value()?),
                    thread_run_number: thread,
                    node_run_position: position,
                };
                one(
                    "littlehorse.ExternalEvent",
                    &lh.put_external_event(req).await?.into_inner(),
                )?
            }
            EventCmd::Get {
                wf_run_id,
                def,
                guid,
            } => one(
                "littlehorse.ExternalEvent",
                &lh.get_external_event(ExternalEventId {
                    wf_run_id: Some(wf(&wf_run_id)),
                    external_event_def_id: Some(ExternalEventDefId { name: def }),
                    guid,
                })
                .await?
                .into_inner(),
            )?,
            EventCmd::List { wf_run_id } => many(
                "littlehorse.ExternalEventList",
                &lh.list_external_events(ListExternalEventsRequest {
                    wf_run_id: Some(wf(&wf_run_id)),
                    bookmark: None,
                    limit: None,
                })
                .await?
                .into_inner(),
            )?,
            EventCmd::Search {
                def,
                claimed,
                limit,
            } => many(
                "littlehorse.ExternalEventIdList",
                &lh.search_external_event(SearchExternalEventRequest {
                    external_event_def_id: Some(ExternalEventDefId { name: def }),
                    is_claimed: claimed,
                    limit,
                    ..Default::default()
                })
                .await?
                .into_inner(),
            )?,
        },
        Cmd::Spec(c) => match c {
            SpecCmd::Put { file } => {
                let text = if file.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?
                };
                let req: PutWfSpecRequest = from_json("littlehorse.PutWfSpecRequest", &text)?;
                one(
                    "littlehorse.WfSpec",
                    &lh.put_wf_spec(req).await?.into_inner(),
                )?
            }
            SpecCmd::Get {
                name,
                major,
                revision,
            } => {
                let spec = match (major, revision) {
                    (Some(m), Some(r)) => {
                        lh.get_wf_spec(WfSpecId {
                            name,
                            major_version: m,
                            revision: r,
                        })
                        .await?
                    }
                    (m, _) => {
                        lh.get_latest_wf_spec(GetLatestWfSpecRequest {
                            name,
                            major_version: m,
                        })
                        .await?
                    }
                };
                one("littlehorse.WfSpec", &spec.into_inner())?
            }
            SpecCmd::Search { prefix } => many(
                "littlehorse.WfSpecIdList",
                &lh.search_wf_spec(SearchWfSpecRequest {
                    wf_spec_criteria: prefix.map(search_wf_spec_request::WfSpecCriteria::Prefix),
                    ..Default::default()
                })
                .await?
                .into_inner(),
            )?,
        },
        Cmd::Run(c) => match c {
            RunCmd::Run {
                spec,
                id,
                vars,
                parent,
            } => {
                let variables: BTreeMap<String, VariableValue> = vars
                    .iter()
                    .map(|v| parse_var(v))
                    .collect::<Result<_, _>>()?;
                let req = RunWfRequest {
                    wf_spec_name: spec,
                    id,
                    variables,
                    parent_wf_run_id: parent.as_deref().map(wf),
                    ..Default::default()
                };
                one("littlehorse.WfRun", &lh.run_wf(req).await?.into_inner())?
            }
            RunCmd::Get { id } => one(
                "littlehorse.WfRun",
                &lh.get_wf_run(wf(&id)).await?.into_inner(),
            )?,
            RunCmd::Stop { id, thread } => {
                lh.stop_wf_run(StopWfRunRequest {
                    wf_run_id: Some(wf(&id)),
                    thread_run_number: thread,
                })
                .await?;
                Shown::One(serde_json::json!({"stopped": id}))
            }
            RunCmd::Resume { id, thread } => {
                lh.resume_wf_run(ResumeWfRunRequest {
                    wf_run_id: Some(wf(&id)),
                    thread_run_number: thread,
                })
                .await?;
                Shown::One(serde_json::json!({"resumed": id}))
            }
            RunCmd::Rescue { id, thread, skip } => one(
                "littlehorse.WfRun",
                &lh.rescue_thread_run(RescueThreadRunRequest {
                    wf_run_id: Some(wf(&id)),
                    thread_run_number: thread,
                    skip_current_node: skip,
                })
                .await?
                .into_inner(),
            )?,
            RunCmd::Delete { id } => {
                lh.delete_wf_run(DeleteWfRunRequest { id: Some(wf(&id)) })
                    .await?;
                Shown::One(serde_json::json!({"deleted": id}))
            }
            RunCmd::Search { spec, status } => {
                let status = status
                    .map(|s| {
                        LhStatus::from_str_name(&s.to_uppercase())
                            .map(|s| s as i32)
                            .ok_or_else(|| anyhow!("unknown status {s}"))
                    })
                    .transpose()?;
                many(
                    "littlehorse.WfRunIdList",
                    &lh.search_wf_run(SearchWfRunRequest {
                        wf_spec_name: spec,
                        status,
                        ..Default::default()
                    })
                    .await?
                    .into_inner(),
                )?
            }
        },
        Cmd::NodeRun(ListCmd::List { wf_run_id }) => many(
            "littlehorse.NodeRunList",
            &lh.list_node_runs(ListNodeRunsRequest {
                wf_run_id: Some(wf(&wf_run_id)),
                ..Default::default()
            })
            .await?
            .into_inner(),
        )?,
        Cmd::Variable(VariableCmd::Search {
            spec,
            matching,
            major,
            revision,
            limit,
        }) => {
            let (var_name, value) = parse_var(&matching)?;
            many(
                "littlehorse.VariableIdList",
                &lh.search_variable(SearchVariableRequest {
                    wf_spec_name: spec,
                    var_name,
                    value: Some(value),
                    wf_spec_major_version: major,
                    wf_spec_revision: revision,
                    limit,
                    bookmark: None,
                })
                .await?
                .into_inner(),
            )?
        }
        Cmd::Whoami => one(
            "littlehorse.Principal",
            &lh.whoami(Empty {}).await?.into_inner(),
        )?,
        Cmd::Variable(VariableCmd::List { wf_run_id }) => many(
            "littlehorse.VariableList",
            &lh.list_variables(ListVariablesRequest {
                wf_run_id: Some(wf(&wf_run_id)),
                ..Default::default()
            })
            .await?
            .into_inner(),
        )?,
        Cmd::TaskDef(c) => tasks::task_def(&mut lh, c).await?,
        Cmd::WorkflowEventDef(c) => workflow_events::def(&mut lh, c).await?,
        Cmd::WorkflowEvent(c) => workflow_events::event(&mut lh, c).await?,
        Cmd::UserTaskDef(c) => user_tasks::def(&mut lh, c).await?,
        Cmd::UserTask(c) => user_tasks::run(&mut lh, c).await?,
        Cmd::TaskRun(c) => tasks::task_run(&mut lh, c).await?,
        Cmd::Correlated(c) => correlated::run(&mut lh, c).await?,
        Cmd::Schedule(c) => schedules::run(&mut lh, c).await?,
        Cmd::Cluster(c) => {
            let mut admin = ClusterClient::new(connect.channel(&cli.peer_addr)?);
            let status = match c {
                ClusterCmd::Backup { file } => return backup::take(&mut admin, &file).await,
                ClusterCmd::Status => admin.status(Empty {}).await?.into_inner(),
                ClusterCmd::Add {
                    id,
                    node_peer_addr,
                    node_client_addr,
                    learner,
                } => {
                    let s = admin
                        .add_learner(AddLearnerRequest {
                            node: Some(NodeInfo {
                                id,
                                peer_addr: node_peer_addr,
                                client_addr: node_client_addr,
                            }),
                        })
                        .await?
                        .into_inner();
                    if learner {
                        s
                    } else {
                        let mut voters: Vec<u64> = s.voters.iter().map(|v| v.id).collect();
                        voters.push(id);
                        admin
                            .change_membership(ChangeMembershipRequest {
                                voters,
                                remove_learners: vec![],
                            })
                            .await?
                            .into_inner()
                    }
                }
                ClusterCmd::Remove { id } => {
                    let s = admin.status(Empty {}).await?.into_inner();
                    let req = if s.voters.iter().any(|v| v.id == id) {
                        ChangeMembershipRequest {
                            voters: s.voters.iter().map(|v| v.id).filter(|v| *v != id).collect(),
                            remove_learners: vec![],
                        }
                    } else if s.learners.iter().any(|v| v.id == id) {
                        ChangeMembershipRequest {
                            voters: vec![],
                            remove_learners: vec![id],
                        }
                    } else {
                        return Err(anyhow!("node {id} is not a member"));
                    };
                    admin.change_membership(req).await?.into_inner()
                }
                ClusterCmd::TransferLeader { id } => {
                    let s = admin.status(Empty {}).await?.into_inner();
                    let target = s
                        .voters
                        .iter()
                        .find(|v| v.id == id)
                        .ok_or_else(|| anyhow!("node {id} is not a voter"))?;
                    let mut t = ClusterClient::new(connect.channel(&target.peer_addr)?);
                    t.trigger_election(Empty {}).await?;
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    t.status(Empty {}).await?.into_inner()
                }
            };
            one("halter.ClusterStatus", &status)?
        }
    })
}

/// `InvalidArgument` -> `INVALID_ARGUMENT`, as gRPC documents its codes.
fn code_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, ch) in format!("{code:?}").chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let format = cli.output;
    match run(cli).await {
        Ok(shown) => {
            let text = match (format, shown) {
                (Format::Json, Shown::One(v)) | (Format::Json, Shown::Many(v, _)) => {
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                }
                (Format::Table, Shown::One(v)) => output::object(&v),
                (Format::Table, Shown::Many(_, rows)) => output::table(&rows),
            };
            println!("{text}");
        }
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(s) => eprintln!("error: {}: {}", code_name(s.code()), s.message()),
                None => eprintln!("error: {e:#}"),
            }
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// clap checks an argument definition only when its subcommand runs; this walks them all.
    #[test]
    fn every_subcommand_s_arguments_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// A global flag whose id a subcommand's argument shares breaks that subcommand at run
    /// time, in a way `debug_assert` does not see: a global `--key` (PathBuf) once made every
    /// `correlated-event` command (positional `key`, a String) panic. Those commands parse,
    /// and the TLS flags still do next to them.
    #[test]
    fn correlated_event_keys_and_the_tls_flags_parse_side_by_side() {
        for args in [
            &[
                "halterctl",
                "correlated-event",
                "put",
                "o-42",
                "paid",
                "--int",
                "1",
            ][..],
            &["halterctl", "correlated-event", "delete", "o-42", "paid"],
            &[
                "halterctl",
                "--ca-cert",
                "ca.pem",
                "--client-cert",
                "c.pem",
                "--client-key",
                "c.key",
                "correlated-event",
                "get",
                "o-42",
                "paid",
            ],
        ] {
            let cli = super::Cli::try_parse_from(args).expect("parses");
            assert!(matches!(cli.cmd, super::Cmd::Correlated(_)), "{args:?}");
        }
    }
}
