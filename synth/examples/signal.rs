//! Measures the signal a generated cohort carries: render time, simple per-lesion image features
//! and their AUCs, a cross-validated logistic model on them, the oracle AUCs of the latent traits
//! and of the clinical variables, the PFS hazard ratio, censoring, and per-site liver HU.
//!
//! `cargo run --release -p synth --example signal -- [patients] [sites] [seed] [plan]`
//! (with `plan`, only the plan-level oracles are computed, so large cohorts are quick).

use std::time::Instant;

use rayon::prelude::*;
use synth::{CohortParams, plan_cohort, render_patient};

fn auc(score: &[f64], y: &[bool]) -> f64 {
    // Mann-Whitney with mid-ranks.
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut ranks = vec![0.0; score.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        for k in i..=j {
            ranks[idx[k]] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    let n1 = y.iter().filter(|&&v| v).count() as f64;
    let n0 = y.len() as f64 - n1;
    let r1: f64 = ranks
        .iter()
        .zip(y)
        .filter(|(_, v)| **v)
        .map(|(r, _)| r)
        .sum();
    (r1 - n1 * (n1 + 1.0) / 2.0) / (n1 * n0)
}

/// Ridge logistic regression by Newton's method on standardised columns; returns a scorer.
fn fit_logistic(x: &[Vec<f64>], y: &[bool], lambda: f64) -> impl Fn(&[f64]) -> f64 {
    let p = x[0].len();
    let n = x.len() as f64;
    let mean: Vec<f64> = (0..p)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let sd: Vec<f64> = (0..p)
        .map(|j| {
            (x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n)
                .sqrt()
                .max(1e-12)
        })
        .collect();
    let z: Vec<Vec<f64>> = x
        .iter()
        .map(|r| {
            std::iter::once(1.0)
                .chain((0..p).map(|j| (r[j] - mean[j]) / sd[j]))
                .collect()
        })
        .collect();
    let q = p + 1;
    let mut beta = vec![0.0; q];
    for _ in 0..30 {
        let mut g = vec![0.0; q];
        let mut h = vec![vec![0.0; q]; q];
        for (zi, &yi) in z.iter().zip(y) {
            let eta: f64 = zi.iter().zip(&beta).map(|(a, b)| a * b).sum();
            let mu = 1.0 / (1.0 + (-eta).exp());
            let w = mu * (1.0 - mu);
            for a in 0..q {
                g[a] += zi[a] * (f64::from(u8::from(yi)) - mu);
                for b in 0..q {
                    h[a][b] += w * zi[a] * zi[b];
                }
            }
        }
        for a in 1..q {
            g[a] -= lambda * beta[a];
            h[a][a] += lambda;
        }
        // Solve h d = g (Gaussian elimination).
        let mut m: Vec<Vec<f64>> = h
            .iter()
            .zip(&g)
            .map(|(r, &gi)| r.iter().cloned().chain([gi]).collect())
            .collect();
        for c in 0..q {
            let piv = (c..q)
                .max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))
                .unwrap();
            m.swap(c, piv);
            for r in 0..q {
                if r != c {
                    let f = m[r][c] / m[c][c];
                    for k in c..=q {
                        m[r][k] -= f * m[c][k];
                    }
                }
            }
        }
        for a in 0..q {
            beta[a] += m[a][q] / m[a][a];
        }
    }
    move |r: &[f64]| {
        beta[0]
            + (0..p)
                .map(|j| beta[j + 1] * (r[j] - mean[j]) / sd[j])
                .sum::<f64>()
    }
}

/// Repeated stratified-free k-fold CV AUC (folds by index modulo k after a fixed permutation).
fn cv_auc(x: &[Vec<f64>], y: &[bool], k: usize) -> f64 {
    let n = x.len();
    let mut aucs = Vec::new();
    for rep in 0..5u64 {
        let mut order: Vec<usize> = (0..n).collect();
        // Deterministic shuffle (LCG).
        let mut s = 12345u64 + rep;
        for i in (1..n).rev() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut score = vec![0.0; n];
        for f in 0..k {
            let test: Vec<usize> = order.iter().cloned().skip(f).step_by(k).collect();
            let train: Vec<usize> = order
                .iter()
                .cloned()
                .filter(|i| !test.contains(i))
                .collect();
            let tx: Vec<Vec<f64>> = train.iter().map(|&i| x[i].clone()).collect();
            let ty: Vec<bool> = train.iter().map(|&i| y[i]).collect();
            let m = fit_logistic(&tx, &ty, 1.0);
            for &i in &test {
                score[i] = m(&x[i]);
            }
        }
        aucs.push(auc(&score, y));
    }
    aucs.iter().sum::<f64>() / aucs.len() as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let np: usize = args.get(1).map_or(102, |s| s.parse().unwrap());
    let ns: usize = args.get(2).map_or(7, |s| s.parse().unwrap());
    let seed: u64 = args.get(3).map_or(1, |s| s.parse().unwrap());
    let t0 = Instant::now();
    let plan = plan_cohort(&CohortParams::new(ns, np, seed)).unwrap();
    let t_plan = t0.elapsed();
    let plan_only = args.get(4).is_some_and(|s| s == "plan");
    let t1 = Instant::now();
    // Per patient: features of the largest lesion and mean liver HU.
    let rows: Vec<([f64; 5], f64)> = (0..if plan_only { 0 } else { np })
        .into_par_iter()
        .map(|i| {
            let img = render_patient(&plan, i);
            let sp = img.ct.geometry.spacing;
            let vox_ml = sp[0] * sp[1] * sp[2] / 1000.0;
            let stats = |m: &ndarray::Array3<bool>| {
                let v: Vec<f64> = img
                    .ct
                    .data
                    .iter()
                    .zip(m.iter())
                    .filter(|(_, m)| **m)
                    .map(|(v, _)| *v)
                    .collect();
                let n = v.len() as f64;
                let mean = v.iter().sum::<f64>() / n;
                let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
                (n, mean, sd)
            };
            let (_, liver_mean, _) = stats(&img.liver.data);
            let best = img
                .lesions
                .iter()
                .map(|m| stats(&m.data))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap();
            let total_ml: f64 = img.lesions.iter().map(|m| m.count() as f64).sum::<f64>() * vox_ml;
            (
                [
                    (best.0 * vox_ml).ln(),
                    best.1,
                    best.2,
                    best.1 - liver_mean,
                    total_ml.ln(),
                ],
                liver_mean,
            )
        })
        .collect();
    let t_render = t1.elapsed();
    let y: Vec<bool> = plan.patients.iter().map(|p| p.clinical.response).collect();
    println!(
        "{np} patients, {} lesions, {ns} sites, seed {seed}: plan {:.3} s, render {:.2} s ({:.0} ms/patient/thread)",
        plan.n_lesions(),
        t_plan.as_secs_f64(),
        t_render.as_secs_f64(),
        t_render.as_secs_f64() * 1000.0 * rayon::current_num_threads() as f64 / np as f64
    );
    if !plan_only {
        let names = [
            "log_vol_ml",
            "mean_hu",
            "sd_hu",
            "mean_minus_liver",
            "log_total_ml",
        ];
        for (j, name) in names.iter().enumerate() {
            let s: Vec<f64> = rows.iter().map(|r| r.0[j]).collect();
            println!("  AUC {name:>17}: {:.3}", auc(&s, &y));
        }
        let x3: Vec<Vec<f64>> = rows.iter().map(|r| r.0[..3].to_vec()).collect();
        println!(
            "  5-fold CV AUC logistic(vol, mean, sd): {:.3}",
            cv_auc(&x3, &y, 5)
        );
        let x4: Vec<Vec<f64>> = rows.iter().map(|r| vec![r.0[0], r.0[3], r.0[2]]).collect();
        println!(
            "  5-fold CV AUC logistic(vol, mean-liver, sd): {:.3}",
            cv_auc(&x4, &y, 5)
        );
    }

    // Oracles.
    let tr: Vec<Vec<f64>> = plan
        .patients
        .iter()
        .map(|p| {
            vec![
                p.traits.log_diameter,
                p.traits.enhancement_hu,
                p.traits.heterogeneity_logit,
            ]
        })
        .collect();
    println!(
        "  5-fold CV AUC logistic(latent traits): {:.3}",
        cv_auc(&tr, &y, 5)
    );
    let clin: Vec<Vec<f64>> = plan
        .patients
        .iter()
        .map(|p| {
            let c = &p.clinical;
            vec![
                f64::from(u8::from(c.grade == synth::clinical::Grade::G1)),
                f64::from(c.ecog),
                c.ki67.ln(),
                f64::from(u8::from(
                    c.met_pattern == synth::clinical::MetPattern::Single,
                )),
                f64::from(u8::from(
                    c.met_pattern == synth::clinical::MetPattern::Diffuse,
                )),
                c.age as f64,
            ]
        })
        .collect();
    println!(
        "  5-fold CV AUC logistic(clinical): {:.3}",
        cv_auc(&clin, &y, 5)
    );

    // Survival: exponential MLE rate ratio, censoring.
    let (mut e, mut t) = ([0.0; 2], [0.0; 2]);
    for p in &plan.patients {
        let g = usize::from(p.clinical.response);
        e[g] += f64::from(u8::from(p.clinical.pfs_event));
        t[g] += p.clinical.pfs_months;
    }
    let cens = plan
        .patients
        .iter()
        .filter(|p| !p.clinical.pfs_event)
        .count() as f64
        / np as f64;
    println!(
        "  PFS rate ratio (exp. MLE) responders/non: {:.3}; censored {:.1} %",
        (e[1] / t[1]) / (e[0] / t[0]),
        100.0 * cens
    );
    for (s, site) in plan.sites.iter().enumerate() {
        let l: Vec<f64> = site
            .patients
            .iter()
            .filter_map(|&i| rows.get(i).map(|r| r.1))
            .collect();
        let m = l.iter().sum::<f64>() / l.len() as f64;
        println!(
            "  {} n={:>3} dims {:?} sp {:.3}/{:.2} offset {:+5.1} scale {:.3} noise {:4.1}: liver HU {:.1}",
            site.id,
            l.len(),
            site.dims,
            site.scanner.inplane_spacing_mm,
            site.scanner.slice_thickness_mm,
            site.scanner.hu_offset,
            site.scanner.hu_scale,
            site.scanner.noise_sd_hu,
            m
        );
        let _ = s;
    }
}
