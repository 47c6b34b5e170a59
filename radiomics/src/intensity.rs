//! Intensity-based families: intensity statistics (IBSI UHIW), intensity histogram (ZVCW),
//! intensity-volume histogram (P88C) and local intensity peaks (9ST6).
//!
//! Conventions, all per IBSI 1 and matching MIRP (the IBSI reference implementation):
//! * Statistics use the voxels of the intensity mask; variance, skewness and kurtosis are population
//!   moments (1/N, no bias correction); kurtosis is excess kurtosis (−3); skewness and kurtosis are 0
//!   when the variance is 0.
//! * Percentiles (P10, P25, P75, P90; median = P50) use linear interpolation between order statistics
//!   at rank `(N − 1) q` (numpy's default, "type 7"), which MIRP uses.
//! * "Median absolute deviation" is IBSI's mean absolute deviation from the median.
//! * The intensity histogram has one bin per grey level 1..N_g, including empty bins; its mode is the
//!   most frequent grey level, ties broken towards the mean; the histogram gradient is `n_2 − n_1` at
//!   the first bin, `(n_{i+1} − n_{i−1}) / 2` inside and `n_{N_g} − n_{N_g−1}` at the last bin.
//! * Local intensity peaks average all image voxels (inside or outside the ROI, but inside the image)
//!   whose centres lie within `r = (3 / (4π))^{1/3}` cm = 6.2035 mm of the centre voxel, using the
//!   physical voxel spacing.

use ndarray::{ArrayView3, Zip};

use crate::discretise::{Discretisation, DiscretiseError, Discretiser};

/// Base tags of the intensity statistics, in the order of [`intensity_statistics`].
pub const STAT_FEATURES: [&str; 18] = [
    "stat_mean",   // Q4LE mean
    "stat_var",    // ECT3 variance (1/N)
    "stat_skew",   // KE2A skewness
    "stat_kurt",   // IPH6 excess kurtosis
    "stat_median", // Y12H median
    "stat_min",    // 1GSF minimum
    "stat_p10",    // QG58 10th percentile
    "stat_p90",    // 8DWT 90th percentile
    "stat_max",    // 84IY maximum
    "stat_iqr",    // SALO P75 − P25
    "stat_range",  // 2OJQ max − min
    "stat_mad",    // 4FUA mean |x − mean|
    "stat_rmad",   // 1128 mean |x − mean_{10-90}| over P10 ≤ x ≤ P90
    "stat_medad",  // N72L mean |x − median|
    "stat_cov",    // 7TET sqrt(var) / mean
    "stat_qcod",   // 9S40 (P75 − P25) / (P75 + P25)
    "stat_energy", // N8CA Σ x²
    "stat_rms",    // 5ZWQ sqrt(Σ x² / N)
];

/// Base tags of the intensity histogram features, in the order of [`intensity_histogram`].
pub const IH_FEATURES: [&str; 23] = [
    "ih_mean",       // X6K6
    "ih_var",        // CH89
    "ih_skew",       // 88K1
    "ih_kurt",       // C3I7 (excess)
    "ih_median",     // WIFQ
    "ih_min",        // 1PR8
    "ih_p10",        // GPMT
    "ih_p90",        // OZ0C
    "ih_max",        // 3NCY
    "ih_mode",       // AMMC
    "ih_iqr",        // WR0O
    "ih_range",      // 5Z3W
    "ih_mad",        // D2ZX
    "ih_rmad",       // WRZB
    "ih_medad",      // 4RNL
    "ih_cov",        // CWYJ
    "ih_qcod",       // SLWD
    "ih_entropy",    // TLU2 −Σ p log2 p
    "ih_uniformity", // BJ5W Σ p²
    "ih_max_grad",   // 12CE max H'
    "ih_max_grad_g", // 8E6O grey level of max H'
    "ih_min_grad",   // VQB3 min H'
    "ih_min_grad_g", // RHQZ grey level of min H'
];

/// Base tags of the intensity-volume histogram features, in the order of [`intensity_volume_histogram`].
pub const IVH_FEATURES: [&str; 6] = [
    "ivh_v10",          // BC2M volume fraction at ≥ 10 % intensity fraction
    "ivh_v90",          // BC2M volume fraction at ≥ 90 % intensity fraction
    "ivh_i10",          // GBPN intensity at ≤ 10 % volume
    "ivh_i90",          // GBPN intensity at ≤ 90 % volume
    "ivh_diff_v10_v90", // DDTU V10 − V90
    "ivh_diff_i10_i90", // CNV2 I10 − I90
];

/// Base tags of the local intensity features, in the order of [`local_intensity`].
pub const LOCAL_FEATURES: [&str; 2] = [
    "loc_peak_loc", // VJGA mean in 1 cm³ sphere around the maximum-intensity voxel(s) (highest)
    "loc_peak_glob", // 0F91 highest 1 cm³ sphere mean centred on any ROI voxel
];

/// Radius (mm) of the 1 cm³ sphere of the local intensity peaks: (3 / (4π))^{1/3} cm.
pub fn peak_sphere_radius_mm() -> f64 {
    10.0 * (3.0 / (4.0 * std::f64::consts::PI)).cbrt()
}

/// Linear-interpolation percentile (numpy default) of `v` for `q` in [0, 100]. Reorders `v`.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let h = (v.len() - 1) as f64 * q / 100.0;
    let lo = h.floor() as usize;
    let frac = h - lo as f64;
    let (_, &mut x_lo, upper) = v.select_nth_unstable_by(lo, f64::total_cmp);
    if frac == 0.0 || upper.is_empty() {
        return x_lo;
    }
    let x_hi = upper.iter().copied().fold(f64::INFINITY, f64::min);
    x_lo + frac * (x_hi - x_lo)
}

/// Moments and order statistics shared by the statistics and histogram families.
struct Summary {
    mean: f64,
    var: f64,
    skew: f64,
    kurt: f64,
    min: f64,
    max: f64,
    p10: f64,
    p25: f64,
    median: f64,
    p75: f64,
    p90: f64,
    mad: f64,
    rmad: f64,
    medad: f64,
}

fn summarise(values: &[f64]) -> Summary {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let (mut m2, mut m3, mut m4, mut mad) = (0.0, 0.0, 0.0, 0.0);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &x in values {
        let d = x - mean;
        let d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
        mad += d.abs();
        min = min.min(x);
        max = max.max(x);
    }
    let var = m2 / n;
    let (skew, kurt) = if var > 0.0 {
        (m3 / n / var.powf(1.5), m4 / n / (var * var) - 3.0)
    } else {
        (0.0, 0.0)
    };
    let mut scratch = values.to_vec();
    let p10 = percentile(&mut scratch, 10.0);
    let p25 = percentile(&mut scratch, 25.0);
    let median = percentile(&mut scratch, 50.0);
    let p75 = percentile(&mut scratch, 75.0);
    let p90 = percentile(&mut scratch, 90.0);
    let (mut rsum, mut rn) = (0.0, 0usize);
    for &x in values {
        if x >= p10 && x <= p90 {
            rsum += x;
            rn += 1;
        }
    }
    let rmean = rsum / rn as f64;
    let mut rmad = 0.0;
    let mut medad = 0.0;
    for &x in values {
        if x >= p10 && x <= p90 {
            rmad += (x - rmean).abs();
        }
        medad += (x - median).abs();
    }
    Summary {
        mean,
        var,
        skew,
        kurt,
        min,
        max,
        p10,
        p25,
        median,
        p75,
        p90,
        mad: mad / n,
        rmad: rmad / rn as f64,
        medad: medad / n,
    }
}

/// Intensity statistics of the intensity-mask values (order: [`STAT_FEATURES`]).
/// Returns NaN values for an empty input.
pub fn intensity_statistics(values: &[f64]) -> Vec<f64> {
    if values.is_empty() {
        return vec![f64::NAN; STAT_FEATURES.len()];
    }
    let s = summarise(values);
    let energy: f64 = values.iter().map(|x| x * x).sum();
    vec![
        s.mean,
        s.var,
        s.skew,
        s.kurt,
        s.median,
        s.min,
        s.p10,
        s.p90,
        s.max,
        s.p75 - s.p25,
        s.max - s.min,
        s.mad,
        s.rmad,
        s.medad,
        s.var.sqrt() / s.mean,
        (s.p75 - s.p25) / (s.p75 + s.p25),
        energy,
        (energy / values.len() as f64).sqrt(),
    ]
}

/// Intensity histogram features of discretised grey levels `levels` (1..=n_levels) (order:
/// [`IH_FEATURES`]). Returns NaN values for an empty input.
pub fn intensity_histogram(levels: &[u32], n_levels: u32) -> Vec<f64> {
    if levels.is_empty() {
        return vec![f64::NAN; IH_FEATURES.len()];
    }
    let x: Vec<f64> = levels.iter().map(|&l| l as f64).collect();
    let s = summarise(&x);
    let n = x.len() as f64;
    let ng = (n_levels as usize).max(levels.iter().copied().max().unwrap_or(1) as usize);
    let mut hist = vec![0.0f64; ng];
    for &l in levels {
        hist[l as usize - 1] += 1.0;
    }
    let (mut entropy, mut uniformity) = (0.0, 0.0);
    let mut mode = (0usize, -1.0f64);
    for (k, &c) in hist.iter().enumerate() {
        let p = c / n;
        if p > 0.0 {
            entropy -= p * p.log2();
        }
        uniformity += p * p;
        let level = (k + 1) as f64;
        // Most frequent level; on ties the one closest to the mean (then the lowest).
        if c > mode.1
            || (c == mode.1 && (level - s.mean).abs() < ((mode.0 + 1) as f64 - s.mean).abs())
        {
            mode = (k, c);
        }
    }
    let grad: Vec<f64> = (0..ng)
        .map(|k| match (k, ng) {
            (_, 1) => 0.0,
            (0, _) => hist[1] - hist[0],
            (k, ng) if k == ng - 1 => hist[k] - hist[k - 1],
            (k, _) => (hist[k + 1] - hist[k - 1]) / 2.0,
        })
        .collect();
    // First occurrence of the extreme gradient (pandas idxmax / idxmin).
    let (mut gmax, mut gmin) = (0usize, 0usize);
    for (k, &g) in grad.iter().enumerate() {
        if g > grad[gmax] {
            gmax = k;
        }
        if g < grad[gmin] {
            gmin = k;
        }
    }
    vec![
        s.mean,
        s.var,
        s.skew,
        s.kurt,
        s.median,
        s.min,
        s.p10,
        s.p90,
        s.max,
        (mode.0 + 1) as f64,
        s.p75 - s.p25,
        s.max - s.min,
        s.mad,
        s.rmad,
        s.medad,
        if s.var == 0.0 {
            0.0
        } else {
            s.var.sqrt() / s.mean
        },
        (s.p75 - s.p25) / (s.p75 + s.p25),
        entropy,
        uniformity,
        grad[gmax],
        (gmax + 1) as f64,
        grad[gmin],
        (gmin + 1) as f64,
    ]
}

/// How intensities are discretised for the intensity-volume histogram (IBSI section P88C).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum IvhDiscretisation {
    /// Discrete calibrated intensities (e.g. integer CT HU) used as is; discretisation interval 1.
    None,
    /// Fixed bin size (e.g. 2.5 HU): bins start at the lower re-segmentation bound (or the ROI
    /// minimum) and each voxel takes its bin centre; the interval is the bin width.
    FixedBinSize { width: f64 },
    /// Fixed bin number over the ROI range (arbitrary units, e.g. MRI; IBSI suggests 1000); the
    /// grey levels 1..N are used, interval 1.
    FixedBinNumber { bins: u32 },
}

/// Intensity-volume histogram features (order: [`IVH_FEATURES`]).
///
/// `values` are the intensity-mask intensities and `range` the re-segmentation range (lower bound,
/// optional upper bound), which sets the total range `G` of the histogram for [`IvhDiscretisation::None`]
/// (`[lower, upper or max]`) and [`IvhDiscretisation::FixedBinSize`] (`[lower + w/2, upper − w/2]`);
/// without a range `G` spans the ROI values. Fractional volume `ν_i` is the fraction of voxels with
/// discretised intensity ≥ `i`, intensity fraction `γ_i = (i − min G) / (max G − min G)`.
/// `V_x` = largest `ν` with `γ ≥ x`; `I_x` = smallest `i` with `ν ≤ x` (max G if none, as MIRP).
pub fn intensity_volume_histogram(
    values: &[f64],
    method: IvhDiscretisation,
    range: Option<(f64, Option<f64>)>,
) -> Result<Vec<f64>, DiscretiseError> {
    if values.is_empty() {
        return Err(DiscretiseError::Empty);
    }
    let (mut vmin, mut vmax) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in values {
        if !v.is_finite() {
            return Err(DiscretiseError::NonFinite(v));
        }
        vmin = vmin.min(v);
        vmax = vmax.max(v);
    }
    // Grid of evaluated intensities: g_min + k * w for k = 0..=k_max; each voxel's grid index.
    let (g_min, w, k_max, index): (f64, f64, usize, Vec<i64>) = match method {
        IvhDiscretisation::None => {
            let lo = range.map_or(vmin, |r| r.0);
            let hi = range.and_then(|r| r.1).unwrap_or(vmax);
            let k_max = (hi - lo).floor().max(0.0) as usize;
            (
                lo,
                1.0,
                k_max,
                values.iter().map(|&v| (v - lo).floor() as i64).collect(),
            )
        }
        IvhDiscretisation::FixedBinSize { width } => {
            let origin = range.map_or(vmin, |r| r.0);
            let d = Discretiser::fit(
                Discretisation::FixedBinSize {
                    width,
                    origin: Some(origin),
                },
                values,
            )?;
            let k_max = match range.and_then(|r| r.1) {
                // G = [lower + w/2, upper − w/2]: the centres of the bins inside the range.
                Some(hi) => (((hi - origin) / width - 1.0) + 1e-9).floor().max(0.0) as usize,
                None => d.n_levels as usize - 1,
            };
            (
                origin + 0.5 * width,
                width,
                k_max,
                values.iter().map(|&v| d.level(v) as i64 - 1).collect(),
            )
        }
        IvhDiscretisation::FixedBinNumber { bins } => {
            let d = Discretiser::fit(Discretisation::FixedBinNumber { bins }, values)?;
            (
                1.0,
                1.0,
                bins as usize - 1,
                values.iter().map(|&v| d.level(v) as i64 - 1).collect(),
            )
        }
    };
    // count_at_least[k] = number of voxels with grid index ≥ k.
    let mut hist = vec![0usize; k_max + 2];
    for &k in &index {
        hist[(k.max(0) as usize).min(k_max + 1)] += 1;
    }
    let n = values.len() as f64;
    let mut nu = vec![0.0; k_max + 1];
    let mut acc = hist[k_max + 1];
    for k in (0..=k_max).rev() {
        acc += hist[k];
        nu[k] = acc as f64 / n;
    }
    let span = k_max as f64 * w;
    let gamma = |k: usize| (k as f64 * w) / span;
    let v_at = |x: f64| {
        (0..=k_max)
            .filter(|&k| gamma(k) >= x)
            .map(|k| nu[k])
            .fold(f64::NAN, |a: f64, b| if a.is_nan() { b } else { a.max(b) })
    };
    let i_at = |x: f64| {
        (0..=k_max)
            .find(|&k| nu[k] <= x)
            .map_or(g_min + span, |k| g_min + k as f64 * w)
    };
    let (v10, v90, i10, i90) = (v_at(0.1), v_at(0.9), i_at(0.1), i_at(0.9));
    Ok(vec![v10, v90, i10, i90, v10 - v90, i10 - i90])
}

/// Local intensity features (order: [`LOCAL_FEATURES`]).
///
/// `image` is the full image around the ROI (sphere means use voxels outside the ROI), `roi` the
/// intensity mask, `spacing` the voxel spacing in mm (`[z, y, x]`). Each sphere sum costs one
/// prefix-sum lookup per (z, y) row of the sphere, so the global peak is O(N_roi · rows), not
/// O(N_roi · sphere voxels). Returns NaN values for an empty ROI.
pub fn local_intensity(
    image: ArrayView3<f64>,
    roi: ArrayView3<bool>,
    spacing: [f64; 3],
) -> Vec<f64> {
    let sh = image.shape();
    let (nz, ny, nx) = (sh[0], sh[1], sh[2]);
    let r = peak_sphere_radius_mm();
    let rad = |s: f64| (r / s + 1e-9).floor() as usize;
    let (rz, ry, rx) = (rad(spacing[0]), rad(spacing[1]), rad(spacing[2]));
    // Sphere rows: (dz, dy, half width in x).
    let mut rows = Vec::new();
    for dz in -(rz as isize)..=rz as isize {
        for dy in -(ry as isize)..=ry as isize {
            let rem = r * r - (dz as f64 * spacing[0]).powi(2) - (dy as f64 * spacing[1]).powi(2);
            if rem >= 0.0 {
                rows.push((dz, dy, (rem.sqrt() / spacing[2] + 1e-9).floor() as isize));
            }
        }
    }
    // ROI bounding box and the box it needs (clipped to the image).
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    let mut roi_vox = Vec::new();
    Zip::indexed(&roi).for_each(|(z, y, x), &m| {
        if m {
            roi_vox.push([z, y, x]);
            for (a, c) in [z, y, x].into_iter().enumerate() {
                lo[a] = lo[a].min(c);
                hi[a] = hi[a].max(c);
            }
        }
    });
    if roi_vox.is_empty() {
        return vec![f64::NAN; LOCAL_FEATURES.len()];
    }
    let bz = (lo[0].saturating_sub(rz), (hi[0] + rz).min(nz - 1));
    let by = (lo[1].saturating_sub(ry), (hi[1] + ry).min(ny - 1));
    let bx = (lo[2].saturating_sub(rx), (hi[2] + rx).min(nx - 1));
    let (lz, ly, lx) = (bz.1 - bz.0 + 1, by.1 - by.0 + 1, bx.1 - bx.0 + 1);
    // prefix[(z, y)][x + 1] = Σ image[z, y, bx.0 ..= bx.0 + x].
    let mut prefix = vec![0.0f64; lz * ly * (lx + 1)];
    for z in 0..lz {
        for y in 0..ly {
            let base = (z * ly + y) * (lx + 1);
            let mut acc = 0.0;
            for x in 0..lx {
                acc += image[[bz.0 + z, by.0 + y, bx.0 + x]];
                prefix[base + x + 1] = acc;
            }
        }
    }
    let sphere_mean = |[z, y, x]: [usize; 3]| {
        let (mut sum, mut count) = (0.0, 0usize);
        for &(dz, dy, wx) in &rows {
            let (zz, yy) = (z as isize + dz, y as isize + dy);
            if zz < bz.0 as isize || zz > bz.1 as isize || yy < by.0 as isize || yy > by.1 as isize
            {
                continue;
            }
            let x0 = (x as isize - wx).max(bx.0 as isize) as usize - bx.0;
            let x1 = ((x as isize + wx).min(bx.1 as isize) as usize) - bx.0;
            let base = ((zz as usize - bz.0) * ly + (yy as usize - by.0)) * (lx + 1);
            sum += prefix[base + x1 + 1] - prefix[base + x0];
            count += x1 - x0 + 1;
        }
        sum / count as f64
    };
    // Fast path for voxels whose whole sphere lies inside the box (always the case in the pipeline,
    // whose box has a 10 mm margin): fixed linear row offsets, no clipping, constant count.
    let row_len = (lx + 1) as isize;
    let fast_rows: Vec<(isize, isize)> = rows
        .iter()
        .map(|&(dz, dy, wx)| ((dz * ly as isize + dy) * row_len, wx))
        .collect();
    let fast_count: isize = rows.iter().map(|r| 2 * r.2 + 1).sum();
    let (rz_i, ry_i, rx_i) = (rz as isize, ry as isize, rx as isize);
    let inside = |c: usize, r: isize, b: (usize, usize)| {
        c as isize - r >= b.0 as isize && c as isize + r <= b.1 as isize
    };
    let fast_mean = |[z, y, x]: [usize; 3]| -> Option<f64> {
        if !(inside(z, rz_i, bz) && inside(y, ry_i, by) && inside(x, rx_i, bx)) {
            return None;
        }
        let base = ((z - bz.0) * ly + (y - by.0)) as isize * row_len + (x - bx.0) as isize;
        let mut sum = 0.0;
        for &(off, w) in &fast_rows {
            let c = base + off;
            sum += prefix[(c + w + 1) as usize] - prefix[(c - w) as usize];
        }
        Some(sum / fast_count as f64)
    };
    let max_int = roi_vox
        .iter()
        .map(|&[z, y, x]| image[[z, y, x]])
        .fold(f64::NEG_INFINITY, f64::max);
    let mut local = f64::NEG_INFINITY;
    let mut global = f64::NEG_INFINITY;
    for &v in &roi_vox {
        let m = fast_mean(v).unwrap_or_else(|| sphere_mean(v));
        global = global.max(m);
        if image[[v[0], v[1], v[2]]] == max_int {
            local = local.max(m);
        }
    }
    vec![local, global]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn percentile_matches_numpy_linear() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        // numpy.percentile([1,2,3,4], [10, 50, 90]) = 1.3, 2.5, 3.7
        assert!((percentile(&mut v, 10.0) - 1.3).abs() < 1e-12);
        assert!((percentile(&mut v, 50.0) - 2.5).abs() < 1e-12);
        assert!((percentile(&mut v, 90.0) - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&mut [5.0], 90.0), 5.0);
    }

    #[test]
    fn statistics_of_a_small_sample() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        let s = intensity_statistics(&v);
        assert!((s[0] - 4.0).abs() < 1e-12);
        assert!((s[1] - 10.0).abs() < 1e-12); // (9+4+1+0+36)/5
        assert_eq!(s[4], 3.0);
        assert_eq!(s[16], 130.0);
        // Constant input: skewness and kurtosis are 0 by definition.
        let c = intensity_statistics(&[2.0, 2.0]);
        assert_eq!((c[2], c[3]), (0.0, 0.0));
    }

    #[test]
    fn histogram_gradient_and_mode() {
        // Levels: 1 x3, 2 x1, 4 x2 with N_g = 4 -> histogram [3, 1, 0, 2].
        let f = intensity_histogram(&[1, 1, 1, 2, 4, 4], 4);
        assert_eq!(f[9], 1.0); // mode
        // H' = [1-3, (0-3)/2, (2-1)/2, 2-0] = [-2, -1.5, 0.5, 2]
        assert_eq!((f[19], f[20], f[21], f[22]), (2.0, 4.0, -2.0, 1.0));
    }

    #[test]
    fn ivh_fixed_bin_size_with_range_uses_bin_centres() {
        // Range [0, 10], w = 2.5: bins centres 1.25, 3.75, 6.25, 8.75; G = [1.25, 8.75].
        let v = [0.0, 1.0, 3.0, 9.0];
        let f = intensity_volume_histogram(
            &v,
            IvhDiscretisation::FixedBinSize { width: 2.5 },
            Some((0.0, Some(10.0))),
        )
        .unwrap();
        // nu = [1, 0.5, 0.25, 0.25]; gamma = [0, 1/3, 2/3, 1].
        assert_eq!(f[0], 0.5); // V10 at k = 1
        assert_eq!(f[1], 0.25); // V90 at k = 3
        assert_eq!(f[2], 8.75); // I10: no nu <= 0.1 -> max G
        assert_eq!(f[3], 3.75); // I90: first nu <= 0.9 is k = 1
    }

    #[test]
    fn local_peaks_equal_brute_force_spheres() {
        // ROI touching the image edge (clipped spheres, slow path) and deep inside (fast path).
        let sp = [2.0, 0.8, 0.9];
        let img = Array3::from_shape_fn((12, 30, 28), |(z, y, x)| {
            ((x * 7 + y * 13 + z * 5) % 17) as f64 + 0.01 * (x * y) as f64
        });
        let roi = Array3::from_shape_fn((12, 30, 28), |(z, y, x)| {
            (z + y + x) % 3 != 0 && (x < 3 || (10..18).contains(&x)) && y > 4
        });
        let r = peak_sphere_radius_mm();
        let mean = |(z, y, x): (usize, usize, usize)| {
            let (mut s, mut n) = (0.0, 0);
            for ((a, b, c), &v) in img.indexed_iter() {
                let d2 = ((a as f64 - z as f64) * sp[0]).powi(2)
                    + ((b as f64 - y as f64) * sp[1]).powi(2)
                    + ((c as f64 - x as f64) * sp[2]).powi(2);
                if d2 <= r * r + 1e-9 {
                    s += v;
                    n += 1;
                }
            }
            s / n as f64
        };
        let max_int = roi
            .indexed_iter()
            .filter(|(_, m)| **m)
            .map(|(i, _)| img[i])
            .fold(f64::NEG_INFINITY, f64::max);
        let (mut local, mut global) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for (i, _) in roi.indexed_iter().filter(|(_, m)| **m) {
            let m = mean(i);
            global = global.max(m);
            if img[i] == max_int {
                local = local.max(m);
            }
        }
        let f = local_intensity(img.view(), roi.view(), sp);
        assert!((f[0] - local).abs() < 1e-9, "{} vs {local}", f[0]);
        assert!((f[1] - global).abs() < 1e-9, "{} vs {global}", f[1]);
    }

    #[test]
    fn local_peak_uses_sphere_in_mm() {
        // 1 mm voxels: the sphere of radius 6.2 mm; a single bright voxel in a zero image.
        let mut img = Array3::<f64>::zeros((15, 15, 15));
        img[[7, 7, 7]] = 1000.0;
        let mut roi = Array3::from_elem((15, 15, 15), false);
        roi[[7, 7, 7]] = true;
        roi[[7, 7, 8]] = true;
        let f = local_intensity(img.view(), roi.view(), [1.0, 1.0, 1.0]);
        // Number of integer points with x²+y²+z² ≤ 6.2035² (= 38.48), i.e. ≤ 38.
        let mut n = 0;
        for z in -6i32..=6 {
            for y in -6i32..=6 {
                for x in -6i32..=6 {
                    if x * x + y * y + z * z <= 38 {
                        n += 1;
                    }
                }
            }
        }
        assert!(
            (f[0] - 1000.0 / n as f64).abs() < 1e-9,
            "{} vs {}",
            f[0],
            1000.0 / n as f64
        );
        assert_eq!(f[0], f[1]);
    }
}
