//! The pipeline study's secure-aggregation messages over the wire (issue #8 item 5):
//! 1. the new shapes (`PipelineFitShape`, `PipelineScoresShape`, `PipelineFollowUpShape`, read
//!    from the compiled proto descriptor so a new field cannot slip past) carry only the layout —
//!    fit ids, widths, the grid, a flag, the merge threshold, the pooled ML cells' bin ranges and
//!    the shared time grid, no site's statistic; a site's answer to a masked pipeline round is
//!    the reviewed `MaskedVector` (checked in `secure_privacy.rs`) and nothing else;
//! 2. a secure pipeline study (with the survival endpoint) run with every task and answer
//!    passing through protobuf bytes equals the in-process run exactly (fresh keys, same sums),
//!    every meta-model, score and follow-up answer that crossed the wire was a masked vector (no
//!    plain meta-model or metrics request), and the masked follow-up request — whose per-bin
//!    placements and cut-off flags come from the pooled tables — is byte-identical for every
//!    site;
//! 3. decoding refuses a masked pipeline request of a stage without a masked form, a shape whose
//!    clinical fit ids do not match its fits, and a width too large to address.

use federation::SiteId;
use federation::engine::{StudyOutput, StudyState, StudyStatus};
use federation::local::run_local;
use federation::pipeline::StageTask;
use federation::policy::SitePolicy;
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::StudySpec;
use federation::table::SiteTable;
use federation::task::{ResultBody, Task, TaskBody, TaskResult};
use prost::Message;
use protocol::convert::ConvertError;
use protocol::pb;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

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
}

#[derive(Clone, PartialEq, prost::Message)]
struct FieldDescriptorProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "5")]
    r#type: i32,
    #[prost(string, tag = "6")]
    type_name: String,
}

const TYPE_MESSAGE: i32 = 11;

fn schema() -> BTreeMap<String, DescriptorProto> {
    let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/fedrad_descriptor.bin"));
    let set = FileDescriptorSet::decode(&bytes[..]).unwrap();
    let mut map = BTreeMap::new();
    for f in &set.file {
        for m in &f.message_type {
            map.insert(format!(".{}.{}", f.package, m.name), m.clone());
        }
    }
    map
}

fn leaf_paths(
    s: &BTreeMap<String, DescriptorProto>,
    name: &str,
    prefix: &str,
    out: &mut BTreeSet<String>,
) {
    for f in &s[name].field {
        let path = if prefix.is_empty() {
            f.name.clone()
        } else {
            format!("{prefix}.{}", f.name)
        };
        if f.r#type == TYPE_MESSAGE {
            leaf_paths(s, &f.type_name, &path, out);
        } else {
            out.insert(path);
        }
    }
}

#[test]
fn pipeline_shapes_carry_only_the_layout() {
    let s = schema();
    for (name, reviewed) in [
        (
            "PipelineFitShape",
            &[
                "mlp_fits.repeat",
                "mlp_fits.fold",
                "mlp_weights",
                "clinical_fits.repeat",
                "clinical_fits.fold",
                "clinical_fit_ids",
                "clinical_params",
            ][..],
        ),
        (
            "PipelineScoresShape",
            &["bins", "clinical", "min_count"][..],
        ),
        // The follow-up: the grid, the pooled ML cells (known from the opened score round), the
        // shared time grid and the pooled merge's threshold.
        (
            "PipelineFollowUpShape",
            &[
                "bins",
                "ml_cells.lo_bin",
                "ml_cells.hi_bin",
                "survival.time_step",
                "survival.time_bins",
                "survival.by_predicted",
                "min_count",
            ][..],
        ),
    ] {
        let mut got = BTreeSet::new();
        leaf_paths(&s, &format!(".fedrad.v1.{name}"), "", &mut got);
        let want: BTreeSet<String> = reviewed.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            got, want,
            "{name}: fields changed; review what they reveal first"
        );
    }
    let masked = &s[".fedrad.v1.MaskedTask"];
    let pipeline = masked.field.iter().find(|f| f.name == "pipeline").unwrap();
    assert_eq!(pipeline.type_name, ".fedrad.v1.PipelineTask");
}

fn cohort() -> BTreeMap<SiteId, SiteTable> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv");
    // A plain comma-separated file without quoting (checked: no field holds a comma).
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let mut rows: BTreeMap<SiteId, Vec<Vec<String>>> = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let row: Vec<String> = line.split(',').map(String::from).collect();
        assert_eq!(row.len(), header.len());
        rows.entry(SiteId::new(row[1].clone()).unwrap())
            .or_default()
            .push(row);
    }
    rows.into_iter()
        .map(|(s, rows)| (s, SiteTable::new(header.clone(), rows).unwrap()))
        .collect()
}

fn spec() -> StudySpec {
    StudySpec::from_toml(
        r#"
id = "secure-pipeline-wire"
[analysis]
kind = "pipeline"
secure_aggregation = true
label_column = "response"
features = ["original_firstorder_Mean", "original_glcm_Contrast", "original_shape_Sphericity", "original_firstorder_Entropy", "original_glszm_ZoneEntropy", "original_shape_Elongation"]
[analysis.cv]
seed = 3
repeats = 1
outer_folds = 5
inner_folds = 3
repeats_per_batch = 1
[analysis.lasso]
nfolds = 3
nlambda = 12
bootstrap = 3
top_k = 3
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
[analysis.metrics]
secure_min_count = 5
time_column = "pfs_months"
event_column = "pfs_event"
"#,
    )
    .unwrap()
}

fn policy() -> SitePolicy {
    SitePolicy {
        allow_all_studies: true,
        share_models: true,
        max_params_per_row: f64::INFINITY,
        ..SitePolicy::default()
    }
}

#[test]
fn a_secure_pipeline_study_through_the_wire_equals_the_in_process_run() {
    let tables = cohort();
    let spec = spec();
    let mut state =
        StudyState::new(spec.clone(), tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut masked_stages = BTreeSet::new();
    let mut follow_ups = 0;
    while !state.status.is_finished() {
        // The masked follow-up's request carries only pooled quantities (the pooled clinical
        // cells' placements and the pooled ML cells' cut-off flags, spread over the bins): it is
        // the same request, byte for byte, for every site.
        let mut inner_bytes = BTreeSet::new();
        for (site, table) in &tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            let bytes = pb::Task::from(&task).encode_to_vec();
            let back = Task::try_from(pb::Task::decode(&bytes[..]).unwrap()).unwrap();
            assert_eq!(back, task, "task round trip");
            let stage = match &task.body {
                TaskBody::Masked(m) => match &*m.inner {
                    TaskBody::Pipeline(p) => {
                        if let StageTask::Metrics(
                            federation::pipeline::metrics::MetricsTask::FollowUp(f),
                        ) = &p.stage
                        {
                            assert_eq!(f.cross_placements.as_ref().map(Vec::len), Some(1000));
                            let high = f.survival.as_ref().unwrap().predicted_high.as_ref();
                            assert_eq!(high.map(Vec::len), Some(1000));
                            inner_bytes.insert(
                                protocol::convert_pipeline_metrics::task_to(
                                    &federation::pipeline::metrics::MetricsTask::FollowUp(
                                        f.clone(),
                                    ),
                                )
                                .encode_to_vec(),
                            );
                        }
                        Some(p.stage.name())
                    }
                    _ => None,
                },
                TaskBody::Pipeline(p) => {
                    assert!(
                        !matches!(p.stage, StageTask::Fit { .. })
                            && !matches!(p.stage, StageTask::Metrics(_)),
                        "a plain {} request in a secure study",
                        p.stage.name()
                    );
                    None
                }
                _ => None,
            };
            let result = answer_with_memory(
                &back,
                table,
                &policy(),
                memories.entry(site.clone()).or_default(),
            )
            .result;
            if let Some(stage) = stage {
                assert!(
                    matches!(result.body, ResultBody::Masked(_)),
                    "{stage}: {:?}",
                    result.body.kind()
                );
                masked_stages.insert(stage);
            }
            let bytes = pb::TaskResult::from(&result).encode_to_vec();
            let back = TaskResult::try_from(pb::TaskResult::decode(&bytes[..]).unwrap()).unwrap();
            assert_eq!(back, result, "result round trip");
            state.accept(site, back, bytes.len() as u64, 0).unwrap();
        }
        assert!(
            inner_bytes.len() <= 1,
            "the follow-up request differs between sites"
        );
        follow_ups += inner_bytes.len();
    }
    assert_eq!(follow_ups, 1, "one masked follow-up round");
    let StudyOutput::Pipeline(out) = state.output.as_ref().unwrap() else {
        panic!("a pipeline output")
    };
    assert_eq!(out.metrics.comparisons.len(), 1, "{:?}", out.metrics.notes);
    assert_eq!(out.metrics.survival.len(), 2, "{:?}", out.metrics.notes);
    assert_eq!(
        state.status,
        StudyStatus::Completed,
        "{}",
        state.status.describe()
    );
    // The meta-model and score rounds (and the LASSO's, whose masked form lives in
    // `federation::lasso`) went masked.
    assert!(
        masked_stages.is_superset(&BTreeSet::from(["meta-fit", "metrics"])),
        "the masked stages: {masked_stages:?}"
    );
    let local = run_local(
        spec,
        &tables
            .into_iter()
            .map(|(s, t)| (s, (t, policy())))
            .collect(),
        100_000,
    )
    .unwrap();
    // Fresh X25519 keys per run: the masks differ, the decoded sums (and the study) do not.
    assert_eq!(state.output, local.output);
}

fn masked(shape: pb::sum_shape::Shape, stage: pb::pipeline_task::Stage) -> pb::MaskedTask {
    pb::MaskedTask {
        attestations: vec![],
        keys: vec![pb::KeyAnnouncement {
            site_id: "a".into(),
            public_key: vec![9; 32],
        }],
        round: Some(pb::RoundSpec {
            study_id: "analysis-x".into(),
            round_id: 1,
            participants: vec!["a".into(), "b".into(), "c".into()],
        }),
        shape: Some(pb::SumShape { shape: Some(shape) }),
        inner: Some(pb::masked_task::Inner::Pipeline(pb::PipelineTask {
            site: "a".into(),
            batch: 0,
            stage: Some(stage),
            ..Default::default()
        })),
    }
}

fn decode(m: pb::MaskedTask) -> Result<Task, ConvertError> {
    Task::try_from(pb::Task {
        study_id: "s".into(),
        study_hash: "h".into(),
        study_spec_json: "{}".into(),
        round: 2,
        body: Some(pb::task::Body::Masked(m)),
    })
}

#[test]
fn malformed_masked_pipeline_requests_are_refused() {
    let fit_shape = |ids: Vec<u32>, width: u64| {
        pb::sum_shape::Shape::PipelineFit(pb::PipelineFitShape {
            mlp_fits: vec![pb::FitId { repeat: 0, fold: 1 }],
            mlp_weights: width,
            clinical_fits: vec![pb::FitId { repeat: 0, fold: 1 }],
            clinical_fit_ids: ids,
            clinical_params: 2,
        })
    };
    let fit_stage = || pb::pipeline_task::Stage::Fit(pb::PipelineMetaFitTask::default());
    let ok = decode(masked(fit_shape(vec![1], 5), fit_stage())).unwrap();
    let TaskBody::Masked(m) = ok.body else {
        panic!("a masked task")
    };
    assert!(matches!(
        m.shape,
        federation::secure::SumShape::PipelineFit { mlp_weights: 5, .. }
    ));
    assert!(matches!(
        decode(masked(fit_shape(vec![], 5), fit_stage())).unwrap_err(),
        ConvertError::Invalid {
            field: "PipelineFitShape.clinical_fit_ids",
            ..
        }
    ));
    assert!(matches!(
        decode(masked(fit_shape(vec![1], u64::MAX), fit_stage())).unwrap_err(),
        ConvertError::Range {
            field: "PipelineFitShape.mlp_weights",
            ..
        }
    ));
    // A stage without a masked form (the relay) cannot ride on a masked round.
    let relay = pb::pipeline_task::Stage::Relay(pb::PipelineRelayTask::default());
    assert!(matches!(
        decode(masked(fit_shape(vec![1], 5), relay)).unwrap_err(),
        ConvertError::Unsupported(_)
    ));
}

/// The pipeline's masked ComBat and z-score shapes carry only the layout (fit ids, design
/// columns, feature counts), survive the wire, and a shape mixing ComBat rounds or naming no fit
/// is refused naming the field.
#[test]
fn pipeline_combat_and_moments_shapes_carry_only_the_layout() {
    use federation::secure::SumShape;
    let s = schema();
    for (name, reviewed) in [
        (
            "PipelineComBatShape",
            &[
                "fits.fit.repeat",
                "fits.fit.fold",
                "fits.cross_products.columns",
                "fits.cross_products.features",
                "fits.residuals.features",
            ][..],
        ),
        (
            "PipelineMomentsShape",
            &["features", "fits.repeat", "fits.fold"][..],
        ),
    ] {
        let mut got = BTreeSet::new();
        leaf_paths(&s, &format!(".fedrad.v1.{name}"), "", &mut got);
        let want: BTreeSet<String> = reviewed.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            got, want,
            "{name}: fields changed; review what they reveal first"
        );
    }
    let fit = |fold| pb::FitId { repeat: 0, fold };
    let cross = |fold| pb::PipelineComBatFit {
        fit: Some(fit(fold)),
        shape: Some(pb::pipeline_com_bat_fit::Shape::CrossProducts(
            pb::ComBatCrossProductsShape {
                columns: 7,
                features: 55,
            },
        )),
    };
    let residuals = |fold| pb::PipelineComBatFit {
        fit: Some(fit(fold)),
        shape: Some(pb::pipeline_com_bat_fit::Shape::Residuals(
            pb::ComBatResidualsShape { features: 55 },
        )),
    };
    let combat_stage = |round| {
        pb::pipeline_task::Stage::Combat(pb::PipelineComBatTask {
            round,
            fits: vec![],
        })
    };
    let combat = |fits| pb::sum_shape::Shape::PipelineCombat(pb::PipelineComBatShape { fits });
    let ok = decode(masked(combat(vec![cross(0), cross(1)]), combat_stage(1))).unwrap();
    let TaskBody::Masked(m) = &ok.body else {
        panic!("a masked task")
    };
    let want = |f| {
        (
            learners::FitId { repeat: 0, fold: f },
            SumShape::ComBatCrossProducts {
                columns: 7,
                features: 55,
            },
        )
    };
    assert_eq!(
        m.shape,
        SumShape::PipelineComBat {
            fits: vec![want(0), want(1)]
        }
    );
    // Through the wire and back unchanged.
    let bytes = pb::Task::from(&ok).encode_to_vec();
    assert_eq!(
        Task::try_from(pb::Task::decode(&bytes[..]).unwrap()).unwrap(),
        ok
    );
    let moments = pb::sum_shape::Shape::PipelineMoments(pb::PipelineMomentsShape {
        features: 55,
        fits: vec![fit(0), fit(3)],
    });
    let z = decode(masked(
        moments,
        pb::pipeline_task::Stage::Moments(pb::PipelineMomentsTask::default()),
    ))
    .unwrap();
    let TaskBody::Masked(m) = &z.body else {
        panic!("a masked task")
    };
    assert!(
        matches!(&m.shape, SumShape::PipelineMoments { features: 55, fits } if fits.len() == 2)
    );
    assert!(matches!(
        decode(masked(
            combat(vec![cross(0), residuals(1)]),
            combat_stage(1)
        ))
        .unwrap_err(),
        ConvertError::Invalid {
            field: "PipelineComBatShape.fits",
            ..
        }
    ));
    let mut no_fit = cross(0);
    no_fit.fit = None;
    assert!(matches!(
        decode(masked(combat(vec![no_fit]), combat_stage(1))).unwrap_err(),
        ConvertError::Missing("PipelineComBatFit.fit")
    ));
    // ComBat's levels round is not a sum: it cannot ride on a masked round.
    assert!(matches!(
        decode(masked(combat(vec![cross(0)]), combat_stage(0))).unwrap_err(),
        ConvertError::Unsupported(_)
    ));
}
