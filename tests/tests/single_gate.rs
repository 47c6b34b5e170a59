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
