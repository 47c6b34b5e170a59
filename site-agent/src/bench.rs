//! `site-agent bench extract …`: reproducible timings and peak memory of the extraction pipeline
//! (the numbers in BENCHMARKS.md). Run the release build; the machine may be shared, so each case
//! repeats and reports the best and the median.
//!
//! Cases:
//! * `phantom`: one lesion, `--preset paper`, IBSI CT phantom GTV (NIfTI), in this process;
//! * `cohort`: N lesions (crops of the phantom shifted by a few voxels, one image per lesion,
//!   written as NIfTI to a work folder), the manifest pipeline on `--threads` threads;
//! * `big`: a synthetic 512×512×300 CT with 10 spherical lesions in one label map; the manifest
//!   is run in a child `site-agent extract` process whose own peak memory (VmHWM) is reported, so
//!   the generator's memory does not count.
//!
//! Peak memory is `VmHWM` from `/proc/self/status` (Linux), the high-water mark of resident memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};
use ndarray::{Array3, ArrayView3, Slice};

use radiomics::cohort::LesionAggregation;
use radiomics::io::{self, MaskSelection};
use radiomics::pipeline::{Settings, extract_roi};
use radiomics::{Geometry, Volume};

/// `site-agent bench` arguments.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchWhat {
    /// Time feature extraction (see BENCHMARKS.md for the commands and numbers).
    #[command(after_help = "Examples:
  RAYON_NUM_THREADS=1 site-agent bench extract phantom --ibsi ../shared/ibsi --repeat 5
  site-agent bench extract cohort --ibsi ../shared/ibsi --lesions 100 --threads 2
  site-agent bench extract big --dir /tmp/big")]
    Extract {
        #[command(subcommand)]
        case: BenchCase,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchCase {
    /// One lesion at --preset paper on the IBSI CT phantom GTV.
    #[command(
        after_help = "Example:\n  site-agent bench extract phantom --ibsi ../shared/ibsi --repeat 5"
    )]
    Phantom {
        /// The `shared/ibsi` folder.
        #[arg(long, default_value = "../shared/ibsi")]
        ibsi: PathBuf,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// A cohort of shifted phantom crops through the manifest pipeline.
    #[command(
        after_help = "Example:\n  site-agent bench extract cohort --ibsi ../shared/ibsi --lesions 100 --threads 2"
    )]
    Cohort {
        #[arg(long, default_value = "../shared/ibsi")]
        ibsi: PathBuf,
        #[arg(long, default_value_t = 100)]
        lesions: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Work folder (default: a temporary folder, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// A synthetic 512×512×300 CT with 10 lesions: peak memory of `extract --manifest`.
    #[command(after_help = "Example:\n  site-agent bench extract big --dir /tmp/big")]
    Big {
        /// Work folder (the CT is ~60 MB compressed).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
}

/// Peak resident memory of this process in MiB (`VmHWM`), if the platform reports it.
pub fn peak_memory_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time (s) this thread has run, from `/proc/thread-self/schedstat` (ns); a shared machine
/// inflates wall time but much less the CPU time of a single-threaded computation.
pub fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns * 1e-9)
}

/// CPU time (s, user + system) of the whole process so far, from `/proc/self/stat` (clock ticks,
/// assumed 100 per second as on every Linux configuration in use).
pub fn process_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn best_median(t: &mut [f64]) -> (f64, f64) {
    t.sort_by(f64::total_cmp);
    (t[0], t[t.len() / 2])
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Run a bench; prints a small report on stdout.
pub fn run(a: &BenchArgs) -> anyhow::Result<()> {
    let BenchWhat::Extract { case } = &a.what;
    match case {
        BenchCase::Phantom { ibsi, repeat } => phantom(ibsi, *repeat),
        BenchCase::Cohort {
            ibsi,
            lesions,
            threads,
            dir,
            repeat,
        } => cohort(ibsi, *lesions, *threads, dir.as_deref(), *repeat),
        BenchCase::Big {
            dir,
            threads,
            repeat,
        } => big(dir, *threads, *repeat),
    }
}

fn phantom_paths(ibsi: &Path) -> (PathBuf, PathBuf) {
    let d = ibsi.join("ct_phantom/nifti");
    (d.join("image/phantom.nii.gz"), d.join("mask/mask.nii.gz"))
}

fn phantom(ibsi: &Path, repeat: usize) -> anyhow::Result<()> {
    let (ip, mp) = phantom_paths(ibsi);
    let settings = Settings::paper();
    let (mut total, mut extract, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    let mut n_features = 0;
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        let img = io::read_image(&ip).map_err(err)?;
        let dims: [usize; 3] = img.data.dim().into();
        let mask =
            io::read_mask(&mp, &img.geometry, dims, &MaskSelection::default()).map_err(err)?;
        let t1 = Instant::now();
        let c1 = thread_cpu_seconds();
        let f = extract_roi(&img, &mask, &settings).map_err(err)?;
        if let (Some(a), Some(b)) = (c1, thread_cpu_seconds()) {
            cpu.push(b - a);
        }
        extract.push(t1.elapsed().as_secs_f64());
        total.push(t0.elapsed().as_secs_f64());
        n_features = f.len();
    }
    let (tb, tm) = best_median(&mut total);
    let (eb, em) = best_median(&mut extract);
    println!(
        "phantom GTV, preset paper, {n_features} features, {} runs, rayon threads {}",
        total.len(),
        rayon::current_num_threads()
    );
    println!("  read + extract: best {tb:.3} s, median {tm:.3} s");
    println!("  extract only:   best {eb:.3} s, median {em:.3} s (wall)");
    if !cpu.is_empty() {
        let (cb, cm) = best_median(&mut cpu);
        println!("  extract only:   best {cb:.3} s, median {cm:.3} s (CPU time of the thread)");
    }
    if let Some(m) = peak_memory_mib() {
        println!("  peak memory (VmHWM): {m:.0} MiB");
    }
    Ok(())
}

/// Write `n` crops of the phantom (each shifted by up to ±6 voxels in-plane and ±2 slices, so
/// every lesion sits differently on the 1 mm grid) and a manifest; returns the manifest path.
pub fn write_phantom_cohort(ibsi: &Path, n: usize, dir: &Path) -> anyhow::Result<PathBuf> {
    let (ip, mp) = phantom_paths(ibsi);
    let img = io::read_image(&ip).map_err(err)?;
    let dims: [usize; 3] = img.data.dim().into();
    let mask = io::read_mask(&mp, &img.geometry, dims, &MaskSelection::default()).map_err(err)?;
    let mut manifest = String::from("patient_id,lesion_id,image,mask\n");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |m: i64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % (2 * m as u64 + 1)) as i64 - m
    };
    let (nz, ny, nx) = img.data.dim();
    for k in 0..n {
        let (dz, dy, dx) = (next(2), next(6), next(6));
        // Crop [2+dz .. nz-2+dz) × [8+dy .. ny-8+dy) × [8+dx .. nx-8+dx): the GTV stays inside.
        let (z0, y0, x0) = ((2 + dz) as usize, (8 + dy) as usize, (8 + dx) as usize);
        let (z1, y1, x1) = (z0 + nz - 4, y0 + ny - 16, x0 + nx - 16);
        let o = img
            .geometry
            .index_to_world([z0 as f64, y0 as f64, x0 as f64]);
        let geometry = Geometry {
            origin: [o[2], o[1], o[0]],
            ..img.geometry.clone()
        };
        let r = [(z0, z1), (y0, y1), (x0, x1)];
        let crop = Volume {
            data: window(img.data.view(), r).to_owned(),
            geometry: geometry.clone(),
        };
        let m = Volume {
            data: window(mask.data.view(), r).mapv(|b| if b { 1.0 } else { 0.0 }),
            geometry,
        };
        let (a, b) = (format!("p{k:03}_ct.nii.gz"), format!("p{k:03}_gtv.nii.gz"));
        io::nifti::write_nifti(&dir.join(&a), &crop, true).map_err(err)?;
        io::nifti::write_nifti(&dir.join(&b), &m, true).map_err(err)?;
        manifest.push_str(&format!("P{k:03},GTV,{a},{b}\n"));
    }
    let p = dir.join("manifest.csv");
    std::fs::write(&p, manifest)?;
    Ok(p)
}

/// Sub-block `[a, b)` per axis (`ndarray::s!` expands to code `forbid(unsafe_code)` rejects).
fn window<T>(mut a: ArrayView3<'_, T>, r: [(usize, usize); 3]) -> ArrayView3<'_, T> {
    a.slice_each_axis_inplace(|ax| {
        let (lo, hi) = r[ax.axis.index()];
        Slice::from(lo..hi)
    });
    a
}

fn cohort(
    ibsi: &Path,
    n: usize,
    threads: usize,
    dir: Option<&Path>,
    repeat: usize,
) -> anyhow::Result<()> {
    let tmp;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.to_path_buf()
        }
        None => {
            tmp = tempfile_dir()?;
            tmp.0.clone()
        }
    };
    let t = Instant::now();
    let manifest = write_phantom_cohort(ibsi, n, &dir)?;
    println!(
        "generated {n} phantom crops in {:.1} s ({})",
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    let (mut times, mut cpus) = (Vec::new(), Vec::new());
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let c0 = process_cpu_seconds();
        let summary = crate::extract::run_manifest(
            &manifest,
            &Settings::paper(),
            LesionAggregation::Mean,
            &dir.join("features.csv"),
            Some(threads),
        )
        .map_err(err)?;
        times.push(t.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (c0, process_cpu_seconds()) {
            cpus.push(b - a);
        }
        println!("  {summary}");
    }
    let (b, m) = best_median(&mut times);
    println!(
        "cohort of {n} lesions, preset paper, {threads} threads: best {b:.1} s, median {m:.1} s wall ({} runs)",
        times.len()
    );
    if !cpus.is_empty() {
        let (cb, cm) = best_median(&mut cpus);
        println!(
            "  process CPU time (user + system): best {cb:.1} s, median {cm:.1} s (/ {threads} = wall on {threads} idle cores: {:.1} s)",
            cb / threads as f64
        );
    }
    if let Some(m) = peak_memory_mib() {
        println!("  peak memory (VmHWM, includes the generator): {m:.0} MiB");
    }
    Ok(())
}

/// A temporary folder removed on drop (no extra dependency: the bench is not a test).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<TempDir> {
    let p = std::env::temp_dir().join(format!("fedrad-bench-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}

/// Write the 512×512×300 synthetic CT (0.8×0.8×1.5 mm, body ~40 HU with texture, air outside,
/// lung-like low-density region, 10 spherical lesions of radius 6–25 mm with their own texture)
/// and a label map with labels 1..10; returns the manifest path.
pub fn write_big_case(dir: &Path) -> anyhow::Result<PathBuf> {
    let (nz, ny, nx) = (300usize, 512usize, 512usize);
    let sp = [1.5, 0.8, 0.8];
    let geometry = Geometry::with_spacing(sp);
    // (centre z, y, x in voxels, radius mm)
    let lesions: Vec<([f64; 3], f64)> = (0..10)
        .map(|k| {
            let a = k as f64 * 0.6283;
            (
                [
                    60.0 + 18.0 * k as f64,
                    256.0 + 120.0 * a.sin(),
                    256.0 + 120.0 * a.cos(),
                ],
                6.0 + 2.0 * k as f64,
            )
        })
        .collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let mut labels = Array3::<f64>::zeros((nz, ny, nx));
    let data = Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| {
        let (fz, fy, fx) = (z as f64, y as f64, x as f64);
        let n = noise();
        let r2 = (fy - 256.0).powi(2) + (fx - 256.0).powi(2);
        if r2 > 230.0f64.powi(2) {
            return (-1000.0 + 5.0 * n).round();
        }
        for (k, (c, r)) in lesions.iter().enumerate() {
            let d2 = ((fz - c[0]) * sp[0]).powi(2)
                + ((fy - c[1]) * sp[1]).powi(2)
                + ((fx - c[2]) * sp[2]).powi(2);
            if d2 <= r * r {
                labels[[z, y, x]] = (k + 1) as f64;
                return (70.0 + 40.0 * (fx / 3.0).sin() * (fy / 4.0).cos() + 25.0 * n).round();
            }
        }
        (40.0 + 60.0 * (fx / 6.0).sin() * (fy / 9.0).cos() + 25.0 * (fz / 4.0).sin() + 30.0 * n)
            .round()
    });
    let img = Volume {
        data,
        geometry: geometry.clone(),
    };
    io::nifti::write_nifti(&dir.join("big_ct.nii.gz"), &img, true).map_err(err)?;
    drop(img);
    let lab = Volume {
        data: labels,
        geometry,
    };
    io::nifti::write_nifti(&dir.join("big_labels.nii.gz"), &lab, true).map_err(err)?;
    let mut manifest = String::from("patient_id,lesion_id,image,mask,mask_label\n");
    for k in 1..=10 {
        manifest.push_str(&format!(
            "BIG,L{k:02},big_ct.nii.gz,big_labels.nii.gz,{k}\n"
        ));
    }
    let p = dir.join("manifest.csv");
    std::fs::write(&p, manifest)?;
    Ok(p)
}

fn big(dir: &Path, threads: usize, repeat: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let manifest = dir.join("manifest.csv");
    if !manifest.exists() {
        let t = Instant::now();
        write_big_case(dir)?;
        println!(
            "generated the 512x512x300 CT + 10-lesion label map in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let exe = std::env::current_exe()?;
    let (mut times, mut mems) = (Vec::new(), Vec::new());
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let out = std::process::Command::new(&exe)
            .args(["extract", "--manifest"])
            .arg(&manifest)
            .args([
                "--preset",
                "paper",
                "--threads",
                &threads.to_string(),
                "--out",
            ])
            .arg(dir.join("features.csv"))
            .output()?;
        let secs = t.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            anyhow::bail!("extract failed: {stderr}");
        }
        println!("  {}", stderr.trim());
        let mem = stderr
            .split("peak memory (VmHWM) ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<f64>().ok());
        times.push(secs);
        if let Some(m) = mem {
            mems.push(m);
        }
    }
    let (b, m) = best_median(&mut times);
    println!(
        "512x512x300 CT, 10 lesions, preset paper, {threads} threads: wall best {b:.1} s, median {m:.1} s"
    );
    if !mems.is_empty() {
        let (mb, mm) = best_median(&mut mems);
        println!(
            "  peak memory of the extract process (VmHWM): best {mb:.0} MiB, median {mm:.0} MiB"
        );
    }
    Ok(())
}
