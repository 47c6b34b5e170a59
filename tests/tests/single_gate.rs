//! One policy check through which every outgoing message passes (issue #8 item 4).
//!
//! The site agent sends four kinds of message: Handshake (protocol and agent versions),
//! Heartbeat (empty), PullWork (a wait time) and PushResult. Only PushResult carries anything
//! derived from the site's data, and its payload must come out of `federation::site`, whose every
//! answer ends in `release_check`. This test holds the agent's source to that:
//!
//! 1. the agent never builds a result itself: no `pb::TaskResult { .. }` or `TaskResult { .. }`
//!    literal and no `pb::task_result::Body` anywhere in `site-agent/src`;
//! 2. every pushed message is a `pb::TaskResult::from(&r)` of a result that came from
//!    `answer::answer_with_memory` or `answer::unreadable_task` (the two entry points of the
//!    gate), and there are exactly as many pushes as those conversions;
//! 3. the only request messages the agent builds are the four above, with the fields named.
//!
//! Behaviourally: both entry points end in `release_check`, which refuses a result releasing a
//! count below min_count whatever produced it, and an undecodable task's answer carries only the
//! reason.

use federation::StudyId;
use federation::policy::SitePolicy;
use federation::site::{release_check, unreadable_task};
use federation::task::{GroupMoments, Released, ResultBody, Table1SummaryResult, TaskResult};
use fedrad_tests::repo_root;

fn agent_sources() -> Vec<(String, String)> {
    let dir = repo_root().join("site-agent/src");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "rs") {
            // Comments may mention anything; only code counts.
            let code: String = std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), code));
        }
    }
    assert!(
        out.len() > 3,
        "site-agent sources not found under {}",
        dir.display()
    );
    out
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn the_agent_sends_only_what_the_gate_built() {
    let mut pushes = 0;
    let mut from_results = 0;
    for (file, code) in agent_sources() {
        let squashed: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
        for forbidden in [
            "pb::TaskResult {",
            "TaskResult {",
            "task_result::Body",
            "SiteFailure {",
            "ResultBody::",
        ] {
            assert_eq!(
                count(&squashed, forbidden),
                0,
                "{file} builds a result itself ({forbidden}); answers must come from federation::site"
            );
        }
        pushes += count(&squashed, ".push_result(");
        from_results += count(&squashed, "pb::TaskResult::from(&");
        // The results that are converted come from the gate's two entry points.
        if squashed.contains(".push_result(") {
            assert!(
                squashed.contains("answer::answer_with_memory(")
                    && squashed.contains("answer::unreadable_task("),
                "{file}: pushes a result without taking it from federation::site"
            );
        }
        // No other request message carries a payload.
        for (msg, fields) in [
            (
                "pb::HandshakeRequest {",
                "protocol_version: PROTOCOL_VERSION, agent_version:",
            ),
            ("pb::HeartbeatRequest {", "}"),
            ("pb::PullWorkRequest {", "wait_ms:"),
        ] {
            for (i, _) in squashed.match_indices(msg) {
                let rest = squashed[i + msg.len()..].trim_start();
                assert!(rest.starts_with(fields), "{file}: {msg} carries {rest:.80}");
            }
        }
    }
    assert_eq!(
        pushes, 2,
        "one push per gate entry point (answer, undecodable task)"
    );
    assert_eq!(
        from_results, pushes,
        "every push converts a result the gate returned"
    );
}

#[test]
fn release_check_refuses_a_small_count_whatever_built_it_and_passes_the_rest() {
    let policy = SitePolicy {
        min_count: 5,
        ..SitePolicy::default()
    };
    let result = |n: u64| TaskResult {
        study_id: StudyId::new("s").unwrap(),
        round: 1,
        body: ResultBody::Table1Summary(Table1SummaryResult {
            group_n: [Released::Value(n), Released::Suppressed],
            label_missing: Released::Value(0),
            continuous: vec![federation::task::ContinuousSummary {
                variable: "age".into(),
                groups: [
                    Released::Value(GroupMoments {
                        n,
                        mean: 50.0,
                        m2: 10.0,
                    }),
                    Released::Suppressed,
                ],
                missing: [Released::Value(0), Released::Value(0)],
            }],
            categorical: vec![],
        }),
    };
    let refused = release_check(result(3), &policy);
    let ResultBody::Failure(f) = &refused.body else {
        panic!("{:?}", refused.body)
    };
    assert!(
        f.message.contains("min_count 5") && !f.message.contains("50"),
        "{}",
        f.message
    );
    assert_eq!(release_check(result(5), &policy), result(5));

    let u = unreadable_task("s", 4, "cannot read this task".into()).unwrap();
    assert_eq!(u.round, 4);
    assert!(matches!(&u.body, ResultBody::Failure(f) if f.message == "cannot read this task"));
    assert!(unreadable_task("not a valid id!", 4, String::new()).is_err());
}

/// The pipeline's column-names round (a study that omits its features) goes through the same
/// gate: the answer comes out of `answer_with_memory`, names each column by kind and nothing
/// else (no cell value, no count; the patient-id column not even by name), the audit line says
/// so, and a site below its `min_count` refuses it like any other round. It also crosses the
/// wire as names only (`protocol/tests/pipeline_privacy.rs` reviews its fields).
#[test]
fn the_column_names_round_passes_the_gate_and_releases_names_only() {
    use federation::pipeline::{PipelineTask, StageResult, StageTask};
    use federation::site::{SiteMemory, answer_with_memory};
    use federation::study::StudySpec;
    use federation::table::SiteTable;
    use federation::task::{Task, TaskBody};

    let spec = StudySpec::from_toml(
        r#"
id = "columns-gate"
[analysis]
kind = "pipeline"
label_column = "response"
exclude_columns = ["age"]
[analysis.cv]
repeats = 1
"#,
    )
    .unwrap();
    let json = spec.canonical_json();
    let task = Task {
        study_id: spec.id.clone(),
        study_hash: spec.hash(),
        study_spec_json: json,
        round: 1,
        body: TaskBody::Pipeline(PipelineTask {
            site: "S01".into(),
            batch: 0,
            features: vec![],
            stage: StageTask::Columns,
        }),
    };
    let header: Vec<String> = ["mrn", "response", "age", "f_a", "f_b", "sex"]
        .map(String::from)
        .to_vec();
    let rows = |n: usize| -> Vec<Vec<String>> {
        (0..n)
            .map(|i| {
                vec![
                    format!("{}", 900_001 + i),
                    (i % 2).to_string(),
                    format!("{}", 61 + i),
                    format!("{}.4321", 7_000 + i),
                    if i == 2 {
                        String::new()
                    } else {
                        format!("{}.875", 3_000 + i)
                    },
                    if i % 2 == 0 { "F" } else { "M" }.into(),
                ]
            })
            .collect()
    };
    let table = |n| {
        SiteTable::new(header.clone(), rows(n))
            .unwrap()
            .with_id_column("mrn")
            .unwrap()
    };
    let policy = SitePolicy {
        min_count: 5,
        allow_all_studies: true,
        ..SitePolicy::default()
    };
    let answer = answer_with_memory(&task, &table(12), &policy, &mut SiteMemory::default());
    let ResultBody::Pipeline(StageResult::Columns(report)) = &answer.result.body else {
        panic!("{:?}", answer.result.body)
    };
    assert_eq!(report.numeric, ["response", "age", "f_a"]);
    assert_eq!(report.incomplete, ["f_b"]);
    assert_eq!(report.text, ["sex"]);
    let sent = format!("{:?}", answer.result);
    for leak in ["900001", "mrn", "61", "7000", "3000", "\"F\"", "12"] {
        assert!(!sent.contains(leak), "{leak:?} in {sent}");
    }
    assert_eq!(
        answer.result.smallest_released_count(),
        None,
        "no count released"
    );
    let audit = federation::site::describe(&answer.result);
    assert!(audit.contains("no values, no counts"), "{audit}");
    // Below min_count: refused through the gate.
    let small = answer_with_memory(&task, &table(3), &policy, &mut SiteMemory::default());
    let ResultBody::Failure(f) = &small.result.body else {
        panic!("{:?}", small.result.body)
    };
    assert!(f.message.contains("min_count"), "{}", f.message);
}
