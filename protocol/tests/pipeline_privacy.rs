//! What the pipeline study's answers carry over the wire, checked on real messages.
//!
//! A small synthetic 3-site study runs with every task and every answer passing through the
//! protobuf bytes (the metrics stage too once its conversions exist; until then it is handed over
//! in process and left to its own privacy test in `federation/tests/pipeline_metrics.rs`). Then:
//!
//! 1. the run through the wire gives exactly the in-process output (`run_local`);
//! 2. for every pipeline result message type, the fields it can carry (from the compiled proto
//!    descriptor, so a new field cannot slip past) equal the reviewed list [`REVIEWED`];
//! 3. no answer carries a per-row vector: every repeated field (and every array inside the JSON
//!    of a shared SVM) is walked in the encoded bytes of every answer, and a field counts as
//!    row-shaped at a site when its lengths follow the site's row counts: in each of two runs on
//!    cohorts whose every row count differs (the second drops 10 rows per site), each of its
//!    lengths is one of that run's row counts and one is a row count of that run only. Row counts
//!    are the site's rows, every count of rows the answers name (`n`, `n_train`, `rows`) and the
//!    validation rows those leave. Fixed-shape fields (per feature, per weight, per sub-fit) keep
//!    their lengths across the runs and cannot follow both; data-sized structure (tree nodes, the
//!    LASSO path) only sometimes lands on a row count. The only row-shaped fields allowed are
//!    those listed in [`ROW_SHAPED`], and the SVM's dual coefficients must be among those found,
//!    so the detector is shown to catch a real per-row vector.

use federation::SiteId;
use federation::engine::{StudyOutput, StudyState};
use federation::local::run_local;
use federation::pipeline::{StageResult, StageTask};
use federation::policy::SitePolicy;
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::StudySpec;
use federation::table::SiteTable;
use federation::task::{ResultBody, Task, TaskBody, TaskResult};
use prost::Message;
use protocol::convert::ConvertError;
use protocol::pb;
use std::collections::{BTreeMap, BTreeSet};

// ---- the compiled descriptor (a subset of google/protobuf/descriptor.proto) ---------------------

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileDescriptorProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorProto {
    #[prost(string, tag = "2")]
    package: String,
    #[prost(message, repeated, tag = "4")]
    message_type: Vec<DescriptorProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct DescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    field: Vec<FieldDescriptorProto>,
    #[prost(message, repeated, tag = "3")]
    nested_type: Vec<DescriptorProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FieldDescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "3")]
    number: i32,
    /// 3 = repeated.
    #[prost(int32, tag = "4")]
    label: i32,
    /// google.protobuf.FieldDescriptorProto.Type.
    #[prost(int32, tag = "5")]
    r#type: i32,
    /// `.fedrad.v1.Message` for message and enum fields.
    #[prost(string, tag = "6")]
    type_name: String,
}

const TYPE_DOUBLE: i32 = 1;
const TYPE_FLOAT: i32 = 2;
const TYPE_FIXED64: i32 = 6;
const TYPE_FIXED32: i32 = 7;
const TYPE_STRING: i32 = 9;
const TYPE_MESSAGE: i32 = 11;
const TYPE_BYTES: i32 = 12;
const TYPE_SFIXED32: i32 = 15;
const TYPE_SFIXED64: i32 = 16;
const LABEL_REPEATED: i32 = 3;

/// Message types by full name (`.fedrad.v1.X`).
struct Schema(BTreeMap<String, DescriptorProto>);

impl Schema {
    fn load() -> Self {
        let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/fedrad_descriptor.bin"));
        let set = FileDescriptorSet::decode(&bytes[..]).unwrap();
        let mut map = BTreeMap::new();
        fn add(map: &mut BTreeMap<String, DescriptorProto>, prefix: &str, m: &DescriptorProto) {
            let name = format!("{prefix}.{}", m.name);
            for n in &m.nested_type {
                add(map, &name, n);
            }
            map.insert(name, m.clone());
        }
        for f in &set.file {
            for m in &f.message_type {
                add(&mut map, &format!(".{}", f.package), m);
            }
        }
        Schema(map)
    }

    fn message(&self, name: &str) -> &DescriptorProto {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in the descriptor"))
    }

    /// Every leaf field path a message can carry, `a.b.c` (no cycles in these messages).
    fn leaf_paths(&self, name: &str, prefix: &str, out: &mut BTreeSet<String>) {
        for f in &self.message(name).field {
            let path = if prefix.is_empty() {
                f.name.clone()
            } else {
                format!("{prefix}.{}", f.name)
            };
            if f.r#type == TYPE_MESSAGE {
                self.leaf_paths(&f.type_name, &path, out);
            } else {
                out.insert(path);
            }
        }
    }
}

// ---- walking encoded messages -------------------------------------------------------------------

/// One message's observation: the length of every repeated field instance (and of every array in
/// an SVM's JSON) by path, and the integer values of the fields that are row counts.
#[derive(Default)]
struct Walk {
    lengths: Vec<(String, usize)>,
    counts: Vec<u64>,
}

/// Fields whose value is a number of rows (a site's, a fit's training rows, a sub-fit's rows).
const ROW_COUNT_FIELDS: &[&str] = &["n", "n_train", "rows", "batch_n"];

fn varint(b: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*i];
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint too long")
}

fn walk_message(schema: &Schema, name: &str, b: &[u8], path: &str, out: &mut Walk) {
    let desc = schema.message(name);
    let mut repeated: BTreeMap<String, usize> = BTreeMap::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i);
        let (number, wire) = ((key >> 3) as i32, key & 7);
        let f = desc
            .field
            .iter()
            .find(|f| f.number == number)
            .unwrap_or_else(|| panic!("{name} has no field {number}"));
        let fpath = if path.is_empty() {
            f.name.clone()
        } else {
            format!("{path}.{}", f.name)
        };
        let is_rep = f.label == LABEL_REPEATED;
        let mut elements = 1;
        match wire {
            0 => {
                let v = varint(b, &mut i);
                if ROW_COUNT_FIELDS.contains(&f.name.as_str()) {
                    out.counts.push(v);
                }
            }
            1 => i += 8,
            5 => i += 4,
            2 => {
                let len = varint(b, &mut i) as usize;
                let payload = &b[i..i + len];
                i += len;
                match f.r#type {
                    TYPE_MESSAGE => walk_message(schema, &f.type_name, payload, &fpath, out),
                    TYPE_STRING => {}
                    TYPE_BYTES => {
                        out.lengths.push((fpath.clone(), len));
                        if f.name == "model_json" {
                            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
                            walk_json(&v, &fpath, "", out);
                        }
                    }
                    // A packed repeated scalar: count its elements.
                    TYPE_DOUBLE | TYPE_FIXED64 | TYPE_SFIXED64 => elements = len / 8,
                    TYPE_FLOAT | TYPE_FIXED32 | TYPE_SFIXED32 => elements = len / 4,
                    _ => {
                        elements = payload.iter().filter(|&&x| x & 0x80 == 0).count();
                        if ROW_COUNT_FIELDS.contains(&f.name.as_str()) {
                            let mut j = 0;
                            while j < payload.len() {
                                out.counts.push(varint(payload, &mut j));
                            }
                        }
                    }
                }
            }
            w => panic!("{fpath}: wire type {w}"),
        }
        if is_rep {
            *repeated.entry(fpath).or_default() += elements;
        }
    }
    out.lengths.extend(repeated);
}

/// Arrays inside an SVM's JSON, by path (`…model_json{svm.alpha}`); ndarray serialises a matrix
/// as `{v, dim, data}`.
fn walk_json(v: &serde_json::Value, base: &str, inner: &str, out: &mut Walk) {
    match v {
        serde_json::Value::Array(a) => {
            out.lengths.push((format!("{base}{{{inner}}}"), a.len()));
            for x in a.iter().filter(|x| x.is_object()) {
                walk_json(x, base, inner, out);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let path = if inner.is_empty() {
                    k.clone()
                } else {
                    format!("{inner}.{k}")
                };
                walk_json(x, base, &path, out);
            }
        }
        _ => {}
    }
}

fn stage_name(r: &pb::PipelineResult) -> &'static str {
    use pb::pipeline_result::Stage;
    match r.stage.as_ref().expect("a stage") {
        Stage::Columns(_) => "columns",
        Stage::CombatLevels(_) => "combat_levels",
        Stage::CombatCrossProducts(_) => "combat_cross_products",
        Stage::CombatResiduals(_) => "combat_residuals",
        Stage::CombatEstimates(_) => "combat_estimates",
        Stage::Moments(_) => "moments",
        Stage::Lasso(_) => "lasso",
        Stage::Trained(_) => "trained",
        Stage::Relayed(_) => "relayed",
        Stage::Fit(_) => "fit",
        Stage::Scored(_) => "scored",
        // The metrics stage (field 20, whether or not it is in the proto yet).
        #[allow(unreachable_patterns)]
        _ => "metrics",
    }
}

// ---- the study ----------------------------------------------------------------------------------

/// splitmix64, for a deterministic synthetic cohort.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unif(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (1.0 - self.unif(), self.unif());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

const FEATURES: usize = 9;

fn header() -> Vec<String> {
    let mut h = vec!["patient_id".to_string(), "response".into(), "ki67".into()];
    h.extend((0..FEATURES).map(|j| format!("f{j}")));
    h
}

/// Sites of the given sizes: a responder signal in three features and ki67, a site shift in all.
fn cohort(sizes: &[usize]) -> BTreeMap<SiteId, Vec<Vec<String>>> {
    let mut rng = Rng(7);
    let mut out = BTreeMap::new();
    for (s, &n) in sizes.iter().enumerate() {
        let shift = s as f64 * 0.7;
        let rows = (0..n)
            .map(|i| {
                let y = rng.unif() < 0.45;
                let signal = if y { 1.0 } else { 0.0 };
                let mut row = vec![
                    format!("P{s}-{i}"),
                    if y { "1" } else { "0" }.to_string(),
                    format!("{:.1}", 20.0 + 15.0 * signal + 8.0 * rng.normal()),
                ];
                for j in 0..FEATURES {
                    let effect = if j < 3 { 1.2 * signal } else { 0.0 };
                    row.push(format!("{:.6}", effect + shift + rng.normal()));
                }
                row
            })
            .collect();
        out.insert(SiteId::new(format!("S{}", s + 1)).unwrap(), rows);
    }
    out
}

/// The features are left to the sites' column names (the columns round), which resolve to f0…f8:
/// `patient_id` is text, `response` the label and `ki67` the clinical comparator's.
fn spec() -> StudySpec {
    StudySpec::from_toml(
        r#"
id = "pipeline-privacy"
[analysis]
kind = "pipeline"
label_column = "response"
[analysis.cv]
seed = 5
repeats = 1
outer_folds = 5
inner_folds = 3
repeats_per_batch = 1
[analysis.lasso]
nfolds = 3
nlambda = 12
bootstrap = 3
top_k = 4
[analysis.learners]
min_train_rows = 8
[analysis.learners.search.budget]
svm = 1
forest = 1
gbm = 1
[analysis.learners.search.forest]
n_trees = { kind = "fixed", value = 5.0 }
[analysis.learners.search.gbm]
n_rounds = { kind = "int_uniform", low = 5, high = 8 }
[analysis.meta]
hidden = [3]
alpha = 0.01
[analysis.clinical]
numeric = ["ki67"]
"#,
    )
    .unwrap()
}

fn tables(rows: &BTreeMap<SiteId, Vec<Vec<String>>>) -> BTreeMap<SiteId, (SiteTable, SitePolicy)> {
    let policy = SitePolicy {
        allow_all_studies: true,
        share_models: true,
        // 10 candidate features on ~30 training rows: relaxed as in the federation tests.
        max_params_per_row: f64::INFINITY,
        ..SitePolicy::default()
    };
    rows.iter()
        .map(|(s, r)| {
            (
                s.clone(),
                (SiteTable::new(header(), r.clone()).unwrap(), policy.clone()),
            )
        })
        .collect()
}

fn is_metrics_task(t: &Task) -> bool {
    matches!(&t.body, TaskBody::Pipeline(p) if matches!(p.stage, StageTask::Metrics(_)))
}

fn is_metrics_result(r: &TaskResult) -> bool {
    matches!(&r.body, ResultBody::Pipeline(StageResult::Metrics(_)))
}

/// A run where everything crosses the wire: the output, and every pipeline answer's encoded
/// bytes per site.
struct WireRun {
    output: federation::pipeline::PipelineOutput,
    answers: Vec<(SiteId, Vec<u8>)>,
    bypassed: usize,
}

fn run_through_wire(tables: &BTreeMap<SiteId, (SiteTable, SitePolicy)>) -> WireRun {
    let mut state = StudyState::new(spec(), tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut answers = Vec::new();
    let mut bypassed = 0;
    while !state.status.is_finished() {
        assert!(state.round < 10_000, "the study does not finish");
        for (site, (table, policy)) in tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            // A stage without conversions would be handed over in process (none is now: the
            // metrics stage crosses the wire too).
            let task = match protocol::convert_pipeline::task_to(match &task.body {
                TaskBody::Pipeline(p) => p,
                other => panic!("{other:?}"),
            }) {
                Err(ConvertError::Unsupported(_)) => {
                    assert!(is_metrics_task(&task));
                    bypassed += 1;
                    task
                }
                Err(e) => panic!("{e}"),
                Ok(_) => {
                    let bytes = pb::Task::from(&task).encode_to_vec();
                    Task::try_from(pb::Task::decode(bytes.as_slice()).unwrap()).unwrap()
                }
            };
            let memory = memories.entry(site.clone()).or_default();
            let result = answer_with_memory(&task, table, policy, memory).result;
            let result = if is_metrics_result(&result)
                && protocol::convert_pipeline::result_to(match &result.body {
                    ResultBody::Pipeline(r) => r,
                    _ => unreachable!(),
                })
                .is_err()
            {
                result
            } else {
                let msg = pb::TaskResult::from(&result);
                if let Some(pb::task_result::Body::Pipeline(p)) = &msg.body {
                    answers.push((site.clone(), p.encode_to_vec()));
                } else {
                    panic!("site {site} answered {:?}", msg.body);
                }
                let bytes = msg.encode_to_vec();
                TaskResult::try_from(pb::TaskResult::decode(bytes.as_slice()).unwrap()).unwrap()
            };
            state.accept(site, result, 0, 0).unwrap();
        }
    }
    match state.output {
        Some(StudyOutput::Pipeline(o)) => WireRun {
            output: *o,
            answers,
            bypassed,
        },
        other => panic!("{:?} / {other:?}", state.status),
    }
}

// ---- what is reviewed ---------------------------------------------------------------------------

/// Every leaf field each pipeline result can carry, reviewed for disclosure: all are aggregates
/// over the fit's training rows, fixed-shape (per feature, per batch, per weight, per
/// coefficient, per LASSO sub-fit), or model structure — except inside a shared SVM (see
/// [`ROW_SHAPED`]). A change to these messages fails here until the list (and its review) is
/// updated.
const REVIEWED: &[(&str, &str)] = &[
    // The site's column names by kind (before the first batch, when the study omits its
    // features): names only, no values and no counts.
    ("columns", "incomplete numeric text"),
    // Batch labels and covariate levels present (no counts).
    (
        "combat_levels",
        "fits.fit.fold fits.fit.repeat fits.levels.batches fits.levels.levels.levels",
    ),
    // n, W'W (packed), W'Y (q × p), constant-in-batch flags.
    (
        "combat_cross_products",
        "fits.cross_products.constant_in_batch fits.cross_products.n fits.cross_products.wtw \
         fits.cross_products.wty fits.fit.fold fits.fit.repeat",
    ),
    // n and per-feature residual sums of squares.
    (
        "combat_residuals",
        "fits.fit.fold fits.fit.repeat fits.residuals.n fits.residuals.rss",
    ),
    // Per batch held: its size and per-feature EB location/scale.
    (
        "combat_estimates",
        "fits.estimates.batches.a_prior fits.estimates.batches.b_prior \
         fits.estimates.batches.batch fits.estimates.batches.delta_hat \
         fits.estimates.batches.delta_star fits.estimates.batches.gamma_bar \
         fits.estimates.batches.gamma_hat fits.estimates.batches.gamma_star \
         fits.estimates.batches.iterations fits.estimates.batches.n fits.estimates.batches.tau2 \
         fits.fit.fold fits.fit.repeat",
    ),
    // (n, mean, M2) per feature.
    (
        "moments",
        "fits.features.m2 fits.features.mean fits.features.n fits.fit.fold fits.fit.repeat",
    ),
    // LASSO weighted sums per sub-fit (the LASSO study's own message). x̃ᵀWx̃ either packed /
    // as a column block or as its low-rank factor (p × rank, rank ≤ the fit's training rows; a
    // function of the matrix alone, models::linalg::low_rank_factor), or in the site's row
    // basis: QᵀWQ (k × k, k ≤ the site's LASSO rows) and, once, R, the pivoted Cholesky factor
    // of the Gram matrix [1 | x̃₀]ᵀ[1 | x̃₀] of those rows (a function of that matrix alone,
    // models::linalg::pivoted_qr; Q, which would carry the rows, stays at the site).
    (
        "lasso",
        "fits.fit.fold fits.fit.repeat fits.sums.fits.irls.basis_r fits.sums.fits.irls.fit_id \
         fits.sums.fits.irls.heldout_dev \
         fits.sums.fits.irls.heldout_w fits.sums.fits.irls.hess fits.sums.fits.irls.hess_basis \
         fits.sums.fits.irls.hess_factor \
         fits.sums.fits.irls.loss fits.sums.fits.irls.r0 fits.sums.fits.irls.rx \
         fits.sums.fits.irls.sum_w fits.sums.fits.irls.w0 fits.sums.fits.irls.wx \
         fits.sums.fits.moments.fit_id fits.sums.fits.moments.m2 fits.sums.fits.moments.mean \
         fits.sums.fits.moments.sum_w fits.sums.fits.moments.sum_wy fits.sums.fits.moments.w \
         fits.sums.fits.refused.fit_id fits.sums.fits.refused.max_params_per_row \
         fits.sums.fits.refused.params fits.sums.fits.refused.rows",
    ),
    // Training row count, refusal reason, and the shared models (share_models): forest and GBM
    // structure (split features, thresholds — midpoints between two training values — leaf
    // values, GBM covers), and the SVM as JSON (row-level, see ROW_SHAPED).
    (
        "trained",
        "fits.fit.fold fits.fit.repeat fits.n_train fits.refused fits.shared.model.forest.n_features \
         fits.shared.model.forest.params.bootstrap fits.shared.model.forest.params.max_depth \
         fits.shared.model.forest.params.max_features \
         fits.shared.model.forest.params.min_samples_leaf \
         fits.shared.model.forest.params.min_samples_split fits.shared.model.forest.params.n_trees \
         fits.shared.model.forest.trees.feature fits.shared.model.forest.trees.left \
         fits.shared.model.forest.trees.right fits.shared.model.forest.trees.threshold \
         fits.shared.model.forest.trees.value fits.shared.model.gbm.base_margin \
         fits.shared.model.gbm.n_features fits.shared.model.gbm.params.base_score \
         fits.shared.model.gbm.params.colsample_bytree fits.shared.model.gbm.params.eta \
         fits.shared.model.gbm.params.gamma fits.shared.model.gbm.params.lambda \
         fits.shared.model.gbm.params.max_depth fits.shared.model.gbm.params.min_child_weight \
         fits.shared.model.gbm.params.n_rounds fits.shared.model.gbm.params.subsample \
         fits.shared.model.gbm.trees.cover fits.shared.model.gbm.trees.feature \
         fits.shared.model.gbm.trees.left fits.shared.model.gbm.trees.loss_chg \
         fits.shared.model.gbm.trees.right fits.shared.model.gbm.trees.threshold \
         fits.shared.model.gbm.trees.value fits.shared.model.svm.model_json fits.shared.n_train \
         fits.shared.site",
    ),
    // Counts of fits and rows (the meta-features stay at the site).
    ("relayed", "fits rows"),
    // MLP loss/gradient sums (gradient: one entry per weight) and clinical IRLS sums.
    (
        "fit",
        "clinical.fit.fold clinical.fit.repeat clinical.refused.fit_id \
         clinical.refused.max_params_per_row clinical.refused.params clinical.refused.rows \
         clinical.sums.fit_id clinical.sums.info clinical.sums.loglik clinical.sums.rows \
         clinical.sums.score clinical.sums.sum_w mlp.fit.fold mlp.fit.repeat mlp.grad_sum \
         mlp.loss_sum mlp.n",
    ),
    // Counts of fits and rows (the probabilities stay at the site).
    ("scored", "fits rows"),
];

/// Fields allowed to follow the row count, with why.
const ROW_SHAPED: &[(&str, &str)] = &[
    (
        "trained.fits.shared.model.svm.model_json{svm.alpha}",
        "the SVM's dual coefficients: one per training row, signed by the row's label",
    ),
    (
        "trained.fits.shared.model.svm.model_json{svm.sep_hyperplane.WeightedCombination.data}",
        "the support vectors: training rows' feature values (support vectors × features)",
    ),
    (
        "trained.fits.shared.model.svm.model_json",
        "the SVM's JSON, which holds the two above",
    ),
    // Not per-row vectors: one entry per released score cell, each of ≥ min_count patients
    // (checked on the message contents in `federation/tests/pipeline_metrics.rs`). The site's
    // merge releases as many cells as it can, about n / min_count, and with min_count = 5 =
    // outer folds that is also a fold's validation row count, which the detector then matches.
    (
        "metrics.scores.ml.table.cells",
        "the ML score count table's cells (each ≥ min_count patients), about n / min_count of them",
    ),
    (
        "metrics.scores.clinical.table.cells",
        "the clinical score count table's cells (each ≥ min_count patients)",
    ),
    (
        "metrics.follow_up.cross_placements.cells",
        "one pair of placement sums per released ML cell (as above)",
    ),
];

#[test]
fn pipeline_answers_carry_only_reviewed_fields_and_no_row_vectors() {
    let schema = Schema::load();

    // 2. The fields each result message type can carry.
    let result = schema.message(".fedrad.v1.PipelineResult");
    let mut stages: Vec<&str> = Vec::new();
    for f in &result.field {
        if f.name == "metrics" {
            continue; // the metrics stage's own messages and review
        }
        stages.push(&f.name);
        let mut paths = BTreeSet::new();
        schema.leaf_paths(&f.type_name, "", &mut paths);
        let got = paths.into_iter().collect::<Vec<_>>().join(" ");
        let want = REVIEWED
            .iter()
            .find(|(s, _)| *s == f.name)
            .unwrap_or_else(|| panic!("result stage {} is not reviewed: it carries {got}", f.name))
            .1
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            got, want,
            "stage {}: the message's fields changed; review what they disclose and update REVIEWED",
            f.name
        );
    }
    assert_eq!(stages.len(), REVIEWED.len());

    // 1. Through the wire = in process, on two cohorts whose every row count differs.
    let sizes_a = [60, 47, 38];
    let sizes_b: Vec<usize> = sizes_a.iter().map(|n| n - 10).collect();
    let mut runs = Vec::new();
    for sizes in [&sizes_a[..], &sizes_b[..]] {
        let rows = cohort(sizes);
        let tables = tables(&rows);
        let wire = run_through_wire(&tables);
        let local = match run_local(spec(), &tables, 10_000).unwrap().output {
            Some(StudyOutput::Pipeline(o)) => *o,
            other => panic!("{other:?}"),
        };
        assert_eq!(wire.output, local, "the wire changed the study's output");
        assert!(wire.output.cv.fits == 5, "{:?}", wire.output.cv);
        let want: Vec<String> = (0..FEATURES).map(|j| format!("f{j}")).collect();
        assert_eq!(wire.output.cv.features, want, "the resolved features");
        assert!(
            wire.bypassed <= 2 * tables.len(),
            "only the metrics stage may bypass the wire"
        );
        let n_site: BTreeMap<SiteId, u64> = rows
            .iter()
            .map(|(s, r)| (s.clone(), r.len() as u64))
            .collect();
        runs.push((wire, n_site));
    }

    // 3. Row-shaped fields: per run and site, the row counts, then which field lengths hit them.
    let mut hits: Vec<BTreeMap<(SiteId, String), BTreeSet<usize>>> = Vec::new();
    let mut row_counts: Vec<BTreeMap<SiteId, BTreeSet<u64>>> = Vec::new();
    let mut seen_paths = BTreeSet::new();
    for (wire, n_site) in &runs {
        let mut walks = Vec::new();
        let mut counts: BTreeMap<SiteId, BTreeSet<u64>> = BTreeMap::new();
        for (site, bytes) in &wire.answers {
            let mut w = Walk::default();
            walk_message(&schema, ".fedrad.v1.PipelineResult", bytes, "", &mut w);
            let c = counts.entry(site.clone()).or_default();
            c.insert(n_site[site]);
            for &v in &w.counts {
                if v > 0 {
                    c.insert(v);
                    // The validation rows of a fit trained on v rows.
                    if v < n_site[site] {
                        c.insert(n_site[site] - v);
                    }
                }
            }
            walks.push((site.clone(), w));
        }
        let mut lens: BTreeMap<(SiteId, String), BTreeSet<usize>> = BTreeMap::new();
        for (site, w) in walks {
            for (path, len) in w.lengths {
                seen_paths.insert(path.clone());
                lens.entry((site.clone(), path)).or_default().insert(len);
            }
        }
        hits.push(lens);
        row_counts.push(counts);
    }
    let mut row_shaped = BTreeSet::new();
    for ((site, path), lens_a) in &hits[0] {
        let Some(lens_b) = hits[1].get(&(site.clone(), path.clone())) else {
            continue;
        };
        let (ra, rb) = (&row_counts[0][site], &row_counts[1][site]);
        // In each run, every length is a row count, and one is a row count of that run only.
        let follows = |lens: &BTreeSet<usize>, own: &BTreeSet<u64>, other: &BTreeSet<u64>| {
            lens.iter().all(|&l| own.contains(&(l as u64)))
                && lens
                    .iter()
                    .any(|&l| own.contains(&(l as u64)) && !other.contains(&(l as u64)))
        };
        if follows(lens_a, ra, rb) && follows(lens_b, rb, ra) {
            row_shaped.insert(path.clone());
        }
    }
    eprintln!("fields seen in the answers: {seen_paths:#?}");
    eprintln!("row counts per site: {row_counts:?}");
    eprintln!("row-shaped fields: {row_shaped:#?}");
    for p in &row_shaped {
        assert!(
            ROW_SHAPED.iter().any(|(a, _)| a == p),
            "{p} follows the site's row count and is not a stated exception"
        );
    }
    // The detector finds the one per-row vector the answers are known to hold.
    assert!(
        row_shaped.contains("trained.fits.shared.model.svm.model_json{svm.alpha}"),
        "the SVM's per-row dual coefficients were not detected: {row_shaped:?}"
    );
    // Every reviewed stage crossed the wire in both runs.
    for (wire, _) in &runs {
        let seen: BTreeSet<&str> = wire
            .answers
            .iter()
            .map(|(_, b)| stage_name(&pb::PipelineResult::decode(b.as_slice()).unwrap()))
            .collect();
        for s in &stages {
            assert!(seen.contains(s), "no {s} answer crossed the wire: {seen:?}");
        }
    }
}
