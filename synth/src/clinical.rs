//! Clinical record of one synthetic patient and how it is drawn from the latent response.
//!
//! Value conventions follow `shared/examples/cohort_example.csv`: sex `M`/`F`, grade `G1`/`G2`,
//! met_pattern `single`/`multifocal`/`diffuse`, response / pfs_event / ecog / prior_surgery as
//! `0`/`1`, Ki-67 in %, times in months with one decimal.

use rand::Rng;
use rand_distr::{Distribution, Exp, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::params::{ClinicalEffects, SurvivalParams};

/// Column order of `clinical.csv` (the example cohort's clinical columns).
pub const CLINICAL_COLUMNS: [&str; 13] = [
    "patient_id",
    "site",
    "response",
    "pfs_months",
    "pfs_event",
    "age",
    "sex",
    "ecog",
    "grade",
    "ki67",
    "months_dx_to_tx",
    "met_pattern",
    "prior_surgery",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    M,
    F,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grade {
    G1,
    G2,
}

/// Liver metastasis pattern; it also fixes the number of segmented target lesions: single → 1,
/// multifocal → 2 or 3, diffuse → 3 (at most three target lesions are segmented per patient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetPattern {
    Single,
    Multifocal,
    Diffuse,
}

impl MetPattern {
    pub fn as_str(self) -> &'static str {
        match self {
            MetPattern::Single => "single",
            MetPattern::Multifocal => "multifocal",
            MetPattern::Diffuse => "diffuse",
        }
    }
}

/// One row of `clinical.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClinicalRecord {
    pub patient_id: String,
    pub site: String,
    /// Objective response (the latent class that also shapes the lesions).
    pub response: bool,
    /// PFS time in months, rounded to 0.1 (at least 0.1).
    pub pfs_months: f64,
    /// `true` = progression or death observed, `false` = censored.
    pub pfs_event: bool,
    pub age: u32,
    pub sex: Sex,
    /// ECOG performance status, 0 or 1.
    pub ecog: u8,
    pub grade: Grade,
    /// Ki-67 index (%), rounded to 0.1, in 1–20.
    pub ki67: f64,
    /// Months from diagnosis to treatment, rounded to 0.1, in 1–85.
    pub months_dx_to_tx: f64,
    pub met_pattern: MetPattern,
    pub prior_surgery: bool,
}

impl ClinicalRecord {
    /// The CSV cells in [`CLINICAL_COLUMNS`] order.
    pub fn csv_row(&self) -> Vec<String> {
        let b = |v: bool| if v { "1" } else { "0" }.to_string();
        vec![
            self.patient_id.clone(),
            self.site.clone(),
            b(self.response),
            format!("{:.1}", self.pfs_months),
            b(self.pfs_event),
            self.age.to_string(),
            match self.sex {
                Sex::M => "M",
                Sex::F => "F",
            }
            .to_string(),
            self.ecog.to_string(),
            match self.grade {
                Grade::G1 => "G1",
                Grade::G2 => "G2",
            }
            .to_string(),
            format!("{:.1}", self.ki67),
            format!("{:.1}", self.months_dx_to_tx),
            self.met_pattern.as_str().to_string(),
            b(self.prior_surgery),
        ]
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn normal<R: Rng>(rng: &mut R) -> f64 {
    rng.sample(StandardNormal)
}

/// Draw the clinical variables of a patient with the given response (PFS is drawn separately).
/// Response changes grade, ECOG, metastasis pattern and Ki-67 only slightly (see
/// [`ClinicalEffects`]); age, sex, prior surgery and time to treatment carry no signal.
pub(crate) fn draw_clinical<R: Rng>(
    rng: &mut R,
    patient_id: String,
    site: String,
    response: bool,
    p: &ClinicalEffects,
) -> ClinicalRecord {
    let r = usize::from(response);
    let age = (p.age[0] + p.age[1] * normal(rng))
        .round()
        .clamp(30.0, 82.0) as u32;
    let sex = if rng.gen_bool(p.p_male) {
        Sex::M
    } else {
        Sex::F
    };
    let ecog = u8::from(rng.gen_bool(p.p_ecog1[r]));
    let grade = if rng.gen_bool(p.p_grade_g1[r]) {
        Grade::G1
    } else {
        Grade::G2
    };
    let g = usize::from(grade == Grade::G2);
    let log_ki = p.ki67_median[g].ln()
        + if response {
            p.responder_log_ki67_shift
        } else {
            0.0
        }
        + p.ki67_log_sd * normal(rng);
    let ki67 = round1(log_ki.exp().clamp(1.0, 20.0));
    let months = round1(
        (p.months_dx_to_tx[0].ln() + p.months_dx_to_tx[1] * normal(rng))
            .exp()
            .clamp(1.0, 85.0),
    );
    let u: f64 = rng.r#gen();
    let pm = p.p_met_pattern[r];
    let met_pattern = if u < pm[0] {
        MetPattern::Single
    } else if u < pm[0] + pm[1] {
        MetPattern::Multifocal
    } else {
        MetPattern::Diffuse
    };
    let prior_surgery = rng.gen_bool(p.p_prior_surgery);
    ClinicalRecord {
        patient_id,
        site,
        response,
        pfs_months: 0.0,
        pfs_event: false,
        age,
        sex,
        ecog,
        grade,
        ki67,
        months_dx_to_tx: months,
        met_pattern,
        prior_surgery,
    }
}

/// Number of segmented target lesions for a metastasis pattern.
pub(crate) fn lesion_count<R: Rng>(rng: &mut R, pattern: MetPattern) -> usize {
    match pattern {
        MetPattern::Single => 1,
        MetPattern::Multifocal => {
            if rng.gen_bool(0.6) {
                2
            } else {
                3
            }
        }
        MetPattern::Diffuse => 3,
    }
}

/// Draw (PFS months, event): event time ~ Exp(λ) with λ = ln2 / median for non-responders and
/// λ · HR for responders; drop-out ~ Exp(censoring rate); administrative censoring at the end of
/// follow-up. Observed time = min of the three, rounded to 0.1 month (at least 0.1).
pub(crate) fn draw_pfs<R: Rng>(rng: &mut R, response: bool, s: &SurvivalParams) -> (f64, bool) {
    let base = std::f64::consts::LN_2 / s.nonresponder_median_months;
    let rate = if response {
        base * s.responder_hazard_ratio
    } else {
        base
    };
    let t_event: f64 = Exp::new(rate).expect("positive rate").sample(rng);
    let t_drop: f64 = if s.censoring_rate_per_month > 0.0 {
        Exp::new(s.censoring_rate_per_month)
            .expect("positive rate")
            .sample(rng)
    } else {
        f64::INFINITY
    };
    let t_cens = t_drop.min(s.follow_up_months);
    let (t, event) = if t_event <= t_cens {
        (t_event, true)
    } else {
        (t_cens, false)
    };
    (round1(t).max(0.1), event)
}
