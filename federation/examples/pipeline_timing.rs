//! Times the pipeline study in process (no network) on a pooled CSV, stage by stage:
//! `cargo run --release -p federation --example pipeline_timing -- STUDY.toml TABLE.csv REPEATS`.

use federation::SiteId;
use federation::engine::StudyState;
use federation::policy::SitePolicy;
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::{AnalysisSpec, StudySpec};
use federation::table::SiteTable;
use std::collections::BTreeMap;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut spec = StudySpec::from_toml(&std::fs::read_to_string(&args[1]).unwrap()).unwrap();
    if let AnalysisSpec::Pipeline(p) = &mut spec.analysis {
        p.cv.repeats = args[3].parse().unwrap();
        p.cv.repeats_per_batch = p.cv.repeats_per_batch.min(p.cv.repeats);
    }
    let mut r = csv::Reader::from_path(&args[2]).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let site_col = header.iter().position(|h| h == "site").unwrap();
    let mut rows: BTreeMap<SiteId, Vec<Vec<String>>> = BTreeMap::new();
    for rec in r.records() {
        let row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        rows.entry(SiteId::new(row[site_col].clone()).unwrap())
            .or_default()
            .push(row);
    }
    let tables: BTreeMap<SiteId, SiteTable> = rows
        .into_iter()
        .map(|(s, r)| (s, SiteTable::new(header.clone(), r).unwrap()))
        .collect();
    let policy = SitePolicy {
        allow_all_studies: true,
        share_models: true,
        max_params_per_row: f64::INFINITY,
        ..SitePolicy::default()
    };
    let mut state = StudyState::new(spec, tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut per_kind: BTreeMap<String, (f64, f64, u32)> = BTreeMap::new();
    let t0 = Instant::now();
    while !state.status.is_finished() {
        let mut site_s = 0.0;
        let mut stage = String::new();
        for (site, table) in &tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            if let federation::task::TaskBody::Pipeline(p) = &task.body {
                stage = p.stage.name().to_string();
            }
            let t = Instant::now();
            let res = answer_with_memory(
                &task,
                table,
                &policy,
                memories.entry(site.clone()).or_default(),
            )
            .result;
            site_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            state.accept(site, res, 0, 0).unwrap();
            let agg = t.elapsed().as_secs_f64();
            let e = per_kind.entry(stage.clone()).or_default();
            e.1 += agg;
        }
        let e = per_kind.entry(stage).or_default();
        e.0 += site_s;
        e.2 += 1;
    }
    println!("{:?} in {:.1} s", state.status, t0.elapsed().as_secs_f64());
    for (k, (s, a, n)) in per_kind {
        println!("{k:>10}: rounds {n:>5}  sites {s:>8.2} s  aggregator {a:>8.2} s");
    }
}
