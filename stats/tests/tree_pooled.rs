//! Pooled-reference tests of the federated tree: Mann-Whitney and quartiles read off the common
//! cells of 7 simulated sites equal the centralised computation on the raw values.

mod common;

use common::{close, run_common_cells, run_federated, sorted};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stats::tree::{mann_whitney_from_cells, quantile_from_cells};
use stats::{mann_whitney_pooled, quantile_type7};

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Integer ages.
    Age,
    /// One-decimal Ki-67 (%), skewed.
    Ki67,
    /// Continuous, no ties.
    Continuous,
    /// Few distinct values, far from zero.
    FewLevels,
}

fn draw(rng: &mut ChaCha8Rng, kind: Kind, group: usize) -> f64 {
    let shift = group as f64;
    match kind {
        Kind::Age => (rng.gen_range(35.0..85.0f64) + 3.0 * shift).round(),
        Kind::Ki67 => {
            let u: f64 = rng.gen_range(0.0..1.0);
            ((-u.ln() * (8.0 + 4.0 * shift)).min(90.0) * 10.0).round() / 10.0
        }
        Kind::Continuous => rng.gen_range(-3.0..3.0) + 0.5 * shift,
        Kind::FewLevels => 1000.0 + rng.gen_range(0..5) as f64 * 0.25 + shift * 0.25,
    }
}

fn simulate(
    rng: &mut ChaCha8Rng,
    kind: Kind,
    min_per_cell: usize,
    max_per_cell: usize,
) -> Vec<Vec<Vec<f64>>> {
    (0..7)
        .map(|_| {
            (0..2)
                .map(|g| {
                    let n = rng.gen_range(min_per_cell..=max_per_cell);
                    (0..n).map(|_| draw(rng, kind, g)).collect()
                })
                .collect()
        })
        .collect()
}

fn flatten(sites: &[Vec<Vec<f64>>], groups: &[usize]) -> Vec<f64> {
    sorted(
        &sites
            .iter()
            .flat_map(|s| groups.iter().flat_map(move |&g| s[g].iter().copied()))
            .collect::<Vec<_>>(),
    )
}

fn check_quartiles_within(
    sites: &[Vec<Vec<f64>>],
    run: &common::FederatedRun,
    target: Option<f64>,
) -> f64 {
    let mut widest: f64 = 0.0;
    for groups in [&[0usize][..], &[1], &[0, 1]] {
        let all = flatten(sites, groups);
        for p in [0.25, 0.5, 0.75] {
            let exact = quantile_type7(&all, p).unwrap();
            let slack = 1e-12 * exact.abs().max(1.0);
            // Per-site protocol: a bracket.
            let b = run.state.quantile(groups, p).unwrap();
            assert!(
                b.lower - slack <= exact && exact <= b.upper + slack,
                "groups {groups:?} p {p}: {exact} outside [{}, {}]",
                b.lower,
                b.upper
            );
            widest = widest.max(b.resolution());
            if let Some(t) = target {
                assert!(b.resolution() <= t, "bracket {} > {t}", b.resolution());
            }
        }
    }
    widest
}

#[test]
fn min_count_one_equals_pooled() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let kinds = [Kind::Age, Kind::Ki67, Kind::Continuous, Kind::FewLevels];
    let mut max_rounds = 0;
    for trial in 0..24 {
        let kind = kinds[trial % kinds.len()];
        let sites = simulate(&mut rng, kind, 0, 30);
        let (a, b) = (flatten(&sites, &[0]), flatten(&sites, &[1]));
        if a.is_empty() || b.is_empty() {
            continue;
        }
        let pooled = mann_whitney_pooled(&a, &b).unwrap();

        // Per-site protocol (what the aggregator runs).
        let run = run_federated(&sites, 2, 1, 4, 1e-9).unwrap();
        let target = 1e-9 * run.root.width();
        max_rounds = max_rounds.max(run.rounds);
        assert_eq!(run.blocked, 0);
        let fed = run.state.mann_whitney(0, 1).unwrap();
        assert_eq!(fed.test.w, pooled.w, "{kind:?} trial {trial}");
        assert_eq!((fed.w_min, fed.w_max), (pooled.w, pooled.w));
        assert!(close(fed.test.z, pooled.z, 1e-12), "{kind:?}: z");
        assert!(
            (fed.test.p_value - pooled.p_value).abs() <= 1e-12,
            "{kind:?}: p"
        );
        assert!(fed.resolution <= target);
        check_quartiles_within(&sites, &run, Some(target));

        // Common-cell protocol (the simpler functions) gives the same.
        let cc = run_common_cells(&sites, 2, 1, 4, 1e-9).unwrap();
        let cells = cc.cells();
        let mw = mann_whitney_from_cells(&cc.root, &cells, 0, 1).unwrap();
        assert_eq!(mw.test.w, pooled.w);
        assert!((mw.test.p_value - pooled.p_value).abs() <= 1e-12);
        assert!(mw.resolution <= target);
        for groups in [&[0usize][..], &[1], &[0, 1]] {
            let all = flatten(&sites, groups);
            for p in [0.25, 0.5, 0.75] {
                let exact = quantile_type7(&all, p).unwrap();
                let e = quantile_from_cells(&cc.root, &cells, groups, p).unwrap();
                assert!(e.resolution <= target);
                assert!((e.value - exact).abs() <= e.resolution + 1e-12 * exact.abs().max(1.0));
            }
        }
    }
    // 4 levels per round from a root ~2·sqrt(n) SDs wide down to 1e-9 of it: about 8 rounds.
    assert!(max_rounds <= 10, "took {max_rounds} rounds");
}

#[test]
fn min_count_five_terminates_with_honest_coarser_bounds() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let trials = 16;
    let mut coarser = 0;
    for trial in 0..trials {
        let kind = [Kind::Age, Kind::Ki67, Kind::Continuous, Kind::FewLevels][trial % 4];
        // Every (site, group) holds >= 5 values, so every site can take part.
        let sites = simulate(&mut rng, kind, 5, 20);
        let (a, b) = (flatten(&sites, &[0]), flatten(&sites, &[1]));
        let pooled = mann_whitney_pooled(&a, &b).unwrap();
        let run = run_federated(&sites, 2, 5, 4, 1e-9).unwrap();
        let target = 1e-9 * run.root.width();
        assert!(run.rounds < 60);
        // Every released count is >= 5.
        for m in run.state.masses() {
            assert!(m.count >= 5);
        }
        let fed = run.state.mann_whitney(0, 1).unwrap();
        assert!(
            fed.w_min <= pooled.w && pooled.w <= fed.w_max,
            "{kind:?}: W {} outside [{}, {}]",
            pooled.w,
            fed.w_min,
            fed.w_max
        );
        assert!(fed.p_min <= fed.test.p_value && fed.test.p_value <= fed.p_max);
        let widest_q = check_quartiles_within(&sites, &run, None);
        if fed.resolution > target || widest_q > target {
            coarser += 1;
        }
        // The common-cell protocol is never finer than the per-site one.
        let cc = run_common_cells(&sites, 2, 5, 4, 1e-9).unwrap();
        let cc_cells = cc.cells();
        let med_cc = quantile_from_cells(&cc.root, &cc_cells, &[0, 1], 0.5).unwrap();
        let med = run.state.quantile(&[0, 1], 0.5).unwrap();
        println!(
            "{kind:?}: {} rounds, {} blocked; W {} in [{}, {}] (pooled {}), p {:.4} in [{:.4}, \
             {:.4}] (pooled {:.4}); median bracket {:.3e} vs common-cell {:.3e} (root {:.3e})",
            run.rounds,
            run.blocked,
            fed.test.w,
            fed.w_min,
            fed.w_max,
            pooled.w,
            fed.test.p_value,
            fed.p_min,
            fed.p_max,
            pooled.p_value,
            med.resolution(),
            med_cc.resolution,
            run.root.width()
        );
    }
    assert!(coarser > 0, "min_count 5 should coarsen some result");
}
