//! Checks Kaplan-Meier, log-rank and Cox against lifelines and statsmodels golden values
//! (tests/golden/metrics_golden.json, made by `python3 stats/tests/golden/gen_metrics.py`), per
//! patient and through the federated survival tables of 7 simulated sites.

mod common;

use common::{assert_close as close, floats, num};
use serde_json::Value;
use stats::metrics::MergeRule;
use stats::survival::{
    self, CoxTies, GroupTable, KmCi, NewtonOptions, SiteSurvivalTable, TimeResolution,
    TwoGroupTable,
};

const GOLDEN: &str = include_str!("golden/metrics_golden.json");

struct Case {
    name: String,
    t: Vec<f64>,
    e: Vec<bool>,
    group: Vec<usize>,
    site: Vec<usize>,
    age: Vec<f64>,
    doc: Value,
}

fn cases() -> Vec<Case> {
    let doc: Value = serde_json::from_str(GOLDEN).unwrap();
    doc["survival"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ints = |k: &str| -> Vec<usize> {
                c["data"][k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect()
            };
            Case {
                name: c["name"].as_str().unwrap().into(),
                t: floats(&c["data"]["T"]),
                e: ints("E").into_iter().map(|x| x == 1).collect(),
                group: ints("group"),
                site: ints("site"),
                age: floats(&c["data"]["age"]),
                doc: c.clone(),
            }
        })
        .collect()
}

fn group_data(c: &Case, g: usize) -> (Vec<f64>, Vec<bool>) {
    let idx: Vec<usize> = (0..c.t.len()).filter(|&i| c.group[i] == g).collect();
    (
        idx.iter().map(|&i| c.t[i]).collect(),
        idx.iter().map(|&i| c.e[i]).collect(),
    )
}

fn check_km(label: &str, km: &survival::KaplanMeier, g: &Value) {
    // lifelines' timeline starts with t = 0 (S = 1); our curve has one point per observed time.
    let times = floats(&g["times"]);
    let off = if times[0] == 0.0 { 1 } else { 0 };
    assert_eq!(km.points.len() + off, times.len(), "{label} timeline");
    let (s, lo, hi) = (
        floats(&g["survival"]),
        floats(&g["ci_lower"]),
        floats(&g["ci_upper"]),
    );
    for (i, p) in km.points.iter().enumerate() {
        close(&format!("{label} t[{i}]"), p.time, times[i + off], 0.0);
        close(&format!("{label} S[{i}]"), p.survival, s[i + off], 1e-10);
        close(&format!("{label} lo[{i}]"), p.ci_lower, lo[i + off], 1e-10);
        close(&format!("{label} hi[{i}]"), p.ci_upper, hi[i + off], 1e-10);
    }
    assert_eq!(km.median, g["median"].as_f64(), "{label} median");
    assert_eq!(
        km.median_ci_lower,
        g["median_ci_lower"].as_f64(),
        "{label} median lo"
    );
    assert_eq!(
        km.median_ci_upper,
        g["median_ci_upper"].as_f64(),
        "{label} median hi"
    );
}

#[test]
fn kaplan_meier_matches_lifelines_exact_and_federated() {
    for c in cases() {
        for g in 0..2 {
            let (t, e) = group_data(&c, g);
            let exact = GroupTable::from_patients(&t, &e).unwrap();
            let km = survival::kaplan_meier(&exact, KmCi::LogLog, 0.95).unwrap();
            check_km(&format!("{} g{g} exact", c.name), &km, &c.doc["km"][g]);
        }
        // Federated: 7 sites release exact times (min_count 1), the aggregator pools.
        let sites = site_tables(&c, &TimeResolution::Exact, 1, MergeRule::CellTotal);
        let pooled = survival::pool_survival(&sites).unwrap();
        for g in 0..2 {
            let km = survival::kaplan_meier(&pooled[g], KmCi::LogLog, 0.95).unwrap();
            check_km(&format!("{} g{g} federated", c.name), &km, &c.doc["km"][g]);
        }
    }
}

/// R's default `conf.type = "log"` band, checked against its formula written out.
#[test]
fn log_band_is_r_survfit_default() {
    let c = &cases()[0];
    let (t, e) = group_data(c, 0);
    let tab = GroupTable::from_patients(&t, &e).unwrap();
    let km = survival::kaplan_meier(&tab, KmCi::Log, 0.95).unwrap();
    let z = 1.959963984540054;
    let mut gw = 0.0;
    for (r, p) in tab.rows.iter().zip(&km.points) {
        if r.events > 0 && r.at_risk > r.events {
            gw += r.events as f64 / (r.at_risk as f64 * (r.at_risk - r.events) as f64);
        }
        if p.survival > 0.0 {
            close(
                "log lo",
                p.ci_lower,
                p.survival * (-z * f64::sqrt(gw)).exp(),
                1e-12,
            );
            close(
                "log hi",
                p.ci_upper,
                (p.survival * (z * f64::sqrt(gw)).exp()).min(1.0),
                1e-12,
            );
        }
    }
    // The log band is narrower at the bottom than log-log, so the median CI can differ.
    assert!(km.median.is_some());
}

fn site_tables(
    c: &Case,
    res: &TimeResolution,
    min_count: u64,
    rule: MergeRule,
) -> Vec<SiteSurvivalTable> {
    (0..7)
        .map(|s| {
            let idx: Vec<usize> = (0..c.t.len()).filter(|&i| c.site[i] == s).collect();
            let t: Vec<f64> = idx.iter().map(|&i| c.t[i]).collect();
            let e: Vec<bool> = idx.iter().map(|&i| c.e[i]).collect();
            let g: Vec<usize> = idx.iter().map(|&i| c.group[i]).collect();
            let tab = SiteSurvivalTable::build(&t, &e, &g, 2, res, min_count, rule).unwrap();
            tab.validate(min_count, rule).unwrap();
            tab
        })
        .collect()
}

#[test]
fn log_rank_matches_lifelines() {
    for c in cases() {
        let sites = site_tables(&c, &TimeResolution::Exact, 1, MergeRule::CellTotal);
        let pooled = survival::pool_survival(&sites).unwrap();
        let two = TwoGroupTable::align(&pooled[0], &pooled[1]);
        let lr = survival::log_rank(&two).unwrap();
        close(
            "logrank chi2",
            lr.statistic,
            num(&c.doc["logrank"]["statistic"]),
            1e-10,
        );
        close(
            "logrank p",
            lr.p_value,
            num(&c.doc["logrank"]["p_value"]),
            1e-10,
        );
    }
}

fn check_cox(label: &str, fit: &survival::CoxFit, g: &Value, with_ci: bool) {
    let beta = floats(&g["beta"]);
    let se = floats(&g["se"]);
    let p = floats(&g["p_value"]);
    assert_eq!(fit.coefficients.len(), beta.len());
    for (j, c) in fit.coefficients.iter().enumerate() {
        close(&format!("{label} beta[{j}]"), c.beta, beta[j], 1e-8);
        close(&format!("{label} se[{j}]"), c.se, se[j], 1e-8);
        close(&format!("{label} p[{j}]"), c.p_value, p[j], 1e-8);
        if with_ci {
            close(
                &format!("{label} hr lo"),
                c.hr_ci_lower,
                num(&g["hr_ci_lower"][j]),
                1e-8,
            );
            close(
                &format!("{label} hr hi"),
                c.hr_ci_upper,
                num(&g["hr_ci_upper"][j]),
                1e-8,
            );
        }
    }
    close(
        &format!("{label} loglik"),
        fit.loglik,
        num(&g["loglik"]),
        1e-8,
    );
}

#[test]
fn pooled_cox_from_count_tables_matches_lifelines_and_statsmodels() {
    let opts = NewtonOptions::default();
    for c in cases() {
        let sites = site_tables(&c, &TimeResolution::Exact, 1, MergeRule::CellTotal);
        let pooled = survival::pool_survival(&sites).unwrap();
        let two = TwoGroupTable::align(&pooled[0], &pooled[1]);
        let efron = survival::fit_cox_binary_pooled(&two, CoxTies::Efron, &opts).unwrap();
        let breslow = survival::fit_cox_binary_pooled(&two, CoxTies::Breslow, &opts).unwrap();
        check_cox(
            &format!("{} lifelines", c.name),
            &efron,
            &c.doc["cox_lifelines"],
            true,
        );
        check_cox(
            &format!("{} sm efron", c.name),
            &efron,
            &c.doc["cox_statsmodels_efron"],
            false,
        );
        check_cox(
            &format!("{} sm breslow", c.name),
            &breslow,
            &c.doc["cox_statsmodels_breslow"],
            false,
        );
        // The per-patient Cox (one stratum) agrees with the count-table one.
        let x: Vec<Vec<f64>> = c.group.iter().map(|&g| vec![g as f64]).collect();
        let pp =
            survival::fit_cox_patients(&c.t, &c.e, &x, &vec![0; c.t.len()], CoxTies::Efron, &opts)
                .unwrap();
        close(
            "per-patient beta",
            pp.coefficients[0].beta,
            efron.coefficients[0].beta,
            1e-10,
        );
        println!(
            "{}: HR {:.4} ({:.4}-{:.4}) p {:.3e}, {} Newton iterations",
            c.name,
            efron.coefficients[0].hazard_ratio,
            efron.coefficients[0].hr_ci_lower,
            efron.coefficients[0].hr_ci_upper,
            efron.coefficients[0].p_value,
            efron.iterations
        );
    }
}

#[test]
fn site_stratified_cox_by_distributed_newton_matches_lifelines_and_statsmodels() {
    let opts = NewtonOptions::default();
    for c in cases() {
        // (1) binary group from each site's own count table.
        let sites = site_tables(&c, &TimeResolution::Exact, 1, MergeRule::CellTotal);
        let per_site: Vec<TwoGroupTable> = sites
            .iter()
            .map(|s| {
                let g: Vec<GroupTable> = s.groups.iter().map(GroupTable::from_cells).collect();
                TwoGroupTable::align(&g[0], &g[1])
            })
            .collect();
        for (ties, key) in [
            (CoxTies::Efron, "cox_statsmodels_efron_strata"),
            (CoxTies::Breslow, "cox_statsmodels_breslow_strata"),
        ] {
            let fit = survival::fit_cox_binary_stratified(&per_site, ties, &opts).unwrap();
            check_cox(&format!("{} {key}", c.name), &fit, &c.doc[key], false);
            if ties == CoxTies::Efron {
                check_cox(
                    "lifelines strata",
                    &fit,
                    &c.doc["cox_lifelines_strata"],
                    true,
                );
            }
        }
        // (2) two covariates (group, age): each site returns ℓ, U, I of its own rows per round.
        let rows: Vec<Vec<usize>> = (0..7)
            .map(|s| (0..c.t.len()).filter(|&i| c.site[i] == s).collect())
            .collect();
        let mut rounds = 0;
        let fit = survival::fit_cox_newton(2, CoxTies::Efron, &opts, |beta| {
            rounds += 1;
            let mut sum = survival::CoxContribution::zero(2);
            for idx in &rows {
                let t: Vec<f64> = idx.iter().map(|&i| c.t[i]).collect();
                let e: Vec<bool> = idx.iter().map(|&i| c.e[i]).collect();
                let x: Vec<Vec<f64>> = idx
                    .iter()
                    .map(|&i| vec![c.group[i] as f64, c.age[i]])
                    .collect();
                sum.add(&survival::cox_site_contribution(
                    &t,
                    &e,
                    &x,
                    beta,
                    CoxTies::Efron,
                )?);
            }
            Ok(sum)
        })
        .unwrap();
        check_cox(
            "lifelines strata 2cov",
            &fit,
            &c.doc["cox_lifelines_strata_2cov"],
            true,
        );
        check_cox(
            "statsmodels strata 2cov",
            &fit,
            &c.doc["cox_statsmodels_efron_strata_2cov"],
            false,
        );
        println!(
            "{}: 2-covariate stratified Cox in {rounds} round trips",
            c.name
        );
    }
}

/// Coarsened release on a monthly grid: no released count in 1..min_count−1, totals kept, and
/// the count-table Cox equals the per-patient Cox of the coarsened times (exact for the data it
/// describes); the HR shift from coarsening is printed.
#[test]
fn coarsened_times_are_disclosure_safe_and_exact_for_the_coarsened_data() {
    let opts = NewtonOptions::default();
    for c in cases() {
        let tmax = c.t.iter().cloned().fold(0.0, f64::max);
        let grid: Vec<f64> = (1..=(tmax.ceil() as usize + 1)).map(|k| k as f64).collect();
        for (min_count, rule) in [
            (3u64, MergeRule::CellTotal),
            (5, MergeRule::CellTotal),
            (3, MergeRule::EachCount),
        ] {
            let res = TimeResolution::Grid(grid.clone());
            // Sites that cannot release a group sit out entirely.
            let mut sites = Vec::new();
            let mut kept: Vec<usize> = Vec::new();
            for s in 0..7 {
                let idx: Vec<usize> = (0..c.t.len()).filter(|&i| c.site[i] == s).collect();
                let t: Vec<f64> = idx.iter().map(|&i| c.t[i]).collect();
                let e: Vec<bool> = idx.iter().map(|&i| c.e[i]).collect();
                let g: Vec<usize> = idx.iter().map(|&i| c.group[i]).collect();
                if let Ok(tab) = SiteSurvivalTable::build(&t, &e, &g, 2, &res, min_count, rule) {
                    tab.validate(min_count, rule).unwrap();
                    sites.push((s, tab));
                    kept.extend(idx);
                }
            }
            for (_, s) in &sites {
                for cells in &s.groups {
                    for cell in cells {
                        let n = cell.events + cell.censored;
                        assert!(n >= min_count, "released cell of {n}");
                        if rule == MergeRule::EachCount {
                            for k in [cell.events, cell.censored] {
                                assert!(k == 0 || k >= min_count);
                            }
                        }
                        assert!(grid.contains(&cell.time), "released time is a grid point");
                    }
                }
            }
            let tables: Vec<SiteSurvivalTable> = sites.iter().map(|s| s.1.clone()).collect();
            let pooled = survival::pool_survival(&tables).unwrap();
            let n: u64 = pooled.iter().map(|g| g.n()).sum();
            assert_eq!(n as usize, kept.len());
            let ev: u64 = pooled.iter().flat_map(|g| &g.rows).map(|r| r.events).sum();
            assert_eq!(ev as usize, kept.iter().filter(|&&i| c.e[i]).count());
            // Per-patient released times: runs are contiguous in grid order per type, so the
            // released counts, in time order, assign the site's sorted patients to runs.
            let mut rt = vec![f64::NAN; c.t.len()];
            for (s, st) in &sites {
                for g in 0..2 {
                    for is_event in [true, false] {
                        let mut pts: Vec<usize> = (0..c.t.len())
                            .filter(|&i| c.site[i] == *s && c.group[i] == g && c.e[i] == is_event)
                            .collect();
                        pts.sort_by(|&a, &b| c.t[a].total_cmp(&c.t[b]));
                        let mut it = pts.into_iter();
                        for cell in &st.groups[g] {
                            let k = if is_event { cell.events } else { cell.censored };
                            for _ in 0..k {
                                rt[it.next().unwrap()] = cell.time;
                            }
                        }
                        assert!(it.next().is_none());
                    }
                }
            }
            let x: Vec<Vec<f64>> = kept.iter().map(|&i| vec![c.group[i] as f64]).collect();
            let rtk: Vec<f64> = kept.iter().map(|&i| rt[i]).collect();
            let ek: Vec<bool> = kept.iter().map(|&i| c.e[i]).collect();
            let two = TwoGroupTable::align(&pooled[0], &pooled[1]);
            let fit = survival::fit_cox_binary_pooled(&two, CoxTies::Efron, &opts).unwrap();
            let pp = survival::fit_cox_patients(
                &rtk,
                &ek,
                &x,
                &vec![0; rtk.len()],
                CoxTies::Efron,
                &opts,
            )
            .unwrap();
            close(
                "coarse count Cox = per-patient Cox of coarse times",
                fit.coefficients[0].beta,
                pp.coefficients[0].beta,
                1e-10,
            );
            let km0 = survival::kaplan_meier(&pooled[0], KmCi::LogLog, 0.95).unwrap();
            println!(
                "{} grid 1, min_count {min_count} {rule:?}: {} sites; HR {:.4} (exact {:.4}); median g0 {:?} (exact {:?}); {} released times g0",
                c.name,
                sites.len(),
                fit.coefficients[0].hazard_ratio,
                num(&c.doc["cox_lifelines"]["beta"][0]).exp(),
                km0.median,
                c.doc["km"][0]["median"].as_f64(),
                pooled[0].rows.len()
            );
        }
    }
}

#[test]
fn exact_times_refuse_disclosive_release() {
    let t = [1.0, 2.0, 2.0, 3.0];
    let e = [true, true, true, false];
    let g = [0, 0, 0, 0];
    let err = SiteSurvivalTable::build(
        &t,
        &e,
        &g,
        1,
        &TimeResolution::Exact,
        2,
        MergeRule::CellTotal,
    );
    assert!(matches!(
        err,
        Err(stats::metrics::MetricsError::ExactTimesDisclosive { count: 1, .. })
    ));
    let beyond = SiteSurvivalTable::build(
        &t,
        &e,
        &g,
        1,
        &TimeResolution::Grid(vec![1.0, 2.0]),
        1,
        MergeRule::CellTotal,
    );
    assert!(matches!(
        beyond,
        Err(stats::metrics::MetricsError::BeyondGrid { .. })
    ));
}
