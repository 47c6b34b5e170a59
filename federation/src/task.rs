//! Work the aggregator hands a site, and what the site sends back (domain types; the protobuf
//! mirrors live in `protocol` and are converted at the edge).

use crate::ids::{StudyHash, StudyId};
use serde::{Deserialize, Serialize};

/// Outcome group of a patient. Index 0 is the positive group (`group_1` in outputs), 1 the negative.
pub const GROUPS: usize = 2;

/// One unit of work for one site in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub study_id: StudyId,
    pub study_hash: StudyHash,
    /// The study's canonical JSON spec, so the site can recompute `study_hash` and check it against
    /// its policy without trusting the aggregator's word.
    pub study_spec_json: String,
    pub round: u32,
    pub body: TaskBody,
}

/// The typed request of a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskBody {
    /// Table 1, first round: group sizes, moments of continuous variables, level counts.
    Table1Summary(Table1SummaryTask),
    /// Table 1, later rounds: refine the laminar histogram trees of continuous variables.
    Histogram(HistogramTask),
    /// ComBat round 0: which batches and covariate levels occur.
    ComBatLevels(ComBatTask),
    /// ComBat round 1: W'W and W'Y for the design.
    ComBatCrossProducts(ComBatTask),
    /// ComBat round 2: residual sums of squares for the fitted B.
    ComBatResiduals(ComBatTask),
    /// ComBat round 3: the empirical-Bayes step for each batch this site holds.
    ComBatEstimate(ComBatTask),
    /// LASSO: weighted sums for every current fit (moments, or IRLS sums at the given iterate).
    LassoSums(LassoTask),
    /// A stage of the nested-CV pipeline study (`crate::pipeline`).
    Pipeline(crate::pipeline::PipelineTask),
    /// Table 1 under secure aggregation, first round: which levels of the categorical variables
    /// occur at the site (no counts), so that every site packs its masked counts in one layout.
    Table1Levels(Table1SummaryTask),
    /// Secure aggregation, key round (`crate::secure`): announce this study's X25519 public key,
    /// and answer `inner` (the analysis' own first, unsummed request) in the same round.
    SecureKeys(SecureKeysTask),
    /// Secure aggregation, a masked round (`crate::secure`): answer `inner`, encode its summed
    /// statistics in fixed point with `shape` and mask them pairwise with the relayed keys.
    Masked(MaskedTask),
}

/// The key round of a secure study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecureKeysTask {
    /// The analysis' own request answered in the same round (plain, not summed), if any.
    pub inner: Option<Box<TaskBody>>,
}

/// A masked round of a secure study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskedTask {
    /// Every participant's public key as announced in the key round (the relayed set).
    pub keys: Vec<secagg::KeyAnnouncement>,
    /// The participants' signatures over their announcements (until the study's first masked
    /// sum has opened; every key is pinned at every site after it).
    #[serde(default)]
    pub attestations: Vec<crate::secure::KeyAttestation>,
    /// Study, a round id fresh for every masked exchange, and the sorted participant set.
    pub round: secagg::RoundSpec,
    /// How the answer is packed into the masked vector.
    pub shape: crate::secure::SumShape,
    /// The summed request itself.
    pub inner: Box<TaskBody>,
}

/// All current LASSO fits' requests, evaluated by the site on its own rows in one go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LassoTask {
    /// Seeds this site's fold and bootstrap draws (derived from its site id by the aggregator).
    pub site_key: u64,
    pub requests: Vec<models::lasso::FitRequest>,
}

impl TaskBody {
    pub fn kind(&self) -> &'static str {
        match self {
            TaskBody::Table1Summary(_) => "table1_summary",
            TaskBody::Histogram(_) => "histogram",
            TaskBody::ComBatLevels(_) => "combat_levels",
            TaskBody::ComBatCrossProducts(_) => "combat_cross_products",
            TaskBody::ComBatResiduals(_) => "combat_residuals",
            TaskBody::ComBatEstimate(_) => "combat_estimate",
            TaskBody::LassoSums(_) => "lasso_sums",
            TaskBody::Pipeline(_) => "pipeline",
            TaskBody::Table1Levels(_) => "table1_levels",
            TaskBody::SecureKeys(_) => "secure_keys",
            TaskBody::Masked(_) => "masked",
        }
    }

    /// Whether a site answers this task again with the same bytes and no effect that matters if
    /// it answered it before: the pipeline's plain ComBat, LASSO and meta-model sums (the rounds
    /// the site does not keep an answer for, `pipeline::site`). The aggregator does not make
    /// such a round durable when the next one is of the same sort: after a crash it asks the
    /// sites again instead (`aggregator::coordinator`). Every other task — Table 1, standalone
    /// studies, masked rounds, the stages that change the site's state — is made durable.
    pub fn recomputable(&self) -> bool {
        use crate::pipeline::StageTask;
        matches!(
            self,
            TaskBody::Pipeline(t)
                if matches!(
                    t.stage,
                    StageTask::ComBat { .. } | StageTask::Lasso { .. } | StageTask::Fit { .. }
                )
        )
    }
}

/// Where a site's batch labels come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BatchSource {
    /// Every row's batch is this label (batch = site; the aggregator sends the site's id).
    Label(String),
    /// The batch is this column of the site's table.
    Column(String),
}

/// A ComBat round's input: the batch source plus what earlier rounds established (the site keeps
/// no state between rounds, so every task carries it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComBatTask {
    pub batch: BatchSource,
    /// Round 1 onwards: the global design.
    pub design: Option<models::combat::DesignSpec>,
    /// Round 2: the regression fit.
    pub fit: Option<models::combat::ComBatFit>,
    /// Round 3: the global fit with pooled variances, and the EB options.
    pub global: Option<models::combat::ComBatGlobal>,
    pub options: Option<models::combat::ComBatOptions>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table1SummaryTask {
    pub continuous: Vec<String>,
    pub categorical: Vec<String>,
}

/// A node of a variable's binary histogram tree: depth and index within that depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Node {
    pub depth: u8,
    pub index: u64,
}

/// Refine some of this site's own histogram leaves (each site gets its own list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramTask {
    pub variables: Vec<HistogramRequest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramRequest {
    pub variable: String,
    /// The variable's tree root; fixed for the whole study.
    pub root_lo: f64,
    pub root_hi: f64,
    pub requests: Vec<NodeRequest>,
}

/// Split this site's leaf `node` of `group`, at most `extra_depth` levels down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRequest {
    pub group: u8,
    pub node: Node,
    pub extra_depth: u8,
}

/// What a site sends back for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub study_id: StudyId,
    pub round: u32,
    pub body: ResultBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResultBody {
    Table1Summary(Table1SummaryResult),
    Histogram(HistogramResult),
    ComBatLevels(models::combat::SiteLevels),
    ComBatCrossProducts(models::combat::ComBatCrossProducts),
    ComBatResiduals(models::combat::ComBatResiduals),
    /// Per batch held by the site: its location/scale estimates (aggregates over the batch).
    ComBatEstimates(Vec<models::combat::BatchAdjustment>),
    /// Per fit, in request order: moments, IRLS sums, or a disclosure-guard refusal.
    LassoSums(Vec<models::lasso::FitSums>),
    /// A stage of the nested-CV pipeline study (`crate::pipeline`).
    Pipeline(crate::pipeline::StageResult),
    /// Per categorical variable (task order): the levels present at the site, sorted; no counts.
    Table1Levels(Vec<Vec<String>>),
    /// The key round's answer: the site's public key and its answer to the inner request.
    SecureKey(SecureKeyResult),
    /// A masked round's answer: fixed-point ring elements plus pairwise masks (uniformly
    /// distributed to anyone without the pair seeds; see `secagg`).
    Masked(secagg::MaskedVector),
    /// The site could not compute the answer (bad data, missing column): the message says what to
    /// fix at the site. The study fails with it; nothing else is sent.
    Failure(SiteFailure),
}

impl ResultBody {
    pub fn kind(&self) -> &'static str {
        match self {
            ResultBody::Table1Summary(_) => "table1_summary",
            ResultBody::Histogram(_) => "histogram",
            ResultBody::ComBatLevels(_) => "combat_levels",
            ResultBody::ComBatCrossProducts(_) => "combat_cross_products",
            ResultBody::ComBatResiduals(_) => "combat_residuals",
            ResultBody::ComBatEstimates(_) => "combat_estimate",
            ResultBody::LassoSums(_) => "lasso_sums",
            ResultBody::Pipeline(_) => "pipeline",
            ResultBody::Table1Levels(_) => "table1_levels",
            ResultBody::SecureKey(_) => "secure_keys",
            ResultBody::Masked(_) => "masked",
            ResultBody::Failure(_) => "failure",
        }
    }
}

/// The key round's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecureKeyResult {
    /// The site's X25519 public key for this study. The aggregator labels it with the sender's
    /// authenticated site id when it relays the set.
    pub public_key: [u8; 32],
    pub inner: Option<Box<ResultBody>>,
    /// The site's signature over the announcement (`None` from a site without certificate
    /// access, e.g. in-process runs; its peers with one then refuse to mask with its key).
    #[serde(default)]
    pub attestation: Option<crate::secure::KeyAttestation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteFailure {
    pub message: String,
}

/// A count the site may or may not release. `Suppressed` carries no number at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Released<T> {
    Value(T),
    Suppressed,
}

impl<T: Copy> Released<T> {
    pub fn value(&self) -> Option<T> {
        match self {
            Released::Value(v) => Some(*v),
            Released::Suppressed => None,
        }
    }
}

/// Moments of one group: `n`, mean and sum of squared deviations (M2); see `stats::Moments`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupMoments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table1SummaryResult {
    /// Patients per group (index 0 positive, 1 negative) with a known label.
    pub group_n: [Released<u64>; GROUPS],
    /// Patients whose label is missing (excluded from every group).
    pub label_missing: Released<u64>,
    pub continuous: Vec<ContinuousSummary>,
    pub categorical: Vec<CategoricalSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinuousSummary {
    pub variable: String,
    pub groups: [Released<GroupMoments>; GROUPS],
    pub missing: [Released<u64>; GROUPS],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalSummary {
    pub variable: String,
    /// Level texts with per-group counts, sorted by level.
    pub levels: Vec<LevelCounts>,
    pub missing: [Released<u64>; GROUPS],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelCounts {
    pub level: String,
    pub counts: [Released<u64>; GROUPS],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramResult {
    pub variables: Vec<HistogramAnswer>,
}

/// The nodes a site released for one variable: per group, disjoint nodes with nonzero counts,
/// each count ≥ the site's `min_count` (see `stats::tree`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramAnswer {
    pub variable: String,
    pub groups: [Vec<(Node, u64)>; GROUPS],
}

impl TaskResult {
    /// The smallest nonzero patient count this result releases, for the disclosure tests and the
    /// audit log. `None` when it releases no count at all.
    pub fn smallest_released_count(&self) -> Option<u64> {
        let mut counts: Vec<u64> = Vec::new();
        let released = |r: &Released<u64>| r.value();
        match &self.body {
            ResultBody::Table1Summary(s) => {
                counts.extend(s.group_n.iter().filter_map(released));
                counts.extend(released(&s.label_missing));
                for c in &s.continuous {
                    counts.extend(c.missing.iter().filter_map(released));
                    counts.extend(c.groups.iter().filter_map(|g| g.value().map(|m| m.n)));
                }
                for c in &s.categorical {
                    counts.extend(c.missing.iter().filter_map(released));
                    for l in &c.levels {
                        counts.extend(l.counts.iter().filter_map(released));
                    }
                }
            }
            ResultBody::Histogram(h) => {
                for v in &h.variables {
                    for g in &v.groups {
                        counts.extend(g.iter().map(|(_, c)| *c));
                    }
                }
            }
            ResultBody::ComBatCrossProducts(c) => counts.push(c.n),
            ResultBody::ComBatResiduals(r) => counts.push(r.n),
            ResultBody::ComBatEstimates(b) => counts.extend(b.iter().map(|b| b.n)),
            ResultBody::Pipeline(r) => counts.extend(r.released_counts()),
            ResultBody::SecureKey(k) => {
                if let Some(inner) = &k.inner {
                    let inner = TaskResult {
                        study_id: self.study_id.clone(),
                        round: self.round,
                        body: (**inner).clone(),
                    };
                    counts.extend(inner.smallest_released_count());
                }
            }
            // Weighted sums over the site's rows (each fit covers all rows but a fold), not counts;
            // level names without counts; masked vectors, whose plain content the site checked
            // before masking (`site::answer_with_memory`) and which reveal nothing by themselves.
            ResultBody::ComBatLevels(_)
            | ResultBody::LassoSums(_)
            | ResultBody::Table1Levels(_)
            | ResultBody::Masked(_)
            | ResultBody::Failure(_) => {}
        }
        counts.into_iter().filter(|&c| c > 0).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{PipelineTask, StageTask};

    fn stage(stage: StageTask) -> TaskBody {
        TaskBody::Pipeline(PipelineTask {
            site: "A".into(),
            batch: 0,
            features: vec![],
            stage,
        })
    }

    /// Only the pipeline's sums rounds may go unlogged: a stage whose answer the site keeps
    /// (or adds to its running sums) must be durable before it is handed out.
    #[test]
    fn only_the_pipelines_plain_sum_rounds_are_recomputable() {
        let sums = [
            StageTask::ComBat {
                round: 1,
                fits: vec![],
            },
            StageTask::Lasso {
                standardizers: vec![],
                requests: vec![],
            },
            StageTask::Fit {
                mlp: vec![],
                clinical: vec![],
            },
        ];
        for s in sums {
            assert!(stage(s).recomputable());
        }
        let kept = [
            StageTask::Columns,
            StageTask::Moments { models: vec![] },
            StageTask::Train { selected: vec![] },
            StageTask::Relay { models: vec![] },
            StageTask::Score {
                mlp: vec![],
                clinical: vec![],
            },
        ];
        for s in kept {
            assert!(!stage(s).recomputable());
        }
        let lasso = TaskBody::LassoSums(LassoTask {
            site_key: 1,
            requests: vec![],
        });
        assert!(
            !lasso.recomputable(),
            "a standalone LASSO study logs every round"
        );
    }
}
