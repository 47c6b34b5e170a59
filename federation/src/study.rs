//! Study specifications (the statistician's `study.toml`) and their hash.

use crate::ids::{StudyHash, StudyId};
pub use crate::pipeline::spec::MaskedDropout;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A study as submitted to the aggregator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    pub id: StudyId,
    #[serde(default)]
    pub title: String,
    pub analysis: AnalysisSpec,
}

/// Which analysis the study runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AnalysisSpec {
    /// Baseline characteristics by outcome group (the study's Table 1).
    Table1(Table1Spec),
    /// Distributed ComBat harmonisation of feature columns (batch = site or a nested column).
    Harmonize(HarmonizeSpec),
    /// Federated LASSO logistic regression (glmnet), CV λ and bootstrap selection frequencies.
    Lasso(LassoSpec),
    Pipeline(Box<crate::pipeline::PipelineSpec>),
}

impl AnalysisSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            AnalysisSpec::Table1(_) => "table1",
            AnalysisSpec::Harmonize(_) => "harmonize",
            AnalysisSpec::Lasso(_) => "lasso",
            AnalysisSpec::Pipeline(_) => "pipeline",
        }
    }
}

/// Distributed ComBat (Chen et al. 2022) as in neuroCombat / `sva::ComBat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarmonizeSpec {
    /// Feature columns to harmonise, in output order.
    pub features: Vec<String>,
    /// Column holding the batch (e.g. scanner), nested within sites; absent = each site is one
    /// batch, labelled with its site id.
    #[serde(default)]
    pub batch_column: Option<String>,
    /// Covariates whose effects ComBat preserves, in design order.
    #[serde(default)]
    pub covariates: Vec<String>,
    /// Those of `covariates` that are categorical (one-hot, first sorted level as reference).
    #[serde(default)]
    pub categorical: Vec<String>,
    #[serde(default)]
    pub mode: HarmonizeMode,
    /// Send W'W, W'Y and the residual sums pairwise-masked, so that the aggregator learns only
    /// their sums over sites (`crate::secure`; needs at least 3 sites). Omitted from the
    /// canonical JSON when off, so existing study hashes do not change.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secure_aggregation: bool,
    /// What the aggregator does when a site misses the deadline of a masked round
    /// (`crate::engine`): `"pause"` the study naming it (the default), or
    /// `"continue_without_site"`: leave it out of the rest of the study and restart over the
    /// survivors (at least 3 left; the harmonisation restarts from its cross-products round, see `crate::harmonize`). Needs `secure_aggregation`. Omitted from
    /// the canonical JSON at its default, so existing study hashes do not change.
    #[serde(default, skip_serializing_if = "is_pause")]
    pub on_masked_dropout: MaskedDropout,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_pause(d: &MaskedDropout) -> bool {
    *d == MaskedDropout::Pause
}

/// LASSO-logistic feature selection as `cv.glmnet(family = "binomial")` on the pooled rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LassoSpec {
    pub label_column: String,
    #[serde(default = "default_positive")]
    pub positive_label: String,
    #[serde(default = "default_negative")]
    pub negative_label: String,
    /// Feature columns, in output order.
    pub features: Vec<String>,
    #[serde(default = "default_nfolds")]
    pub nfolds: u32,
    /// Fold ids (1..=nfolds) taken from this column instead of a stratified draw at each site.
    #[serde(default)]
    pub foldid_column: Option<String>,
    #[serde(default = "default_nlambda")]
    pub nlambda: usize,
    /// Bootstrap replicates for selection frequencies (0 = none).
    #[serde(default)]
    pub bootstrap: u32,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Send every round's sums (the standardisation moments and the IRLS sums of every fit)
    /// pairwise-masked, so that the aggregator learns only their sums over sites
    /// (`crate::lasso::secure`; needs at least 3 sites; one more round, the key round). Omitted
    /// from the canonical JSON when off, so existing study hashes do not change.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secure_aggregation: bool,
    /// What the aggregator does when a site misses the deadline of a masked round
    /// (`crate::engine`): `"pause"` the study naming it (the default), or
    /// `"continue_without_site"`: leave it out of the rest of the study and restart over the
    /// survivors (at least 3 left; every fit restarts from its moments round, see `crate::lasso`). Needs `secure_aggregation`. Omitted from
    /// the canonical JSON at its default, so existing study hashes do not change.
    #[serde(default, skip_serializing_if = "is_pause")]
    pub on_masked_dropout: MaskedDropout,
}

fn default_nfolds() -> u32 {
    10
}
fn default_nlambda() -> usize {
    100
}
fn default_top_k() -> usize {
    5
}
fn default_seed() -> u64 {
    1
}

/// The empirical-Bayes variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HarmonizeMode {
    /// Parametric priors (sva default).
    #[default]
    Parametric,
    /// Non-parametric priors (`par.prior = FALSE`).
    Nonparametric,
    /// Adjust means only (`mean.only = TRUE`).
    MeanOnly,
}

/// Table 1: every variable summarised overall and by outcome group, with a test per variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table1Spec {
    pub label_column: String,
    #[serde(default = "default_positive")]
    pub positive_label: String,
    #[serde(default = "default_negative")]
    pub negative_label: String,
    /// Variables in output order.
    pub variables: Vec<String>,
    /// Those of `variables` summarised as counts per level (χ² test); the others are continuous
    /// (mean ± SD with Student's t, median [IQR] with Mann-Whitney U).
    #[serde(default)]
    pub categorical: Vec<String>,
    /// Width, relative to the variable's tree root, below which a histogram cell is not split
    /// further: medians and ties are exact to this resolution.
    #[serde(default = "default_resolution")]
    pub resolution: f64,
    /// Tree levels a site may descend per histogram round (round trips vs payload).
    #[serde(default = "default_depth_per_round")]
    pub depth_per_round: u8,
    /// Send the summary round's count tables and moment sums pairwise-masked, so that the
    /// aggregator learns only their sums over sites (`crate::secure`; needs at least 3 sites).
    /// Histogram rounds stay plain. Omitted from the canonical JSON when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secure_aggregation: bool,
    /// What the aggregator does when a site misses the deadline of a masked round
    /// (`crate::engine`): `"pause"` the study naming it (the default), or
    /// `"continue_without_site"`: leave it out of the rest of the study and restart over the
    /// survivors (at least 3 left; the masked summary round restarts, see `crate::table1`). Needs `secure_aggregation`. Omitted from
    /// the canonical JSON at its default, so existing study hashes do not change.
    #[serde(default, skip_serializing_if = "is_pause")]
    pub on_masked_dropout: MaskedDropout,
}

fn default_positive() -> String {
    "1".into()
}
fn default_negative() -> String {
    "0".into()
}
fn default_resolution() -> f64 {
    1e-9
}
fn default_depth_per_round() -> u8 {
    4
}

/// A variable's summary kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariableKind {
    Continuous,
    Categorical,
}

impl Table1Spec {
    pub fn kind_of(&self, name: &str) -> VariableKind {
        if self.categorical.iter().any(|c| c == name) {
            VariableKind::Categorical
        } else {
            VariableKind::Continuous
        }
    }
}

/// Why a study spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("study spec: {0}")]
    Parse(String),
    #[error("study spec: {0}")]
    Invalid(String),
}

impl StudySpec {
    /// Parses and validates a `study.toml`.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: StudySpec = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Whether the study's summed rounds run under secure aggregation.
    pub fn secure_aggregation(&self) -> bool {
        match &self.analysis {
            AnalysisSpec::Table1(t) => t.secure_aggregation,
            AnalysisSpec::Harmonize(h) => h.secure_aggregation,
            AnalysisSpec::Pipeline(p) => p.secure_aggregation,
            AnalysisSpec::Lasso(l) => l.secure_aggregation,
        }
    }

    /// The study's rule for a site that misses a masked round's deadline.
    pub fn on_masked_dropout(&self) -> MaskedDropout {
        match &self.analysis {
            AnalysisSpec::Pipeline(p) => p.on_masked_dropout,
            AnalysisSpec::Table1(t) => t.on_masked_dropout,
            AnalysisSpec::Harmonize(h) => h.on_masked_dropout,
            AnalysisSpec::Lasso(l) => l.on_masked_dropout,
        }
    }

    /// Whether a site that misses a masked round's deadline is left out and the round restarted
    /// without it (`on_masked_dropout = "continue_without_site"`, any study kind), rather than
    /// the study pausing (the default).
    pub fn continues_without_dropped_sites(&self) -> bool {
        self.on_masked_dropout() == MaskedDropout::ContinueWithoutSite
    }

    /// Checks what the type system cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !matches!(self.analysis, AnalysisSpec::Pipeline(_))
            && self.on_masked_dropout() != MaskedDropout::Pause
            && !self.secure_aggregation()
        {
            return Err(SpecError::Invalid(
                "analysis.on_masked_dropout applies to masked rounds only; set secure_aggregation = true or remove it".into(),
            ));
        }
        match &self.analysis {
            AnalysisSpec::Pipeline(p) => p.validate().map_err(SpecError::Invalid)?,
            AnalysisSpec::Lasso(l) => {
                if l.features.is_empty() {
                    return Err(SpecError::Invalid(
                        "analysis.features is empty; list the candidate feature columns".into(),
                    ));
                }
                if l.nfolds < 3 {
                    return Err(SpecError::Invalid(format!(
                        "nfolds must be at least 3 (cv.glmnet's minimum), got {}",
                        l.nfolds
                    )));
                }
                if l.nlambda < 2 {
                    return Err(SpecError::Invalid("nlambda must be at least 2".into()));
                }
                if l.top_k == 0 || l.top_k > l.features.len() {
                    return Err(SpecError::Invalid(format!(
                        "top_k must be between 1 and the number of features ({}), got {}",
                        l.features.len(),
                        l.top_k
                    )));
                }
                if l.features.contains(&l.label_column) {
                    return Err(SpecError::Invalid(format!(
                        "the label column {:?} cannot also be a feature",
                        l.label_column
                    )));
                }
            }
            AnalysisSpec::Harmonize(h) => {
                if h.features.is_empty() {
                    return Err(SpecError::Invalid(
                        "analysis.features is empty; list the feature columns to harmonise".into(),
                    ));
                }
                let mut seen = std::collections::BTreeSet::new();
                for f in h.features.iter().chain(&h.covariates) {
                    if !seen.insert(f) {
                        return Err(SpecError::Invalid(format!(
                            "column {f:?} is listed twice (features and covariates must be distinct)"
                        )));
                    }
                }
                if let Some(c) = h.categorical.iter().find(|c| !h.covariates.contains(c)) {
                    return Err(SpecError::Invalid(format!(
                        "categorical covariate {c:?} is not in analysis.covariates"
                    )));
                }
                if let Some(b) = &h.batch_column
                    && seen.contains(b)
                {
                    return Err(SpecError::Invalid(format!(
                        "batch column {b:?} is also a feature or covariate"
                    )));
                }
            }
            AnalysisSpec::Table1(t) => {
                if t.variables.is_empty() {
                    return Err(SpecError::Invalid(
                        "analysis.variables is empty; list the columns to summarise".into(),
                    ));
                }
                let mut seen = std::collections::BTreeSet::new();
                for v in &t.variables {
                    if !seen.insert(v) {
                        return Err(SpecError::Invalid(format!(
                            "variable {v:?} is listed twice in analysis.variables"
                        )));
                    }
                    if v == &t.label_column {
                        return Err(SpecError::Invalid(format!(
                            "variable {v:?} is the label column; it cannot also be summarised"
                        )));
                    }
                }
                if let Some(c) = t.categorical.iter().find(|c| !t.variables.contains(c)) {
                    return Err(SpecError::Invalid(format!(
                        "categorical variable {c:?} is not in analysis.variables"
                    )));
                }
                if t.positive_label == t.negative_label {
                    return Err(SpecError::Invalid(
                        "positive_label and negative_label must differ".into(),
                    ));
                }
                if !(t.resolution > 0.0 && t.resolution < 1.0) {
                    return Err(SpecError::Invalid(format!(
                        "resolution must be in (0, 1), got {}",
                        t.resolution
                    )));
                }
                if !(1..=16).contains(&t.depth_per_round) {
                    return Err(SpecError::Invalid(format!(
                        "depth_per_round must be 1..=16, got {}",
                        t.depth_per_round
                    )));
                }
            }
        }
        Ok(())
    }

    /// Canonical JSON: the exact bytes the hash is taken over and that travel with each task, so a
    /// site can recompute the hash itself.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a StudySpec always serialises")
    }

    /// SHA-256 of the canonical JSON.
    pub fn hash(&self) -> StudyHash {
        hash_canonical(&self.canonical_json())
    }
}

/// SHA-256 (hex) of a canonical spec text.
pub fn hash_canonical(json: &str) -> StudyHash {
    StudyHash(hex::encode(Sha256::digest(json.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
id = "table1-demo"
title = "Baseline characteristics"
[analysis]
kind = "table1"
label_column = "response"
variables = ["age", "sex"]
categorical = ["sex"]
"#;

    #[test]
    fn parses_and_hashes_stably() {
        let s = StudySpec::from_toml(EXAMPLE).unwrap();
        assert_eq!(s.hash(), StudySpec::from_toml(EXAMPLE).unwrap().hash());
        let AnalysisSpec::Table1(t) = &s.analysis else {
            panic!("a table1 spec")
        };
        assert_eq!(t.kind_of("sex"), VariableKind::Categorical);
        assert_eq!(t.kind_of("age"), VariableKind::Continuous);
        let back: StudySpec = serde_json::from_str(&s.canonical_json()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn invalid_specs_say_why() {
        let bad = EXAMPLE.replace("categorical = [\"sex\"]", "categorical = [\"bmi\"]");
        let e = StudySpec::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("\"bmi\" is not in analysis.variables"), "{e}");
        let bad = EXAMPLE.replace("variables = [\"age\", \"sex\"]", "variables = []");
        assert!(StudySpec::from_toml(&bad).is_err());
    }
}
