//! Separable Gaussian smoothing on flat `[z, y, x]` voxel buffers and unit-variance correlated
//! noise fields (white Gaussian noise smoothed, then rescaled).
//!
//! Conventions: kernels are sampled Gaussians truncated at 3 sigma and normalised to sum 1; borders
//! replicate the edge voxel; a sigma below 0.05 voxel means "no smoothing" along that axis.

use rand::Rng;
use rand_distr::StandardNormal;

/// Sampled Gaussian kernel (odd length, sums to 1) for a sigma in voxels.
pub fn gaussian_kernel(sigma_vox: f64) -> Vec<f64> {
    if sigma_vox.is_nan() || sigma_vox < 0.05 {
        return vec![1.0];
    }
    let r = (3.0 * sigma_vox).ceil() as isize;
    let mut k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma_vox * sigma_vox)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// Smooth `data` (shape `dims = [nz, ny, nx]`, x fastest) along each axis with the Gaussian of the
/// given sigma in voxels `[z, y, x]`.
pub fn gaussian_blur(data: &mut [f64], dims: [usize; 3], sigma_vox: [f64; 3]) {
    for axis in 0..3 {
        let k = gaussian_kernel(sigma_vox[axis]);
        if k.len() > 1 {
            blur_axis(data, dims, axis, &k);
        }
    }
}

fn blur_axis(data: &mut [f64], dims: [usize; 3], axis: usize, k: &[f64]) {
    let [nz, ny, nx] = dims;
    let strides = [ny * nx, nx, 1];
    let len = dims[axis];
    let stride = strides[axis];
    let r = k.len() / 2;
    // The line with `r` replicated edge voxels on each side, so the inner loop needs no bounds logic.
    let mut line = vec![0.0; len + 2 * r];
    let mut out = vec![0.0; len];
    let mut run = |s: usize| {
        for i in 0..len {
            line[r + i] = data[s + i * stride];
        }
        let (first, last) = (line[r], line[r + len - 1]);
        line[..r].iter_mut().for_each(|v| *v = first);
        line[r + len..].iter_mut().for_each(|v| *v = last);
        // Tap-outer order: each pass is a vectorisable axpy over the whole line.
        out.fill(0.0);
        for (j, &w) in k.iter().enumerate() {
            for (o, &a) in out.iter_mut().zip(&line[j..j + len]) {
                *o += w * a;
            }
        }
        for (i, &v) in out.iter().enumerate() {
            data[s + i * stride] = v;
        }
    };
    match axis {
        0 => (0..ny * nx).for_each(&mut run),
        1 => (0..nz).for_each(|z| (0..nx).for_each(|x| run(z * ny * nx + x))),
        _ => (0..nz * ny).for_each(|zy| run(zy * nx)),
    }
}

/// Gaussian white noise smoothed with `sigma_vox` `[z, y, x]`, scaled to unit SD (the SD of
/// smoothed unit white noise is the product over axes of `sqrt(Σ k²)`). The noise is drawn on a grid
/// padded by the kernel radius and cropped after smoothing, so border voxels are as random as the
/// rest (replicated borders would reuse values and inflate the variance there).
pub fn smooth_noise<R: Rng>(rng: &mut R, dims: [usize; 3], sigma_vox: [f64; 3]) -> Vec<f64> {
    let kernels: Vec<Vec<f64>> = sigma_vox.iter().map(|&s| gaussian_kernel(s)).collect();
    let pad: Vec<usize> = kernels.iter().map(|k| k.len() / 2).collect();
    let pd = [
        dims[0] + 2 * pad[0],
        dims[1] + 2 * pad[1],
        dims[2] + 2 * pad[2],
    ];
    let mut v: Vec<f64> = (0..pd[0] * pd[1] * pd[2])
        .map(|_| rng.sample::<f64, _>(StandardNormal))
        .collect();
    gaussian_blur(&mut v, pd, sigma_vox);
    let sd: f64 = kernels
        .iter()
        .map(|k| k.iter().map(|w| w * w).sum::<f64>().sqrt())
        .product();
    let mut out = Vec::with_capacity(dims[0] * dims[1] * dims[2]);
    for z in 0..dims[0] {
        for y in 0..dims[1] {
            let row = ((z + pad[0]) * pd[1] + y + pad[1]) * pd[2] + pad[2];
            out.extend(v[row..row + dims[2]].iter().map(|x| x / sd));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn kernel_sums_to_one_and_blur_keeps_constants() {
        let k = gaussian_kernel(1.3);
        assert_eq!(k.len(), 2 * 4 + 1);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let dims = [4, 5, 6];
        let mut d = vec![7.5; 120];
        gaussian_blur(&mut d, dims, [0.8, 1.5, 2.0]);
        assert!(d.iter().all(|v| (v - 7.5).abs() < 1e-12));
    }

    #[test]
    fn blur_matches_direct_convolution_along_y() {
        // One impulse: the blurred volume is the kernel laid along y (away from borders).
        let dims = [3, 21, 4];
        let mut d = vec![0.0; 3 * 21 * 4];
        d[21 * 4 + 10 * 4 + 2] = 1.0;
        gaussian_blur(&mut d, dims, [0.0, 1.0, 0.0]);
        let k = gaussian_kernel(1.0);
        for (j, w) in k.iter().enumerate() {
            let y = 10 + j - 3;
            assert!((d[21 * 4 + y * 4 + 2] - w).abs() < 1e-15);
        }
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn smooth_noise_has_unit_sd() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let v = smooth_noise(&mut rng, [40, 60, 60], [0.5, 1.5, 1.5]);
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((sd - 1.0).abs() < 0.04, "sd {sd}");
        assert!(m.abs() < 0.1);
    }
}
