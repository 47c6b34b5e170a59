//! Times the pipeline study in process (no network) on a pooled CSV, stage by stage:
//! `cargo run --release -p federation --example pipeline_timing -- STUDY.toml TABLE.csv REPEATS`.
//!
//! Prints, per stage, the round trips and the site and aggregator time. Times are this thread's
//! CPU seconds (Linux `/proc/thread-self/schedstat`, nanoseconds on the CPU), not wall time: the
//! machine is shared, and CPU time is what stays comparable when other jobs run. The wall time
//! of the whole run is printed beside the total CPU time. Everything runs on this one thread
//! (the crates are single-threaded by design), so the stage times add up to the total.

use federation::SiteId;
use federation::engine::StudyState;
use federation::policy::SitePolicy;
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::{AnalysisSpec, StudySpec};
use federation::table::SiteTable;
use std::collections::BTreeMap;
use std::time::Instant;

/// CPU seconds this thread has run so far; falls back to wall time where schedstat is missing
/// (non-Linux), so the example still runs and says which clock it used. The file is opened once
/// and re-read from the start (procfs regenerates it on every read): opening it per reading
/// cost a few per cent of the run.
struct Clock {
    start: Instant,
    file: Option<std::cell::RefCell<std::fs::File>>,
}

impl Clock {
    fn new() -> Self {
        let file = std::fs::File::open("/proc/thread-self/schedstat")
            .ok()
            .map(std::cell::RefCell::new);
        let mut c = Clock {
            start: Instant::now(),
            file,
        };
        if c.thread_cpu().is_none() {
            c.file = None;
        }
        c
    }

    fn cpu(&self) -> bool {
        self.file.is_some()
    }

    fn thread_cpu(&self) -> Option<f64> {
        use std::io::{Read, Seek};
        let mut f = self.file.as_ref()?.borrow_mut();
        f.rewind().ok()?;
        let mut s = String::new();
        f.read_to_string(&mut s).ok()?;
        let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
        Some(ns * 1e-9)
    }

    fn now(&self) -> f64 {
        match self.thread_cpu() {
            Some(t) => t,
            None => self.start.elapsed().as_secs_f64(),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: pipeline_timing STUDY.toml TABLE.csv REPEATS");
        std::process::exit(2);
    }
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
    // stage → (site seconds, aggregator seconds, rounds)
    let mut per_kind: BTreeMap<String, (f64, f64, u32)> = BTreeMap::new();
    let clock = Clock::new();
    let (wall0, cpu0) = (Instant::now(), clock.now());
    while !state.status.is_finished() {
        let mut site_s = 0.0;
        let mut agg_s = 0.0;
        let mut stage = String::new();
        for (site, table) in &tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            if let federation::task::TaskBody::Pipeline(p) = &task.body {
                stage = p.stage.name().to_string();
            }
            let t = clock.now();
            let res = answer_with_memory(
                &task,
                table,
                &policy,
                memories.entry(site.clone()).or_default(),
            )
            .result;
            let t1 = clock.now();
            site_s += t1 - t;
            state.accept(site, res, 0, 0).unwrap();
            agg_s += clock.now() - t1;
        }
        let e = per_kind.entry(stage).or_default();
        e.0 += site_s;
        e.1 += agg_s;
        e.2 += 1;
    }
    println!(
        "{:?} in {:.1} s wall, {:.2} s {} time",
        state.status,
        wall0.elapsed().as_secs_f64(),
        clock.now() - cpu0,
        if clock.cpu() { "CPU" } else { "wall" }
    );
    // The study's output, hashed: two builds that should compute the same thing (an
    // optimisation that claims to change no result) print the same digest.
    let json = serde_json::to_vec(&state.output).unwrap();
    {
        use sha2::Digest;
        println!("output digest {}", hex::encode(sha2::Sha256::digest(&json)));
    }
    for (k, (s, a, n)) in per_kind {
        println!("{k:>10}: rounds {n:>5}  sites {s:>8.2} s  aggregator {a:>8.2} s");
    }
}
