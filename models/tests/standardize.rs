//! Federated standardisation: site moments merged in site order equal the pooled two-pass
//! values (1e-12 relative for mean and SD, both conventions), checked against numpy's
//! `mean`/`std(ddof=0|1)` on the cohort example (values computed here from first principles), and
//! weighted moments equal the expanded (repeated-row) data.

use models::standardize::*;
use ndarray::Array2;
use serde_json::Value;

fn cohort() -> (Array2<f64>, Vec<String>) {
    let g: Value = serde_json::from_str(include_str!("golden/combat_golden.json")).unwrap();
    let c = &g["cases"][1];
    let rows: Vec<Vec<f64>> = serde_json::from_value(c["features"].clone()).unwrap();
    let (n, p) = (rows.len(), rows[0].len());
    (
        Array2::from_shape_vec((n, p), rows.into_iter().flatten().collect()).unwrap(),
        serde_json::from_value(c["batch"].clone()).unwrap(),
    )
}

#[test]
fn federated_equals_pooled_both_conventions() {
    let (x, site) = cohort();
    let mut ids = site.clone();
    ids.sort();
    ids.dedup();
    let parts: Vec<Vec<Moments>> = ids
        .iter()
        .map(|id| {
            let idx: Vec<usize> = (0..site.len()).filter(|&i| &site[i] == id).collect();
            site_moments(x.select(ndarray::Axis(0), &idx).view()).unwrap()
        })
        .collect();
    for conv in [VarianceConvention::Population, VarianceConvention::Sample] {
        let fed = Standardizer::from_site_moments(&parts, conv).unwrap();
        let pooled = Standardizer::pooled(x.view(), conv).unwrap();
        assert_eq!(fed.n, 102);
        let ddof = if conv == VarianceConvention::Sample {
            1.0
        } else {
            0.0
        };
        for j in 0..x.ncols() {
            let c = x.column(j);
            let m = c.sum() / 102.0;
            let sd = (c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (102.0 - ddof)).sqrt();
            for (a, b) in [(fed.mean[j], m), (fed.sd[j], sd), (pooled.sd[j], sd)] {
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs().max(1e-300),
                    "{conv:?} col {j}: {a} vs {b}"
                );
            }
        }
        let z = fed.transform(x.view()).unwrap();
        for j in 0..x.ncols() {
            let c = z.column(j);
            assert!(c.sum().abs() < 1e-10);
            let ss: f64 = c.iter().map(|v| v * v).sum();
            assert!((ss / (102.0 - ddof) - 1.0).abs() < 1e-12);
        }
    }
}

#[test]
fn weighted_moments_equal_repeated_rows() {
    let vals = [3.0, -1.5, 8.25, 1e3, 2.0];
    let w = [2.0, 0.0, 1.0, 3.0, 1.0];
    let mut a = WeightedMoments::default();
    let mut b = WeightedMoments::default();
    for (i, (&v, &wi)) in vals.iter().zip(&w).enumerate() {
        if i < 2 {
            a.push(v, wi);
        } else {
            b.push(v, wi);
        }
    }
    let merged = a.merge(&b);
    let expanded: Vec<f64> = vals
        .iter()
        .zip(&w)
        .flat_map(|(&v, &wi)| std::iter::repeat_n(v, wi as usize))
        .collect();
    let m = Moments::from_values(&expanded);
    assert_eq!(merged.w, 7.0);
    assert!((merged.mean - m.mean).abs() < 1e-12 * m.mean.abs());
    assert!((merged.m2 - m.m2).abs() < 1e-10 * m.m2);
    assert!(
        (merged.sd_population() - m.sd_population().unwrap()).abs()
            < 1e-12 * merged.sd_population()
    );
}

#[test]
fn errors_are_typed() {
    let x = ndarray::array![[1.0, f64::NAN]];
    assert!(matches!(
        site_moments(x.view()),
        Err(models::ModelsError::NonFinite { row: 0, col: 1, .. })
    ));
    let one = vec![site_moments(ndarray::array![[1.0]].view()).unwrap()];
    assert!(Standardizer::from_site_moments(&one, VarianceConvention::Sample).is_err());
    assert!(Standardizer::from_site_moments(&one, VarianceConvention::Population).is_ok());
}
