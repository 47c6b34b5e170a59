//! `write_report` on the fixture study (real stats / models / federation computations on a
//! synthetic 7-site cohort): every file, a lossless metrics.json, a self-contained page with
//! every section and figure, decodable PNGs of the declared size, CSVs that match the report,
//! partial studies with their reasons, re-runs, and failures that leave nothing behind.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::fixture::{fixture_report, partial_report};
use report::{FIGURE_STEMS, Part, ReportError, SECTIONS, StudyReport, StudySettings, write_report};

/// The fixture is a few seconds of LASSO and bootstrap; build it once per test binary.
fn full() -> &'static StudyReport {
    static R: OnceLock<StudyReport> = OnceLock::new();
    R.get_or_init(fixture_report)
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const CSVS: [&str; 11] = [
    "roc_ml.csv",
    "roc_clinical.csv",
    "calibration.csv",
    "decision_curve.csv",
    "km_predicted.csv",
    "km_observed.csv",
    "lasso_path.csv",
    "lasso_cv.csv",
    "selection_frequency.csv",
    "table1.csv",
    "sites.csv",
];

#[test]
fn full_report_writes_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let w = write_report(full(), &out).unwrap();
    assert!(w.not_rendered.is_empty(), "{:?}", w.not_rendered);
    for f in CSVS.iter().chain(&["metrics.json", "report.html"]) {
        assert!(out.join(f).is_file(), "{f} missing");
        assert!(w.files.iter().any(|x| x == f), "{f} not listed");
    }
    for s in FIGURE_STEMS {
        for ext in ["svg", "png"] {
            let f = format!("figures/{s}.{ext}");
            assert!(out.join(&f).is_file(), "{f} missing");
        }
    }
    assert_eq!(w.files.len(), CSVS.len() + 2 + 2 * FIGURE_STEMS.len());
    // Nothing else was left beside the output (no staging directory).
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("report")]);
}

#[test]
fn metrics_json_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    write_report(full(), tmp.path().join("r").as_path()).unwrap();
    let back: StudyReport = serde_json::from_str(&read(&tmp.path().join("r"), "metrics.json"))
        .expect("metrics.json parses back into StudyReport");
    assert_eq!(&back, full());
}

#[test]
fn html_has_every_section_and_figure_and_no_url() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    write_report(full(), &out).unwrap();
    let html = read(&out, "report.html");
    for (id, title) in SECTIONS {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
        assert!(html.contains(title), "heading {title}");
        assert!(html.contains(&format!("href=\"#{id}\"")), "toc entry {id}");
    }
    for s in FIGURE_STEMS {
        let start = html
            .find(&format!("<figure id=\"fig-{s}\">"))
            .unwrap_or_else(|| panic!("figure {s} missing"));
        let fig = &html[start..start + html[start..].find("</figure>").unwrap()];
        assert!(
            fig.contains("<svg") && fig.contains("</svg>"),
            "{s} inline svg"
        );
        assert!(fig.contains("<path") || fig.contains("<polyline") || fig.contains("<rect"));
    }
    assert!(
        !html.contains("not shown:"),
        "a part of the full report is missing"
    );
    // Self-contained: no URL at all, no external resource mechanism.
    let lower = html.to_lowercase();
    for bad in [
        "http://", "https://", "//cdn", "<script", "<link", "<img", "<iframe", "@import", "url(",
        " src=",
    ] {
        assert!(!lower.contains(bad), "report.html contains {bad:?}");
    }
    for (i, _) in lower.match_indices("href=\"") {
        assert!(
            lower[i + 6..].starts_with('#'),
            "non-anchor link: {}",
            &lower[i..i + 40]
        );
    }
    // The key numbers are on the page as computed.
    let m = full().metrics.get().unwrap();
    let auc = m.models[0].auc.value.unwrap();
    assert!(html.contains(&format!("{auc:.3}")));
    let p = m.comparisons[0].delong.p_value;
    assert!(html.contains("Paired comparison") && p.is_finite());
}

#[test]
fn pngs_decode_at_the_declared_size_and_are_not_blank() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    write_report(full(), &out).unwrap();
    for s in FIGURE_STEMS {
        let svg = read(&out, &format!("figures/{s}.svg"));
        let attr = |name: &str| -> u32 {
            let k = svg.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            svg[k..k + svg[k..].find('"').unwrap()].parse().unwrap()
        };
        let (w, h) = (attr("width"), attr("height"));
        let file = std::fs::File::open(out.join(format!("figures/{s}.png"))).unwrap();
        let mut reader = png::Decoder::new(file).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (w, h), "{s}: PNG vs SVG size");
        assert!(w >= 600 && h >= 400, "{s}: {w}×{h}");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let px = &buf[..info.buffer_size()];
        let non_white = px.chunks(3).filter(|c| c != &[255, 255, 255]).count();
        let frac = non_white as f64 / (w * h) as f64;
        assert!(frac > 0.01 && frac < 0.6, "{s}: {frac:.3} of pixels drawn");
        // Several distinct colours: text, axes and the series are there.
        let mut colours: Vec<&[u8]> = px.chunks(3).collect();
        colours.sort_unstable();
        colours.dedup();
        assert!(colours.len() > 20, "{s}: {} colours", colours.len());
    }
}

#[test]
fn csvs_hold_the_report_curves() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    write_report(full(), &out).unwrap();
    let rows = |f: &str| -> Vec<csv::StringRecord> {
        csv::Reader::from_path(out.join(f))
            .unwrap()
            .records()
            .map(Result::unwrap)
            .collect()
    };
    let m = full().metrics.get().unwrap();
    let roc = rows("roc_ml.csv");
    assert_eq!(roc.len(), m.models[0].roc.len());
    assert_eq!(&roc[0][0], "", "the +∞ start has no threshold");
    for (r, p) in roc.iter().zip(&m.models[0].roc) {
        assert_eq!(r[1].parse::<f64>().unwrap(), p.fpr);
        assert_eq!(r[2].parse::<f64>().unwrap(), p.tpr);
    }
    assert_eq!(rows("roc_clinical.csv").len(), m.models[1].roc.len());
    assert_eq!(
        rows("decision_curve.csv").len(),
        m.models
            .iter()
            .map(|x| x.decision_curve.len())
            .sum::<usize>()
    );
    assert_eq!(
        rows("calibration.csv").len(),
        m.models.iter().map(|x| x.calibration.len()).sum::<usize>()
    );
    let surv = full().survival.predicted.get().unwrap();
    let km = rows("km_predicted.csv");
    assert_eq!(
        km.len(),
        surv.curves.iter().map(|c| c.steps.len()).sum::<usize>()
    );
    let l = full().lasso.get().unwrap();
    let cv = rows("lasso_cv.csv");
    assert_eq!(cv.len(), l.result.cv.lambdas.len());
    assert_eq!(cv.iter().filter(|r| &r[8] == "true").count(), 1);
    assert_eq!(
        cv.iter().position(|r| &r[8] == "true"),
        Some(l.result.cv.index_min)
    );
    let path = rows("lasso_path.csv");
    assert_eq!(
        path.len(),
        l.result.cv.path.lambdas.len() * (l.feature_names.len() + 1)
    );
    let sel = rows("selection_frequency.csv");
    assert_eq!(sel.len(), l.feature_names.len());
    let b = l.result.bootstrap.as_ref().unwrap();
    assert_eq!(&sel[0][1], l.feature_names[b.ranking[0]].as_str());
    let sites = rows("sites.csv");
    assert_eq!(sites.len(), 7);
    let t1 = read(&out, "table1.csv");
    assert_eq!(t1, full().table1.get().unwrap().to_csv());
}

#[test]
fn partial_report_renders_with_the_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let r = partial_report();
    let w = write_report(&r, &out).unwrap();
    let html = read(&out, "report.html");
    // The reason the stats crate gave for the missing log-rank test is on the page.
    let Part::Unavailable { reason } = &r.survival.predicted else {
        panic!("fixture");
    };
    assert!(reason.contains("log-rank"), "{reason}");
    assert!(html.contains(&report_escape(reason)), "reason not shown");
    assert!(html.contains("not part of this study"));
    for (id, _) in SECTIONS {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
    }
    for f in [
        "km_predicted.csv",
        "km_observed.csv",
        "figures/km_predicted.svg",
        "figures/km_observed.png",
        "lasso_path.csv",
        "figures/lasso_path.png",
    ] {
        assert!(!out.join(f).exists(), "{f} written for a missing part");
    }
    for f in ["roc_ml.csv", "figures/roc.png", "table1.csv", "report.html"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let parts: Vec<&str> = w.not_rendered.iter().map(|n| n.part.as_str()).collect();
    assert!(parts.contains(&"survival by predicted group"), "{parts:?}");
    assert!(parts.contains(&"LASSO feature selection"), "{parts:?}");
    let back: StudyReport =
        serde_json::from_str(&read(&out, "metrics.json")).expect("partial round-trips");
    assert_eq!(back, r);
}

fn report_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[test]
fn empty_report_renders_every_section_as_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let r = StudyReport::new(StudySettings {
        study_id: "nothing-yet".into(),
        ..Default::default()
    });
    let w = write_report(&r, &out).unwrap();
    assert_eq!(w.files, vec!["metrics.json", "report.html"]);
    let html = read(&out, "report.html");
    assert!(html.contains("<h1>nothing-yet</h1>"));
    // Every data section says why it is empty.
    assert!(html.matches("not shown:").count() >= 8);
}

#[test]
fn rerun_replaces_the_old_report_and_keeps_foreign_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    write_report(full(), &out).unwrap();
    std::fs::write(out.join("study.json"), "{}").unwrap();
    write_report(&partial_report(), &out).unwrap();
    assert!(
        !out.join("km_predicted.csv").exists(),
        "stale survival CSV kept"
    );
    assert!(
        !out.join("figures/km_observed.svg").exists(),
        "stale figure kept"
    );
    assert!(!out.join("lasso_cv.csv").exists());
    assert!(
        out.join("study.json").is_file(),
        "a file the report did not write was removed"
    );
    assert!(read(&out, "report.html").contains("not part of this study"));
    let leftovers = std::fs::read_dir(tmp.path()).unwrap().count();
    assert_eq!(leftovers, 1, "staging directory left behind");
}

#[test]
fn failures_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    // Inconsistent input: fewer feature names than coefficients.
    let mut bad = full().clone();
    if let Part::Available(l) = &mut bad.lasso {
        l.feature_names.pop();
    }
    let out = tmp.path().join("bad");
    match write_report(&bad, &out) {
        Err(ReportError::Inconsistent(msg)) => assert!(msg.contains("feature names"), "{msg}"),
        other => panic!("expected Inconsistent, got {other:?}"),
    }
    assert!(!out.exists());
    // The output path is a file.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        write_report(full(), &file),
        Err(ReportError::OutDir { .. })
    ));
    // The parent is a file, so nothing can be created.
    let under = file.join("report");
    let err = write_report(full(), &under).unwrap_err();
    assert!(matches!(err, ReportError::Io { .. }), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn degenerate_metrics_render_as_undefined_without_a_crash() {
    // All scores equal: the stats crate still evaluates (AUC 0.5, Youden cut-off at the single
    // score, PPV of a "treat everybody" rule), and the paired test has SE 0 (p undefined).
    use stats::metrics::{self, MetricOptions, RankedCells, paired_cells_from_patients};
    use stats::report::{ComparisonReport, MetricsSource, ModelReport, Report};
    let p = vec![0.3; 40];
    let y: Vec<bool> = (0..40).map(|i| i % 3 == 0).collect();
    let rc = RankedCells::from_patients(&p, &y).unwrap();
    let m = metrics::evaluate(&rc, &MetricOptions::default()).unwrap();
    let cells = paired_cells_from_patients(&p, &p, &y).unwrap();
    let paired = metrics::paired_delong(&cells, 0.95).unwrap();
    let mut rep = Report::new(MetricsSource::Exact);
    rep.models.push(ModelReport::new("constant", &m, None));
    rep.models.push(ModelReport::new("constant too", &m, None));
    rep.comparisons.push(ComparisonReport {
        model_a: "constant".into(),
        model_b: "constant too".into(),
        delong: paired,
        source: "exact".into(),
    });
    let mut r = StudyReport::new(StudySettings {
        study_id: "degenerate".into(),
        ..Default::default()
    });
    r.metrics = Part::Available(rep);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    write_report(&r, &out).unwrap();
    let html = read(&out, "report.html");
    assert!(html.contains("undefined"), "undefined values must say so");
    for raw in ["NaN", ">inf", " inf", "-inf"] {
        assert!(!html.contains(raw), "a raw non-finite number leaked: {raw}");
    }
    // metrics.json stays valid JSON: serde_json writes the undefined p as null. (Reading it back
    // into StudyReport fails on that null, because stats' PairedDelong.p_value is a plain f64;
    // the fix belongs in the stats types, see report/README.md.)
    let v: serde_json::Value = serde_json::from_str(&read(&out, "metrics.json")).unwrap();
    let p_json = &v["metrics"]["available"]["comparisons"][0]["delong"]["p_value"];
    assert!(p_json.is_null(), "{p_json}");
    // One class only: the metric set cannot be computed at all; the reason is the stats error.
    let one = RankedCells::from_patients(&[0.2, 0.4], &[true, true]).unwrap();
    let err = metrics::evaluate(&one, &MetricOptions::default()).unwrap_err();
    r.metrics = Part::from_result(Err::<Report, _>(err.clone()));
    write_report(&r, &out).unwrap();
    assert!(read(&out, "report.html").contains(&report_escape(&err.to_string())));
}
