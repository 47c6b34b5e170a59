//! The `synth` subcommand of the site agent: argument parsing and the one-call entry point.

use std::path::PathBuf;
use std::time::Instant;

use crate::params::CohortParams;
use crate::plan::plan_cohort;
use crate::write::{WriteOptions, write_cohort};

/// `site-agent synth` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Example:
  site-agent synth --sites 7 --patients 102 --seed 42 --out demo-data

Writes, for each site S01, S02, ...:
  DIR/<site>/images/<patient>.nii.gz       CT crop around the liver, int16 HU
  DIR/<site>/masks/<patient>_L<k>.nii.gz   one binary mask per metastasis (1-3 per patient)
  DIR/<site>/lesions.csv                   manifest: patient_id,lesion_id,image,mask
                                           (paths relative to the site folder)
  DIR/<site>/clinical.csv                  patient_id,site,response,pfs_months,pfs_event,age,sex,
                                           ecog,grade,ki67,months_dx_to_tx,met_pattern,prior_surgery
and DIR/cohort.json with the generator parameters, the seed and each site's scanner.
The same arguments always produce byte-identical files.")]
pub struct SynthArgs {
    /// Number of sites (hospitals), named S01, S02, ...; site sizes are deliberately uneven.
    #[arg(long, default_value_t = 7)]
    pub sites: usize,
    /// Number of patients over all sites, named P00001, P00002, ...
    #[arg(long, default_value_t = 102)]
    pub patients: usize,
    /// Random seed; the same seed gives the same cohort, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output folder (created if missing; must be empty unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Write into a non-empty folder, overwriting generated files of the same name.
    #[arg(long)]
    pub force: bool,
}

/// Plan, render and write the cohort described by `args`, then print a one-line summary.
pub fn cli_run(args: SynthArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let params = CohortParams::new(args.sites, args.patients, args.seed);
    let plan = plan_cohort(&params)?;
    let summary = write_cohort(&plan, &args.out, &WriteOptions { force: args.force })?;
    println!(
        "wrote {} patients with {} lesions over {} sites to {} ({} files, {:.1} MB) in {:.1} s",
        summary.n_patients,
        summary.n_lesions,
        summary.n_sites,
        args.out.display(),
        summary.n_files,
        summary.bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
