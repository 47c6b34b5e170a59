//! `aggregator demo` end to end as a user runs it: a small synthetic cohort, separate site-agent
//! processes over loopback mutual TLS, one repeat of the nested CV with `--quick` settings. The
//! report, metrics and every figure must exist and agree with each other.

use std::process::Command;

#[test]
fn demo_writes_a_consistent_report_from_separate_site_processes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let run = Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .args([
            "demo",
            "--sites",
            "3",
            "--patients",
            "45",
            "--repeats",
            "1",
            "--quick",
            "--out",
        ])
        .arg(&out)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("report: "), "{stdout}");

    // Every site ran as its own process: each kit has its agent's log and audit trail.
    for site in ["S01", "S02", "S03"] {
        let kit = out.join("work/sites").join(site);
        assert!(kit.join("agent.log").exists(), "{site} agent log");
        let audit = std::fs::read_to_string(kit.join("audit.jsonl")).unwrap();
        assert!(audit.lines().count() > 10, "{site} sent too few messages");
        assert!(kit.join("state/study-memory.json").exists());
    }

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let metrics: report::StudyReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let m = metrics.metrics.get().expect("metrics computed");
    assert_eq!(m.models.len(), 2, "ML and clinical: {:?}", m.notes);
    for model in &m.models {
        let auc = model.auc.value.expect("AUC defined");
        assert!((0.0..=1.0).contains(&auc), "{} AUC {auc}", model.name);
        let n = model.n_pos + model.n_neg;
        assert!(
            (30..=45).contains(&n),
            "{}: {n} patients scored",
            model.name
        );
        assert!(html.contains(&model.name));
    }
    assert!(metrics.table1.get().is_some());
    assert!(metrics.lasso.get().is_some());
    for stem in report::FIGURE_STEMS {
        for ext in ["svg", "png"] {
            let f = out.join("figures").join(format!("{stem}.{ext}"));
            assert!(f.exists(), "missing {}", f.display());
        }
    }
    assert!(!html.contains("http://") && !html.contains("https://"));

    // Per-site traffic comes from the server's results folders (traffic.csv of every study),
    // which the demo waits for before stopping the server; the counts from Table 1's rounds.
    let sites = metrics.sites.get().expect("per-site contributions");
    assert_eq!(sites.len(), 3, "{sites:?}");
    for s in sites {
        assert!(s.messages_sent > 10 && s.bytes_sent > 1000, "{s:?}");
        assert!(s.n.is_some_and(|n| n >= 5), "{s:?}");
    }
    for study in ["table1", "lasso", "pipeline"] {
        let results = out.join("work/aggregator/state/results").join(study);
        for f in ["study.json", "traffic.csv", "output.json"] {
            assert!(
                results.join(f).exists(),
                "missing {}",
                results.join(f).display()
            );
        }
    }
    // The closing summary names every stage with its time.
    for stage in ["synthetic cohort", "study pipeline", "report", "total"] {
        assert!(stdout.contains(&format!("  {stage} ")), "{stage}: {stdout}");
    }
}
