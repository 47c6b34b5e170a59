//! The site's single gate: every outgoing result is computed and checked here, against the
//! study's hash and the site's policy, before the agent may send it. Pure: the agent does the IO.

use crate::policy::SitePolicy;
use crate::study::{AnalysisSpec, StudySpec, hash_canonical};
use crate::table::SiteTable;
use crate::task::{Released, ResultBody, SiteFailure, Task, TaskBody, TaskResult};
use crate::{harmonize, lasso, table1};

fn failure(task: &Task, message: String) -> TaskResult {
    TaskResult {
        study_id: task.study_id.clone(),
        round: task.round,
        body: ResultBody::Failure(SiteFailure { message }),
    }
}

/// A site's answer: the result to send and, when something went wrong, the full explanation for
/// the site's own log (it may name patients and values, so it never leaves).
#[derive(Debug, Clone)]
pub struct Answer {
    pub result: TaskResult,
    pub local_note: Option<String>,
}

/// Computes this site's answer to a task. Never returns row-level data: a refusal or an error
/// becomes a `Failure` carrying only a message for the statistician.
pub fn answer(task: &Task, table: &SiteTable, policy: &SitePolicy) -> Answer {
    answer_with_memory(task, table, policy, &mut SiteMemory::default())
}

/// What a site keeps between rounds of its multi-stage studies (the pipeline's fitted
/// preprocessing, meta-features and per-patient score sums), keyed by study hash. It is the
/// site's own: it never leaves the site, and the agent persists it locally.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SiteMemory {
    pub studies: std::collections::BTreeMap<String, crate::pipeline::SitePipelineState>,
    /// Per study hash: the patient sets this site released aggregates over (the differencing
    /// guard, `crate::differencing`).
    #[serde(default)]
    pub released: std::collections::BTreeMap<String, crate::differencing::ReleaseLedger>,
    /// Per study hash: the secure-aggregation session (X25519 secret, pinned peer keys, used
    /// round ids; `crate::secure`).
    #[serde(default)]
    pub secure: crate::secure::SiteSessions,
}

/// A batch of changes to the sites' kept LASSO standardisations, per study (the key of
/// [`SiteMemory::studies`]), in order: what the agent appends to its journal.
pub type KeptStdChanges = Vec<(String, crate::pipeline::site::KeptStdEntry)>;

impl SiteMemory {
    /// The changes to the kept LASSO standardisations since the last call, which the memory's
    /// own serialisation leaves out (`SitePipelineState::lasso_std`): the agent journals them
    /// and replays them with [`SiteMemory::apply_kept_std`] when it starts.
    pub fn take_kept_std(&mut self) -> KeptStdChanges {
        let mut out = Vec::new();
        for (study, s) in &mut self.studies {
            out.extend(
                std::mem::take(&mut s.kept_std_log)
                    .into_iter()
                    .map(|e| (study.clone(), e)),
            );
        }
        out
    }

    /// Replays journalled changes; those of a study this memory no longer holds are ignored.
    pub fn apply_kept_std(&mut self, changes: KeptStdChanges) {
        for (study, e) in changes {
            if let Some(s) = self.studies.get_mut(&study) {
                s.apply_kept_std(e);
            }
        }
    }

    /// Whether no study keeps any LASSO standardisation (the agent may then empty its journal).
    pub fn kept_std_is_empty(&self) -> bool {
        self.studies.values().all(|s| s.lasso_std.is_empty())
    }

    /// True (once) when an answer since the last call changed state that must be persisted.
    pub fn take_dirty(&mut self) -> bool {
        let mut any = false;
        for s in self.studies.values_mut() {
            any |= std::mem::take(&mut s.dirty);
        }
        for l in self.released.values_mut() {
            any |= l.take_dirty();
        }
        any |= self.secure.take_dirty();
        any
    }
}

/// [`answer`] for studies that keep state at the site between rounds.
pub fn answer_with_memory(
    task: &Task,
    table: &SiteTable,
    policy: &SitePolicy,
    memory: &mut SiteMemory,
) -> Answer {
    let mut local_note = None;
    let result = compute(task, table, policy, &mut local_note, memory);
    Answer { result, local_note }
}

fn compute(
    task: &Task,
    table: &SiteTable,
    policy: &SitePolicy,
    note: &mut Option<String>,
    memory: &mut SiteMemory,
) -> TaskResult {
    let hash = hash_canonical(&task.study_spec_json);
    if hash != task.study_hash {
        return failure(
            task,
            format!(
                "the study spec sent with the task hashes to {hash}, not to the announced {}; refusing",
                task.study_hash
            ),
        );
    }
    if !policy.allows_study(&hash) {
        return failure(
            task,
            format!(
                "this site's policy does not allow study {hash}; the site admin adds it to allowed_studies in policy.toml to take part"
            ),
        );
    }
    let spec: StudySpec = match serde_json::from_str(&task.study_spec_json) {
        Ok(s) => s,
        Err(e) => return failure(task, format!("the study spec is not valid: {e}")),
    };
    if spec.id != task.study_id {
        return failure(
            task,
            "the task's study id differs from its spec's id; refusing".into(),
        );
    }
    let secure_study = spec.secure_aggregation();
    // Taken out of the memory while the answer is computed (the analyses borrow the memory
    // too) and put back whatever happens.
    let mut ledger = memory.released.remove(&hash.0).unwrap_or_default();
    let guarded =
        crate::differencing::guarded(task, &spec, table, &mut ledger, policy.min_count, || {
            let body = if let Some(refusal) = plain_sum_refusal(&task.body, secure_study, policy) {
                Err((String::new(), refusal))
            } else {
                dispatch(&spec, &hash.0, task, &task.body, table, policy, memory)
            };
            let released = body.is_ok();
            (body, released)
        });
    memory.released.insert(hash.0.clone(), ledger);
    let body = guarded.unwrap_or_else(|refusal| Err((String::new(), refusal)));
    let result = TaskResult {
        study_id: task.study_id.clone(),
        round: task.round,
        body: match body {
            Ok(b) => b,
            Err((local, public)) => {
                if !local.is_empty() {
                    *note = Some(local);
                }
                ResultBody::Failure(SiteFailure { message: public })
            }
        },
    };
    release_check(result, policy)
}

/// The last step of every outgoing result, the one check no answer bypasses: whatever the
/// analysis code did, no count between 1 and `min_count − 1` leaves (defence in depth behind
/// each analysis' own suppression; a masked round's plain answer is checked before masking).
/// Returns the result, or a failure naming the rule in its place.
pub fn release_check(result: TaskResult, policy: &SitePolicy) -> TaskResult {
    if let Some(min) = result.smallest_released_count()
        && min < policy.min_count
    {
        return TaskResult {
            study_id: result.study_id,
            round: result.round,
            body: ResultBody::Failure(SiteFailure {
                message: format!(
                    "internal disclosure check: the answer held a count of {min} < min_count {}; nothing was sent (please report this bug)",
                    policy.min_count
                ),
            }),
        };
    }
    result
}

/// The answer to a task the agent could not decode (typically another release of the
/// aggregator): a failure naming the reason, through [`release_check`] like every other answer,
/// so that the agent never builds a result itself. Errors when the study id is not a valid id
/// (then nothing can be addressed to the study, and the agent only logs).
pub fn unreadable_task(study_id: &str, round: u32, reason: String) -> Result<TaskResult, String> {
    let study_id = crate::StudyId::new(study_id).map_err(|e| e.to_string())?;
    Ok(release_check(
        TaskResult {
            study_id,
            round,
            body: ResultBody::Failure(SiteFailure { message: reason }),
        },
        &SitePolicy::default(),
    ))
}

/// Summed requests that have a masked form: under a study with `secure_aggregation` or a site
/// policy with `require_secure_aggregation`, they are answered only inside a masked round.
fn is_plain_sum(body: &TaskBody) -> bool {
    matches!(
        body,
        TaskBody::Table1Summary(_)
            | TaskBody::ComBatCrossProducts(_)
            | TaskBody::ComBatResiduals(_)
            | TaskBody::LassoSums(_)
            | TaskBody::Pipeline(_)
    )
}

/// Why a plain summed request is refused, if it is.
fn plain_sum_refusal(body: &TaskBody, secure_study: bool, policy: &SitePolicy) -> Option<String> {
    if !is_plain_sum(body) {
        return None;
    }
    // A secure pipeline study sends its summed stages masked (`pipeline::secure`); its other
    // requests (column names, ComBat levels and per-batch estimates, base-learner training,
    // model relay, scoring) are not summed statistics and stay plain. A summed stage that still
    // has no masked form is refused under `require_secure_aggregation`.
    if secure_study
        && let TaskBody::Pipeline(t) = body
        && !crate::pipeline::secure::has_masked_form(&t.stage)
    {
        if policy.require_secure_aggregation && crate::pipeline::secure::is_unmasked_sum(&t.stage) {
            return Some(format!(
                "this site's policy requires secure aggregation for every summed statistic (require_secure_aggregation = true), and a secure pipeline study's {} stage sends its sums in the clear (it has no masked form yet); this site cannot take part in this study under that policy",
                t.stage.name()
            ));
        }
        return None;
    }
    if secure_study {
        return Some(format!(
            "the study spec asks for secure aggregation, but the aggregator sent a plain {} request; this site sends summed statistics of this study only masked",
            body.kind()
        ));
    }
    if policy.require_secure_aggregation {
        return Some(format!(
            "this site's policy requires secure aggregation (require_secure_aggregation = true) for summed statistics, and this {} request is plain; submit the study with secure_aggregation = true in its analysis (Table 1, ComBat and LASSO studies support it)",
            body.kind()
        ));
    }
    None
}

type Answered = Result<ResultBody, (String, String)>;

/// The analysis half that answers `body` (recursing into the inner request of a key or masked
/// round). Every branch returns the plain answer or a (local, public) error pair.
fn dispatch(
    spec: &StudySpec,
    hash: &str,
    task: &Task,
    body: &TaskBody,
    table: &SiteTable,
    policy: &SitePolicy,
    memory: &mut SiteMemory,
) -> Answered {
    match (&spec.analysis, body) {
        (AnalysisSpec::Table1(t), TaskBody::Table1Summary(s)) => {
            table1::site_summary(table, t, s, policy)
                .map(ResultBody::Table1Summary)
                .map_err(|e| (e.to_string(), e.public_message()))
        }
        (AnalysisSpec::Table1(t), TaskBody::Table1Levels(s)) => table1::site_levels(table, t, s)
            .map(ResultBody::Table1Levels)
            .map_err(|e| (e.to_string(), e.public_message())),
        (AnalysisSpec::Table1(t), TaskBody::Histogram(h)) => {
            table1::site_histogram(table, t, h, policy)
                .map(ResultBody::Histogram)
                .map_err(|e| (e.to_string(), e.public_message()))
        }
        (
            AnalysisSpec::Harmonize(h),
            body @ (TaskBody::ComBatLevels(_)
            | TaskBody::ComBatCrossProducts(_)
            | TaskBody::ComBatResiduals(_)
            | TaskBody::ComBatEstimate(_)),
        ) => harmonize::site_answer(table, h, body, policy)
            .map_err(|e| (e.to_string(), e.public_message())),
        (AnalysisSpec::Lasso(l), TaskBody::LassoSums(t)) => {
            lasso::site_answer(table, l, t, policy).map_err(|e| (e.to_string(), e.public_message()))
        }
        (AnalysisSpec::Pipeline(p), TaskBody::Pipeline(t)) => {
            let state = memory.studies.entry(hash.to_string()).or_default();
            crate::pipeline::site_answer(table, p, t, task.round, policy, state)
                .map(ResultBody::Pipeline)
                .map_err(|e| (e.to_string(), e.public_message()))
        }
        (_, TaskBody::SecureKeys(k)) => {
            let inner = match k.inner.as_deref() {
                None => None,
                // Only unsummed first requests ride on the key round: a summed one must be
                // masked, which needs the keys this round establishes.
                Some(inner @ (TaskBody::ComBatLevels(_) | TaskBody::Table1Levels(_))) => Some(
                    Box::new(dispatch(spec, hash, task, inner, table, policy, memory)?),
                ),
                Some(other) => {
                    return Err((
                        String::new(),
                        format!(
                            "a {} request cannot ride on the secure-aggregation key round; refusing",
                            other.kind()
                        ),
                    ));
                }
            };
            let public_key = memory.secure.announce(hash);
            let attestation = memory
                .secure
                .attest(hash, &public_key)
                .map_err(|e| (e.clone(), e))?;
            Ok(ResultBody::SecureKey(crate::task::SecureKeyResult {
                public_key,
                inner,
                attestation,
            }))
        }
        (_, TaskBody::Masked(m)) => {
            if m.round.study_id != crate::secure::session_label(&spec.analysis) {
                return Err((
                    String::new(),
                    "the masked round names another study; refusing".into(),
                ));
            }
            let pipeline_masked = matches!(&*m.inner, TaskBody::Pipeline(t)
                if crate::pipeline::secure::has_masked_form(&t.stage));
            if !is_plain_sum(&m.inner)
                || (matches!(*m.inner, TaskBody::Pipeline(_)) && !pipeline_masked)
            {
                return Err((
                    String::new(),
                    format!("a {} request has no masked form; refusing", m.inner.kind()),
                ));
            }
            // The pipeline's masked score and follow-up rounds pack the site's bins unmerged
            // (`pipeline::secure::site_masked_metrics`): they are never
            // released as they are, only inside the sum, which the aggregator merges to the
            // round's min_count (checked against this site's own by `site_binned_scores`). The
            // per-site count check below therefore does not apply to them.
            if let (AnalysisSpec::Pipeline(p), TaskBody::Pipeline(t), shape) =
                (&spec.analysis, &*m.inner, &m.shape)
                && matches!(
                    shape,
                    crate::secure::SumShape::PipelineScores { .. }
                        | crate::secure::SumShape::PipelineFollowUp(_)
                )
            {
                let state = memory.studies.entry(hash.to_string()).or_default();
                let plain =
                    crate::pipeline::secure::site_masked_metrics(table, p, t, policy, state, shape)
                        .map(ResultBody::Pipeline)
                        .map_err(|e| (e.to_string(), e.public_message()))?;
                return memory
                    .secure
                    .mask(hash, m, &plain)
                    .map(ResultBody::Masked)
                    .map_err(|e| (String::new(), e.to_string()));
            }
            let plain = dispatch(spec, hash, task, &m.inner, table, policy, memory)?;
            // The single gate's count check applies to the plain answer before it is masked.
            let check = TaskResult {
                study_id: task.study_id.clone(),
                round: task.round,
                body: plain.clone(),
            };
            if let Some(min) = check.smallest_released_count()
                && min < policy.min_count
            {
                return Err((
                    String::new(),
                    format!(
                        "internal disclosure check: the answer held a count of {min} < min_count {}; nothing was sent (please report this bug)",
                        policy.min_count
                    ),
                ));
            }
            memory
                .secure
                .mask(hash, m, &plain)
                .map(ResultBody::Masked)
                .map_err(|e| (String::new(), e.to_string()))
        }
        (analysis, body) => Err((
            String::new(),
            format!(
                "a {} task does not belong to a {} study; refusing",
                body.kind(),
                analysis.kind()
            ),
        )),
    }
}

/// One line describing the shape of a result for the audit log (never the values).
pub fn describe(result: &TaskResult) -> String {
    let counts = |r: &TaskResult| -> (usize, usize) {
        let mut released = 0;
        let mut suppressed = 0;
        let mut f = |c: &Released<u64>| match c {
            Released::Value(_) => released += 1,
            Released::Suppressed => suppressed += 1,
        };
        if let ResultBody::Table1Summary(s) = &r.body {
            s.group_n.iter().for_each(&mut f);
            f(&s.label_missing);
            for c in &s.continuous {
                c.missing.iter().for_each(&mut f);
            }
            for c in &s.categorical {
                c.missing.iter().for_each(&mut f);
                for l in &c.levels {
                    l.counts.iter().for_each(&mut f);
                }
            }
        }
        (released, suppressed)
    };
    let smallest = result
        .smallest_released_count()
        .map_or("none".to_string(), |m| m.to_string());
    match &result.body {
        ResultBody::Table1Summary(s) => {
            let (released, suppressed) = counts(result);
            format!(
                "group sizes; moments of {} continuous and level counts of {} categorical variables; {released} counts (smallest nonzero {smallest}), {suppressed} suppressed",
                s.continuous.len(),
                s.categorical.len()
            )
        }
        ResultBody::Histogram(h) => {
            let nodes: usize = h
                .variables
                .iter()
                .map(|v| v.groups.iter().map(Vec::len).sum::<usize>())
                .sum();
            format!(
                "histogram tree nodes for {} variables: {nodes} node counts (smallest {smallest})",
                h.variables.len()
            )
        }
        ResultBody::ComBatLevels(l) => format!(
            "batch labels ({}) and categorical levels present; no counts",
            l.batches.len()
        ),
        ResultBody::ComBatCrossProducts(c) => format!(
            "W'W ({} values) and W'Y ({} values) over {} rows",
            c.wtw.len(),
            c.wty.len(),
            c.n
        ),
        ResultBody::ComBatResiduals(r) => format!(
            "residual sums of squares for {} features over {} rows",
            r.rss.len(),
            r.n
        ),
        ResultBody::ComBatEstimates(b) => format!(
            "ComBat location/scale estimates for {} batches (smallest batch {smallest})",
            b.len()
        ),
        ResultBody::LassoSums(f) => format!(
            "LASSO weighted sums for {} fits (moments or IRLS sums; no rows)",
            f.len()
        ),
        ResultBody::Pipeline(r) => r.describe(),
        ResultBody::Table1Levels(l) => format!(
            "level names of {} categorical variables ({} levels); no counts",
            l.len(),
            l.iter().map(Vec::len).sum::<usize>()
        ),
        ResultBody::SecureKey(k) => format!(
            "secure-aggregation public key{}",
            k.inner.as_deref().map_or(String::new(), |inner| {
                let inner = TaskResult {
                    study_id: result.study_id.clone(),
                    round: result.round,
                    body: inner.clone(),
                };
                format!(" and {}", describe(&inner))
            })
        ),
        ResultBody::Masked(v) => format!(
            "{} pairwise-masked fixed-point values for secure round {} (the plain answer was checked before masking)",
            v.values.len(),
            v.round_id
        ),
        ResultBody::Failure(f) => format!("failure message: {}", f.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::StudyId;
    use crate::study::Table1Spec;
    use crate::task::Table1SummaryTask;

    fn table() -> SiteTable {
        let mut rows = Vec::new();
        for i in 0..12 {
            let age = if i == 7 {
                "abc".to_string()
            } else {
                (40 + i).to_string()
            };
            rows.push(vec![format!("PX{i:03}"), age, (i % 2).to_string()]);
        }
        SiteTable::new(
            vec!["patient_id".into(), "age".into(), "response".into()],
            rows,
        )
        .unwrap()
        .with_id_column("patient_id")
        .unwrap()
    }

    fn task(spec: &StudySpec) -> Task {
        Task {
            study_id: spec.id.clone(),
            study_hash: spec.hash(),
            study_spec_json: spec.canonical_json(),
            round: 1,
            body: TaskBody::Table1Summary(Table1SummaryTask {
                continuous: vec!["age".into()],
                categorical: vec![],
            }),
        }
    }

    fn spec() -> StudySpec {
        StudySpec {
            id: StudyId::new("s").unwrap(),
            title: String::new(),
            analysis: AnalysisSpec::Table1(Table1Spec {
                secure_aggregation: false,
                label_column: "response".into(),
                positive_label: "1".into(),
                negative_label: "0".into(),
                variables: vec!["age".into()],
                categorical: vec![],
                resolution: 1e-9,
                depth_per_round: 4,
                on_masked_dropout: Default::default(),
            }),
        }
    }

    #[test]
    fn failures_never_carry_patient_ids_or_values() {
        let spec = spec();
        let policy = SitePolicy {
            allowed_studies: vec![spec.hash().0],
            ..SitePolicy::default()
        };
        let a = answer(&task(&spec), &table(), &policy);
        let ResultBody::Failure(f) = &a.result.body else {
            panic!("expected a failure, got {:?}", a.result.body)
        };
        assert!(f.message.contains("\"age\""), "{}", f.message);
        assert!(
            !f.message.contains("PX007") && !f.message.contains("abc"),
            "{}",
            f.message
        );
        // The full explanation stays local.
        let note = a.local_note.unwrap();
        assert!(note.contains("PX007") && note.contains("abc"), "{note}");
    }

    #[test]
    fn studies_outside_the_policy_or_with_a_forged_hash_are_refused() {
        let spec = spec();
        let t = task(&spec);
        let a = answer(&t, &table(), &SitePolicy::default());
        let ResultBody::Failure(f) = &a.result.body else {
            panic!()
        };
        assert!(f.message.contains("does not allow study"), "{}", f.message);

        let mut forged = t.clone();
        forged.study_spec_json = forged.study_spec_json.replace("\"age\"", "\"bmi\"");
        let policy = SitePolicy {
            allow_all_studies: true,
            ..SitePolicy::default()
        };
        let a = answer(&forged, &table(), &policy);
        let ResultBody::Failure(f) = &a.result.body else {
            panic!()
        };
        assert!(f.message.contains("hashes to"), "{}", f.message);
    }
}
