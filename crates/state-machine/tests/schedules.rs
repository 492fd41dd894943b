#![allow(clippy::unwrap_used)]
//! ScheduleWf and DeleteScheduledWfRun: one WfRun per cron time, named `{id}-{due ms}`, the
//! next time armed after each; missed times collapse into one run; a time whose run cannot
//! start is skipped without losing the schedule; every refusal changes nothing.

mod support;

use std::collections::BTreeMap;

use halter_api::halter::{command::Kind, FireTimers, TimerKey};
use halter_api::littlehorse::*;
use halter_api::values;
use halter_state_machine::{query, scheduled_wf_run, Rejection, Response};
use support::*;

const HOUR: i64 = 3_600_000;

/// entrypoint -> exit, with a required STR variable `who`: a run completes when it starts.
fn instant_spec(name: &str) -> PutWfSpecRequest {
    spec(
        name,
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-exit-EXIT")),
            ("1-exit-EXIT", exit()),
        ],
        vec![var_def("who", VariableType::Str, true)],
    )
}

fn who(v: &str) -> BTreeMap<String, VariableValue> {
    BTreeMap::from([("who".to_string(), values::str(v))])
}

fn req(id: &str, spec: &str, cron: &str, vars: BTreeMap<String, VariableValue>) -> Kind {
    Kind::ScheduleWf(ScheduleWfRequest {
        id: Some(id.into()),
        wf_spec_name: spec.into(),
        cron_expression: cron.into(),
        variables: vars,
        ..Default::default()
    })
}

fn schedule(h: &mut Harness, id: &str, spec: &str, cron: &str) -> ScheduledWfRun {
    match h.ok(req(id, spec, cron, who("ops"))) {
        Response::ScheduledWfRun(s) => s,
        other => panic!("unexpected {other:?}"),
    }
}

/// The next whole hour strictly after `t`.
fn next_hour(t: i64) -> i64 {
    (t / HOUR + 1) * HOUR
}

/// The due time of the schedule's pending timer, if it has one.
fn armed(h: &Harness, id: &str) -> Option<i64> {
    let timer = scheduled_wf_run::timer_id(id);
    h.read(|t| {
        halter_state_machine::timers::due(t.timers().unwrap(), i64::MAX, 1_000)
            .unwrap()
            .into_iter()
            .find(|(_, tid)| *tid == timer)
            .map(|(due, _)| due)
    })
}

fn runs_of(h: &Harness, spec: &str) -> Vec<String> {
    h.read(|t| {
        query::search_wf_runs(
            t,
            &SearchWfRunRequest {
                wf_spec_name: spec.into(),
                ..Default::default()
            },
        )
        .unwrap()
        .results
        .into_iter()
        .map(|id| id.id)
        .collect()
    })
}

#[test]
fn each_time_starts_one_run_named_for_it_and_arms_the_next() {
    let mut h = Harness::new();
    h.put_spec(instant_spec("report"));
    let s = schedule(&mut h, "hourly", "report", "0 * * * *");
    assert_eq!(s.cron_expression, "0 * * * *");
    assert_eq!(s.wf_spec_id.as_ref().unwrap().name, "report");
    assert_eq!(s.variables, who("ops"));
    let due = next_hour(h.now);
    assert_eq!(armed(&h, "hourly"), Some(due));

    // Not yet due: nothing starts.
    h.advance_ms(due - h.now - 1);
    assert_eq!(h.fire_due(), 0);
    assert!(runs_of(&h, "report").is_empty());

    h.advance_ms(1);
    assert_eq!(h.fire_due(), 1);
    let run_id = scheduled_wf_run::run_id("hourly", due);
    assert_eq!(runs_of(&h, "report"), vec![run_id.clone()]);
    assert_eq!(h.status(&run_id), LhStatus::Completed);
    assert_eq!(h.variable(&run_id, "who"), values::str("ops"));
    assert_eq!(armed(&h, "hourly"), Some(due + HOUR));

    // The same firing proposed again (a new leader that saw the old due time) is a no-op.
    let before = h.digest();
    let again = h.ok(Kind::FireTimers(FireTimers {
        timers: vec![TimerKey {
            due_ms: due,
            id: scheduled_wf_run::timer_id("hourly"),
        }],
    }));
    assert_eq!(again, Response::TimersFired(0));
    assert_eq!(before, h.digest());

    h.advance_ms(HOUR);
    assert_eq!(h.fire_due(), 1);
    assert_eq!(
        runs_of(&h, "report").len(),
        2,
        "the second hour started a second run"
    );
    assert_eq!(
        h.status(&scheduled_wf_run::run_id("hourly", due + HOUR)),
        LhStatus::Completed
    );
}

#[test]
fn missed_times_collapse_into_one_run() {
    let mut h = Harness::new();
    h.put_spec(instant_spec("report"));
    schedule(&mut h, "often", "report", "*/5 * * * *");
    let first = armed(&h, "often").unwrap();
    // No leader for three hours: 36 times went by unfired.
    h.advance_ms(first - h.now + 3 * HOUR + 1_000);
    assert_eq!(h.fire_due(), 1);
    assert_eq!(
        runs_of(&h, "often"),
        Vec::<String>::new(),
        "searched by spec name"
    );
    assert_eq!(
        runs_of(&h, "report"),
        vec![scheduled_wf_run::run_id("often", first)]
    );
    let next = armed(&h, "often").unwrap();
    assert!(next > h.now && next - h.now <= 5 * 60_000, "next {next}");
    assert_eq!(next % (5 * 60_000), 0);
}

#[test]
fn a_time_whose_run_cannot_start_is_skipped_not_the_schedule() {
    let mut h = Harness::new();
    let spec = h.put_spec(instant_spec("report"));
    schedule(&mut h, "hourly", "report", "0 * * * *");
    h.ok(Kind::DeleteWfSpec(DeleteWfSpecRequest {
        id: spec.id.clone(),
    }));
    let due = armed(&h, "hourly").unwrap();
    h.advance_ms(due - h.now);
    assert_eq!(h.fire_due(), 1);
    assert!(runs_of(&h, "report").is_empty());
    assert!(h
        .read(|t| query::get_wf_run(t, &wf_id(&scheduled_wf_run::run_id("hourly", due))))
        .is_err());
    assert_eq!(armed(&h, "hourly"), Some(due + HOUR));

    // The WfSpec is back: the next time starts its run.
    h.put_spec(instant_spec("report"));
    h.advance_ms(HOUR);
    assert_eq!(h.fire_due(), 1);
    assert_eq!(
        runs_of(&h, "report"),
        vec![scheduled_wf_run::run_id("hourly", due + HOUR)]
    );
}

#[test]
fn delete_stops_the_schedule_and_keeps_its_runs() {
    let mut h = Harness::new();
    h.put_spec(instant_spec("report"));
    schedule(&mut h, "hourly", "report", "0 * * * *");
    let due = armed(&h, "hourly").unwrap();
    h.advance_ms(due - h.now);
    assert_eq!(h.fire_due(), 1);
    let delete = || {
        Kind::DeleteScheduledWfRun(DeleteScheduledWfRunRequest {
            id: Some(ScheduledWfRunId {
                id: "hourly".into(),
            }),
        })
    };
    assert_eq!(h.ok(delete()), Response::Empty);
    assert_eq!(armed(&h, "hourly"), None);
    let got = h.read(|t| {
        query::get_scheduled_wf_run(
            t,
            &ScheduledWfRunId {
                id: "hourly".into(),
            },
        )
    });
    assert!(matches!(got, Err(e) if format!("{e:?}").contains("NotFound")));
    h.advance_ms(5 * HOUR);
    assert_eq!(h.fire_due(), 0);
    assert_eq!(
        runs_of(&h, "report"),
        vec![scheduled_wf_run::run_id("hourly", due)]
    );
    // Deleting again (a retried request) is fine.
    assert_eq!(h.ok(delete()), Response::Empty);
}

#[test]
fn refusals_change_nothing() {
    let mut h = Harness::new();
    h.put_spec(instant_spec("report"));
    schedule(&mut h, "taken", "report", "@daily");
    let invalid = |r: Rejection| matches!(r, Rejection::InvalidArgument(_));
    for (kind, ok) in [
        (
            req("a", "report", "61 * * * *", who("x")),
            invalid as fn(Rejection) -> bool,
        ),
        (req("a", "report", "* * * *", who("x")), invalid),
        (req("a", "report", "0 0 30 2 *", who("x")), invalid),
        (req("a", "report", "0 * * * *", BTreeMap::new()), invalid),
        (
            req(
                "a",
                "report",
                "0 * * * *",
                BTreeMap::from([("who".to_string(), values::int(3))]),
            ),
            invalid,
        ),
        (
            req(
                "a",
                "report",
                "0 * * * *",
                BTreeMap::from([
                    ("who".to_string(), values::str("x")),
                    ("other".to_string(), values::str("y")),
                ]),
            ),
            invalid,
        ),
        (
            req(&"a".repeat(120), "report", "0 * * * *", who("x")),
            invalid,
        ),
        (req("Bad_Id", "report", "0 * * * *", who("x")), invalid),
        (req("a", "missing", "0 * * * *", who("x")), |r| {
            matches!(r, Rejection::NotFound(_))
        }),
        (req("taken", "report", "0 * * * *", who("x")), |r| {
            matches!(r, Rejection::AlreadyExists(_))
        }),
        (
            Kind::ScheduleWf(ScheduleWfRequest {
                id: None,
                wf_spec_name: "report".into(),
                cron_expression: "0 * * * *".into(),
                variables: who("x"),
                ..Default::default()
            }),
            invalid,
        ),
        (
            Kind::ScheduleWf(ScheduleWfRequest {
                id: Some("a".into()),
                wf_spec_name: "report".into(),
                cron_expression: "0 * * * *".into(),
                variables: who("x"),
                parent_wf_run_id: Some(wf_id("parent")),
                ..Default::default()
            }),
            invalid,
        ),
    ] {
        let shown = format!("{kind:?}");
        let r = h.rejected(kind);
        assert!(ok(r.clone()), "{shown} got {r:?}");
    }
}

#[test]
fn search_finds_a_specs_schedules_by_version() {
    let mut h = Harness::new();
    h.put_spec(instant_spec("report"));
    h.put_spec(instant_spec("audit"));
    schedule(&mut h, "b", "report", "@hourly");
    schedule(&mut h, "a", "report", "@daily");
    schedule(&mut h, "c", "audit", "@daily");
    let search = |h: &Harness, name: &str, major: Option<i32>, revision: Option<i32>| {
        h.read(|t| {
            query::search_scheduled_wf_runs(
                t,
                &SearchScheduledWfRunRequest {
                    wf_spec_name: name.into(),
                    major_version: major,
                    revision,
                },
            )
            .map(|l| l.results.into_iter().map(|i| i.id).collect::<Vec<_>>())
        })
    };
    assert_eq!(search(&h, "report", None, None).unwrap(), vec!["a", "b"]);
    assert_eq!(
        search(&h, "report", Some(0), Some(0)).unwrap(),
        vec!["a", "b"]
    );
    assert!(search(&h, "report", Some(1), None).unwrap().is_empty());
    assert_eq!(search(&h, "audit", None, None).unwrap(), vec!["c"]);
    assert!(search(&h, "report", None, Some(0)).is_err());
}
