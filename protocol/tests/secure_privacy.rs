//! What the secure-aggregation messages carry over the wire, and their strict decoding.
//!
//! 1. The fields a site's key-round and masked-round answers can carry (read from the compiled
//!    proto descriptor, so a new field cannot slip past) equal the reviewed lists below: a public
//!    key and level names (no counts) in the key round; site id, study label, round id and ring
//!    elements in a masked round — no plain statistic.
//! 2. Every new task and result message survives encode → decode unchanged, through the real
//!    site gate (a 3-site secure Table 1 and ComBat run entirely through protobuf bytes equals
//!    the in-process run).
//! 3. Decoding refuses a public key that is not 32 bytes, an unsorted or duplicated participant
//!    list, a missing round, shape or inner request, and a shape too large to address.

use federation::SiteId;
use federation::engine::{StudyState, StudyStatus};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::{AnalysisSpec, HarmonizeSpec, LassoSpec, StudySpec, Table1Spec};
use federation::table::SiteTable;
use federation::task::{Task, TaskResult};
use prost::Message;
use protocol::convert::ConvertError;
use protocol::pb;
use std::collections::{BTreeMap, BTreeSet};

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

/// Reviewed: everything a site's secure-aggregation answers can carry.
const REVIEWED: &[(&str, &[&str])] = &[
    (
        "SecureKeyResult",
        &[
            "public_key",
            // The site's signature over its announcement: its certificate (public, the one it
            // presents in the TLS handshake), the scheme and the signature. No statistic.
            "attestation.site_id",
            "attestation.certificate",
            "attestation.scheme",
            "attestation.signature",
            // ComBat round 0, as in a plain study: batch labels and covariate levels present.
            "combat_levels.batches",
            "combat_levels.levels.levels",
            // Table 1: the categorical levels present among labelled rows, no counts.
            "table1_levels.variables.levels",
        ],
    ),
    (
        "MaskedVector",
        &["site_id", "study_id", "round_id", "values"],
    ),
    ("Table1Levels", &["variables.levels"]),
];

#[test]
fn secure_answers_carry_only_the_reviewed_fields() {
    let s = schema();
    for (name, reviewed) in REVIEWED {
        let mut got = BTreeSet::new();
        leaf_paths(&s, &format!(".fedrad.v1.{name}"), "", &mut got);
        let want: BTreeSet<String> = reviewed.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            got, want,
            "{name}: fields changed; review what they reveal first"
        );
    }
    // The task result's new variants are exactly these three messages.
    let result = &s[".fedrad.v1.TaskResult"];
    let new: BTreeMap<&str, &str> = result
        .field
        .iter()
        .filter(|f| ["table1_levels", "secure_key", "masked"].contains(&f.name.as_str()))
        .map(|f| (f.name.as_str(), f.type_name.as_str()))
        .collect();
    assert_eq!(
        new,
        BTreeMap::from([
            ("masked", ".fedrad.v1.MaskedVector"),
            ("secure_key", ".fedrad.v1.SecureKeyResult"),
            ("table1_levels", ".fedrad.v1.Table1Levels"),
        ])
    );
}

fn tables() -> BTreeMap<SiteId, SiteTable> {
    let header = ["patient_id", "response", "age", "sex", "x", "y"]
        .map(String::from)
        .to_vec();
    (0..3)
        .map(|s| {
            let rows = (0..12 + 3 * s)
                .map(|i| {
                    let v = (i * 7 + s * 13) as f64;
                    vec![
                        format!("S{s}P{i:02}"),
                        ((i + s) % 2).to_string(),
                        (40 + (i * 3 + s) % 30).to_string(),
                        if (i + s) % 3 == 0 { "F" } else { "M" }.to_string(),
                        format!("{}", (v * 0.3).sin() * 10.0 + 50.0),
                        format!("{}", (v * 0.7).cos() + s as f64),
                    ]
                })
                .collect();
            (
                SiteId::new(format!("site-{s}")).unwrap(),
                SiteTable::new(header.clone(), rows)
                    .unwrap()
                    .with_id_column("patient_id")
                    .unwrap(),
            )
        })
        .collect()
}

fn policy() -> SitePolicy {
    SitePolicy {
        min_count: 3,
        allow_all_studies: true,
        max_params_per_row: f64::INFINITY,
        ..SitePolicy::default()
    }
}

/// Runs the study with every task and answer passing through protobuf bytes.
fn over_the_wire(spec: StudySpec) -> StudyState {
    let tables = tables();
    let mut state = StudyState::new(spec, tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut kinds = BTreeSet::new();
    while !state.status.is_finished() {
        for (site, table) in &tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            let bytes = pb::Task::from(&task).encode_to_vec();
            let back = Task::try_from(pb::Task::decode(&bytes[..]).unwrap()).unwrap();
            assert_eq!(back, task, "task round trip");
            kinds.insert(task.body.kind());
            let result = answer_with_memory(
                &back,
                table,
                &policy(),
                memories.entry(site.clone()).or_default(),
            )
            .result;
            let bytes = pb::TaskResult::from(&result).encode_to_vec();
            let back = TaskResult::try_from(pb::TaskResult::decode(&bytes[..]).unwrap()).unwrap();
            assert_eq!(back, result, "result round trip");
            state.accept(site, back, bytes.len() as u64, 0).unwrap();
        }
    }
    assert!(
        kinds.contains("secure_keys") && kinds.contains("masked"),
        "{kinds:?}"
    );
    assert_eq!(
        state.status,
        StudyStatus::Completed,
        "{}",
        state.status.describe()
    );
    state
}

fn local(spec: StudySpec) -> StudyState {
    let sites = tables()
        .into_iter()
        .map(|(s, t)| (s, (t, policy())))
        .collect();
    run_local(spec, &sites, 500).unwrap()
}

#[test]
fn secure_studies_through_the_wire_equal_the_in_process_runs() {
    let t1 = StudySpec {
        id: federation::StudyId::new("t").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Table1(Table1Spec {
            secure_aggregation: true,
            label_column: "response".into(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            variables: vec!["age".into(), "sex".into(), "x".into()],
            categorical: vec!["sex".into()],
            resolution: 1e-9,
            depth_per_round: 4,
            on_masked_dropout: Default::default(),
        }),
    };
    assert_eq!(over_the_wire(t1.clone()).output, local(t1).output);
    let h = StudySpec {
        id: federation::StudyId::new("h").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Harmonize(HarmonizeSpec {
            secure_aggregation: true,
            features: vec!["x".into(), "y".into()],
            batch_column: None,
            covariates: vec!["age".into(), "sex".into()],
            categorical: vec!["sex".into()],
            mode: Default::default(),
            on_masked_dropout: Default::default(),
        }),
    };
    // Fresh X25519 keys per run: the masks differ, the decoded sums (and the model) do not.
    assert_eq!(over_the_wire(h.clone()).output, local(h).output);
    // A secure LASSO: every round after the key round masked (moments, IRLS sums with packed
    // and column-block x̃ᵀWx̃, evaluations without), each shape through the wire.
    let l = StudySpec {
        id: federation::StudyId::new("l").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Lasso(LassoSpec {
            label_column: "response".into(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            features: vec!["x".into(), "y".into(), "age".into()],
            nfolds: 3,
            foldid_column: None,
            nlambda: 20,
            bootstrap: 2,
            top_k: 2,
            seed: 5,
            secure_aggregation: true,
            on_masked_dropout: Default::default(),
        }),
    };
    let wire = over_the_wire(l.clone());
    assert!(
        matches!(wire.output, Some(federation::engine::StudyOutput::Lasso(_))),
        "{}",
        wire.status.describe()
    );
    assert_eq!(wire.output, local(l).output);
}

fn lasso_shape(slots: Vec<pb::LassoSlot>, features: u64) -> pb::MaskedTask {
    let mut m = masked_task();
    m.shape = Some(pb::SumShape {
        shape: Some(pb::sum_shape::Shape::LassoSums(pb::LassoSumsShape {
            features,
            fits: slots,
        })),
    });
    m.inner = Some(pb::masked_task::Inner::LassoSums(pb::LassoTask {
        site_key: 1,
        requests: vec![],
    }));
    m
}

/// The LASSO shapes decode strictly: every legal slot form reads back, and a slot that is both
/// moments and IRLS, names columns without a Hessian, is packed with columns, or names a column
/// past the features is refused naming the field, as is a feature count too large to address.
#[test]
fn malformed_lasso_shapes_are_refused_naming_the_field() {
    use federation::lasso::secure::{HessForm, LassoSlot, SlotKind};
    use federation::secure::SumShape;
    use federation::task::TaskBody;
    let slot = |moments, hessian, packed, columns: Vec<u32>| pb::LassoSlot {
        fit_id: 3,
        moments,
        hessian,
        packed,
        columns,
    };
    let good = vec![
        slot(true, false, false, vec![]),
        slot(false, false, false, vec![]),
        slot(false, true, true, vec![]),
        slot(false, true, false, vec![0, 2]),
        slot(false, true, false, vec![]),
    ];
    let task = decode_task(lasso_shape(good, 3)).unwrap();
    let TaskBody::Masked(m) = &task.body else {
        panic!("{:?}", task.body)
    };
    let kinds = |k| LassoSlot { fit_id: 3, kind: k };
    assert_eq!(
        m.shape,
        SumShape::LassoSums {
            features: 3,
            fits: vec![
                kinds(SlotKind::Moments),
                kinds(SlotKind::Irls(HessForm::None)),
                kinds(SlotKind::Irls(HessForm::Packed)),
                kinds(SlotKind::Irls(HessForm::Columns(vec![0, 2]))),
                kinds(SlotKind::Irls(HessForm::Columns(vec![]))),
            ],
        }
    );
    // Encoding gives back the same message.
    let back = pb::Task::from(&task);
    assert_eq!(Task::try_from(back).unwrap(), task);
    for bad in [
        slot(true, true, false, vec![]),
        slot(true, false, false, vec![1]),
        slot(false, false, true, vec![]),
        slot(false, false, false, vec![1]),
        slot(false, true, true, vec![1]),
    ] {
        assert!(
            matches!(
                decode_task(lasso_shape(vec![bad.clone()], 3)).unwrap_err(),
                ConvertError::Invalid {
                    field: "LassoSlot",
                    ..
                }
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        decode_task(lasso_shape(vec![slot(false, true, false, vec![3])], 3)).unwrap_err(),
        ConvertError::Range {
            field: "LassoSlot.columns",
            value: 3
        }
    );
    assert!(matches!(
        decode_task(lasso_shape(vec![], 1 << 21)).unwrap_err(),
        ConvertError::Range {
            field: "LassoSumsShape.features",
            ..
        }
    ));
    // The pipeline's form: a fit without its id is refused.
    let mut m = masked_task();
    m.shape = Some(pb::SumShape {
        shape: Some(pb::sum_shape::Shape::PipelineLasso(
            pb::PipelineLassoShape {
                features: 2,
                fits: vec![pb::PipelineLassoFit {
                    fit: None,
                    slots: vec![],
                }],
            },
        )),
    });
    assert_eq!(
        decode_task(m).unwrap_err(),
        ConvertError::Missing("PipelineLassoFit.fit")
    );
}

fn masked_task() -> pb::MaskedTask {
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
        shape: Some(pb::SumShape {
            shape: Some(pb::sum_shape::Shape::CombatResiduals(
                pb::ComBatResidualsShape { features: 2 },
            )),
        }),
        inner: Some(pb::masked_task::Inner::Table1Summary(
            pb::Table1SummaryTask {
                continuous: vec![],
                categorical: vec![],
            },
        )),
    }
}

fn decode_task(m: pb::MaskedTask) -> Result<Task, ConvertError> {
    Task::try_from(pb::Task {
        study_id: "s".into(),
        study_hash: "h".into(),
        study_spec_json: "{}".into(),
        round: 2,
        body: Some(pb::task::Body::Masked(m)),
    })
}

#[test]
fn malformed_secure_messages_are_refused_naming_the_field() {
    assert!(decode_task(masked_task()).is_ok());
    let mut m = masked_task();
    m.keys[0].public_key.pop();
    assert_eq!(
        decode_task(m).unwrap_err(),
        ConvertError::Length {
            field: "KeyAnnouncement.public_key",
            got: 31,
            expected: 32
        }
    );
    let mut m = masked_task();
    m.round.as_mut().unwrap().participants = vec!["b".into(), "a".into(), "c".into()];
    assert!(matches!(
        decode_task(m).unwrap_err(),
        ConvertError::Invalid {
            field: "MaskedTask.round.participants",
            ..
        }
    ));
    let mut m = masked_task();
    m.round.as_mut().unwrap().participants = vec!["a".into(), "a".into(), "c".into()];
    assert!(decode_task(m).is_err());
    for (strip, field) in [
        (0, "MaskedTask.round"),
        (1, "MaskedTask.shape"),
        (2, "MaskedTask.inner"),
    ] {
        let mut m = masked_task();
        match strip {
            0 => m.round = None,
            1 => m.shape = None,
            _ => m.inner = None,
        }
        assert_eq!(decode_task(m).unwrap_err(), ConvertError::Missing(field));
    }
    let mut m = masked_task();
    m.shape = Some(pb::SumShape {
        shape: Some(pb::sum_shape::Shape::CombatCrossProducts(
            pb::ComBatCrossProductsShape {
                columns: u64::MAX,
                features: 1,
            },
        )),
    });
    assert!(matches!(
        decode_task(m).unwrap_err(),
        ConvertError::Range { .. }
    ));

    // Results: a short key, a masked vector without its sender.
    let result = |body| {
        TaskResult::try_from(pb::TaskResult {
            study_id: "s".into(),
            round: 1,
            body: Some(body),
        })
    };
    assert!(matches!(
        result(pb::task_result::Body::SecureKey(pb::SecureKeyResult {
            public_key: vec![1; 33],
            inner: None,
            attestation: None,
        }))
        .unwrap_err(),
        ConvertError::Length {
            field: "SecureKeyResult.public_key",
            ..
        }
    ));
    assert_eq!(
        result(pb::task_result::Body::Masked(pb::MaskedVector {
            site_id: String::new(),
            study_id: "x".into(),
            round_id: 1,
            values: vec![1, 2],
        }))
        .unwrap_err(),
        ConvertError::Missing("MaskedVector.site_id")
    );
}
