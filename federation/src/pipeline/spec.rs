//! The `kind = "pipeline"` study: the published protocol (ComBat → z-score → LASSO + bootstrap →
//! stacked SVM / forest / boosted trees → MLP, and the clinical comparator) under repeated nested
//! cross-validation, as the statistician writes it in `study.toml`.

use crate::study::HarmonizeMode;
use learners::CvScheme;
use learners::lbfgs::LbfgsConfig;
use learners::mlp::{Activation, MlpSpec};
use learners::site::SiteTrainingConfig;
use serde::{Deserialize, Serialize};

/// The whole pipeline study. Every table here has defaults except the columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Outcome column (responder = `positive_label`).
    pub label_column: String,
    #[serde(default = "default_positive")]
    pub positive_label: String,
    #[serde(default = "default_negative")]
    pub negative_label: String,
    /// Candidate radiomics feature columns (harmonised, z-scored, then selected by the LASSO).
    /// Empty (the key omitted) = resolved at the start of the study from the sites' column
    /// names: every column numeric and complete at every site, minus [`Self::excluded_columns`]
    /// (`super::driver::resolve_features`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Columns that are never features when `features` is omitted, besides the label, batch,
    /// clinical-comparator and survival columns (which are always left out): e.g. clinical
    /// variables the comparator does not use. Naming a column a table does not have is harmless.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_columns: Vec<String>,
    /// ComBat batch: a column nested within sites (e.g. scanner); absent = the site is the batch.
    #[serde(default)]
    pub batch_column: Option<String>,
    #[serde(default)]
    pub combat_mode: HarmonizeMode,
    #[serde(default)]
    pub cv: CvSpec,
    #[serde(default)]
    pub lasso: PipelineLasso,
    /// The sites' base learners: size rules and random-search spaces (`learners::site`).
    #[serde(default)]
    pub learners: SiteTrainingConfig,
    #[serde(default)]
    pub meta: MetaSpec,
    /// The clinical comparator; absent = no comparator.
    #[serde(default)]
    pub clinical: Option<ClinicalSpec>,
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// Send the LASSO stage's sums (`crate::lasso::secure`), the meta-model's loss/gradient
    /// sums, the clinical comparator's IRLS sums and the metrics stage's score count tables
    /// pairwise-masked, so that the aggregator learns only
    /// their sums over sites (`crate::secure`; needs at least 3 sites). The other stages stay
    /// plain. Omitted from the canonical JSON when off, so existing study hashes do not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure_aggregation: bool,
    /// What the aggregator does when a site misses the deadline of a masked round
    /// (`crate::engine`): pause the study naming it (the default), or restart the round without
    /// it and leave it out of the rest of the study. Omitted from the canonical JSON at its
    /// default.
    #[serde(default, skip_serializing_if = "MaskedDropout::is_pause")]
    pub on_masked_dropout: MaskedDropout,
}

/// The study's rule for a site that misses a masked round's deadline (`on_masked_dropout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskedDropout {
    /// Pause the study naming the site; it resumes when the site answers (as for plain rounds).
    #[default]
    Pause,
    /// Restart the round without the site under a fresh round id (the survivors re-mask), if at
    /// least 3 sites remain; the site takes no further part in the study and the output names
    /// it with the round and the reason. Fewer than 3 left: pause as above.
    ContinueWithoutSite,
}

impl MaskedDropout {
    fn is_pause(&self) -> bool {
        *self == MaskedDropout::Pause
    }
}

/// Repeated nested cross-validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CvSpec {
    pub seed: u64,
    /// R (the study: 100).
    pub repeats: u32,
    /// K outer folds (the study: 5).
    pub outer_folds: u32,
    /// Inner folds of the base learners' hyper-parameter search (the study: 5).
    pub inner_folds: u32,
    /// Repeats run together in one batch of rounds. Larger batches mean fewer round trips but
    /// bigger messages and more state at the sites; every batch's rounds carry all its fits.
    pub repeats_per_batch: u32,
}

impl Default for CvSpec {
    fn default() -> Self {
        Self {
            seed: 20240101,
            repeats: 100,
            outer_folds: 5,
            inner_folds: 5,
            repeats_per_batch: 10,
        }
    }
}

impl CvSpec {
    pub fn scheme(&self) -> CvScheme {
        CvScheme {
            seed: self.seed,
            repeats: self.repeats,
            outer_folds: self.outer_folds,
            inner_folds: self.inner_folds,
        }
    }
}

/// LASSO + bootstrap selection inside each outer training set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineLasso {
    /// CV folds for λ (cv.glmnet's default 10).
    pub nfolds: u32,
    pub nlambda: usize,
    /// Bootstrap replicates B for the selection frequencies (the study: 100).
    pub bootstrap: u32,
    /// Features kept: the top k by bootstrap frequency (the study: 5).
    pub top_k: usize,
}

impl Default for PipelineLasso {
    fn default() -> Self {
        Self {
            nfolds: 10,
            nlambda: 100,
            bootstrap: 100,
            top_k: 5,
        }
    }
}

/// The MLP meta-model on the three base-learner probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaSpec {
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// L2 penalty (scikit-learn `alpha`).
    pub alpha: f64,
    pub optimiser: LbfgsConfig,
}

impl Default for MetaSpec {
    /// scikit-learn's `MLPClassifier(solver="lbfgs")` defaults (100 relu units, α = 1e-4).
    fn default() -> Self {
        let d = MlpSpec::default();
        Self {
            hidden: d.hidden,
            activation: d.activation,
            alpha: d.alpha,
            optimiser: d.optimiser,
        }
    }
}

impl MetaSpec {
    pub fn mlp(&self, n_inputs: usize) -> MlpSpec {
        MlpSpec {
            n_inputs,
            hidden: self.hidden.clone(),
            activation: self.activation,
            alpha: self.alpha,
            optimiser: self.optimiser,
        }
    }
}

/// The clinical comparator: multivariable logistic regression by exact federated IRLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClinicalSpec {
    /// Numeric columns, entered as they are.
    #[serde(default)]
    pub numeric: Vec<String>,
    /// Categorical columns with their levels; the first level is the reference. Levels are
    /// declared (not discovered) so that no site reveals which levels it holds.
    #[serde(default)]
    pub categorical: Vec<CategoricalColumn>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoricalColumn {
    pub column: String,
    pub levels: Vec<String>,
}

impl ClinicalSpec {
    /// Design columns after dummy coding (without the intercept).
    pub fn column_names(&self) -> Vec<String> {
        let mut out = self.numeric.clone();
        for c in &self.categorical {
            for l in c.levels.iter().skip(1) {
                out.push(format!("{}={l}", c.column));
            }
        }
        out
    }
}

/// The pooled metrics at the end of the study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSpec {
    /// Bins of the shared score grid for the count tables.
    pub bins: u32,
    /// Stratified bootstrap replicates for the CIs.
    pub bootstrap: u32,
    pub seed: u64,
    /// Progression-free survival time column (months), for Kaplan-Meier / Cox.
    pub time_column: Option<String>,
    /// Event indicator column (1 = progression or death, 0 = censored).
    pub event_column: Option<String>,
    /// Under `secure_aggregation`: every released cell of the pooled score tables holds at least
    /// this many patients (merged on the sum over sites, not at each site); a site whose policy
    /// `min_count` is larger refuses the round. Absent = 5, the policy default. Omitted from the
    /// canonical JSON when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_min_count: Option<u64>,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            bins: 1000,
            bootstrap: 2000,
            seed: 1,
            time_column: None,
            event_column: None,
            secure_min_count: None,
        }
    }
}

impl MetricsSpec {
    /// The pooled score tables' minimum cell size under secure aggregation.
    pub fn pooled_min_count(&self) -> u64 {
        self.secure_min_count.unwrap_or(5)
    }
}

fn default_positive() -> String {
    "1".into()
}
fn default_negative() -> String {
    "0".into()
}

impl PipelineSpec {
    /// Whether the feature columns are resolved from the sites' tables at the start of the study
    /// (`features` omitted) rather than listed in the study file.
    pub fn resolves_features(&self) -> bool {
        self.features.is_empty()
    }

    /// The columns that are never features: the label, the batch column, the clinical
    /// comparator's columns, the survival columns and `exclude_columns`, in that order.
    pub fn excluded_columns(&self) -> Vec<String> {
        let mut out = vec![self.label_column.clone()];
        out.extend(self.batch_column.iter().cloned());
        if let Some(c) = &self.clinical {
            out.extend(c.numeric.iter().cloned());
            out.extend(c.categorical.iter().map(|c| c.column.clone()));
        }
        out.extend(self.metrics.time_column.iter().cloned());
        out.extend(self.metrics.event_column.iter().cloned());
        for c in &self.exclude_columns {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }

    /// Every check that does not need data: the message says which key to change.
    pub fn validate(&self) -> Result<(), String> {
        if !self.exclude_columns.is_empty() && !self.features.is_empty() {
            return Err("analysis.exclude_columns applies only when analysis.features is omitted (the features are then every column numeric at every site, minus the excluded ones); remove one of the two keys".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.features {
            if !seen.insert(f) {
                return Err(format!(
                    "feature {f:?} is listed twice in analysis.features"
                ));
            }
        }
        if seen.contains(&self.label_column) {
            return Err(format!(
                "the label column {:?} cannot also be a feature",
                self.label_column
            ));
        }
        if self.positive_label == self.negative_label {
            return Err("positive_label and negative_label must differ".into());
        }
        self.cv
            .scheme()
            .validate()
            .map_err(|e| format!("analysis.cv: {e}"))?;
        if self.cv.repeats_per_batch == 0 {
            return Err("analysis.cv.repeats_per_batch must be at least 1".into());
        }
        let l = &self.lasso;
        if l.nfolds < 3 {
            return Err(format!(
                "analysis.lasso.nfolds must be at least 3 (cv.glmnet's minimum), got {}",
                l.nfolds
            ));
        }
        if l.nlambda < 2 {
            return Err("analysis.lasso.nlambda must be at least 2".into());
        }
        // With resolved features the upper bound is checked once they are known (the driver).
        if l.top_k == 0 || (!self.features.is_empty() && l.top_k > self.features.len()) {
            return Err(if self.features.is_empty() {
                format!("analysis.lasso.top_k must be at least 1, got {}", l.top_k)
            } else {
                format!(
                    "analysis.lasso.top_k must be between 1 and the number of features ({}), got {}",
                    self.features.len(),
                    l.top_k
                )
            });
        }
        if l.bootstrap == 0 {
            return Err(
                "analysis.lasso.bootstrap must be at least 1 (the top-k comes from the bootstrap frequencies)"
                    .into(),
            );
        }
        self.learners
            .search
            .validate()
            .map_err(|e| format!("analysis.learners: {e}"))?;
        self.meta
            .mlp(3)
            .validate()
            .map_err(|e| format!("analysis.meta: {e}"))?;
        if let Some(c) = &self.clinical {
            if c.numeric.is_empty() && c.categorical.is_empty() {
                return Err("analysis.clinical lists no columns; remove the table or add numeric/categorical columns".into());
            }
            for cat in &c.categorical {
                if cat.levels.len() < 2 {
                    return Err(format!(
                        "clinical categorical column {:?} needs at least two levels (the first is the reference)",
                        cat.column
                    ));
                }
            }
        }
        if self.metrics.bins < 2 {
            return Err("analysis.metrics.bins must be at least 2".into());
        }
        if self.metrics.secure_min_count == Some(0) {
            return Err(
                "analysis.metrics.secure_min_count must be at least 1 (5 is the usual choice)"
                    .into(),
            );
        }
        if self.on_masked_dropout != MaskedDropout::Pause && !self.secure_aggregation {
            return Err("analysis.on_masked_dropout applies to masked rounds only; set secure_aggregation = true or remove it".into());
        }
        if self.metrics.time_column.is_some() != self.metrics.event_column.is_some() {
            return Err(
                "analysis.metrics: give both time_column and event_column, or neither".into(),
            );
        }
        Ok(())
    }
}
