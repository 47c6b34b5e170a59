//! Table 1 (baseline characteristics by outcome group), federated: the site half and the
//! aggregator half, from aggregates only.
//!
//! Protocol:
//! 1. `Table1Summary`: each site sends per-group sizes, per-group moments (n, mean, M2) of every
//!    continuous variable and per-group counts of every categorical level. Any count between 1 and
//!    `min_count − 1` is suppressed at the site; the aggregator shows every cell a suppression
//!    touches as `suppressed` — never a silently smaller number.
//! 2. `Histogram` rounds (continuous variables): medians, quartiles and the Mann-Whitney U test
//!    need ranks, which moments cannot give. The aggregator picks a root interval that provably
//!    holds every value (Chebyshev, see `stats::tree`) and refines a laminar binary tree over it:
//!    each round, sites split the requested nodes as deep as their `min_count` allows (both
//!    children 0 or ≥ `min_count`, checked along the whole path from the root, so no two answers
//!    can be differenced to isolate fewer than `min_count` patients). The aggregator keeps
//!    refining the cells that matter — those holding both groups (rank ties) or a quartile's order
//!    statistic — until they are narrower than `resolution × root width` or a site refuses.
//!    With data recorded at a finite resolution (ages in years, Ki-67 in 0.1 %), cells narrower
//!    than that resolution hold equal values only, and the Mann-Whitney statistic equals the pooled
//!    one exactly; quartiles are exact to the reported resolution.
//!
//! Secure aggregation (`secure_aggregation = true`): round 1 is the key round, in which each
//! site also names the categorical levels present (as the plain summary does, without counts);
//! round 2 is the summary, masked: counts, 0/1 suppression flags and per-group Σx, Σx² travel in
//! fixed point (`crate::secure::SumShape::Table1Summary`), so the aggregator learns the pooled
//! table and, per cell, how many sites suppressed it but not which (`suppressed_by` then names
//! the pseudo-site `masked-sum`). Histogram rounds stay plain.
//!
//! Dropout (`on_masked_dropout = "continue_without_site"`, `crate::engine`): a site silent past
//! the deadline of the masked summary round is left out and the summary round restarts over the
//! survivors ([`Table1Driver::drop_sites`]). The only state built before it that holds the
//! dropped site's data is the union of the categorical levels (the key round's plain answers),
//! so the restarted round's layout is rebuilt from the survivors' own levels, kept per site for
//! this: a level only the dropped site held is not listed, and the table equals a run over the
//! survivors alone. Histogram rounds are plain and come after the summary (whose sums never
//! included the dropped site), so a site silent there pauses the study as any plain round does.
//!
//! Tests: Student's t (pooled variance, R `t.test(var.equal = TRUE)`); Mann-Whitney U with mid-rank
//! ties, normal approximation with tie and continuity correction (R `wilcox.test(exact = FALSE,
//! correct = TRUE)`), statistic W for the positive group; Pearson χ² without Yates' correction
//! (R `chisq.test(correct = FALSE)`). Quartiles are R type 7.

use crate::engine::{DroppedSite, Step, StudyOutput};
use crate::ids::SiteId;
use crate::policy::SitePolicy;
use crate::secure::{SecureRounds, SumShape};
use crate::study::{Table1Spec, VariableKind};
use crate::table::{SiteTable, TableError};
use crate::task::{
    CategoricalSummary, ContinuousSummary, GROUPS, GroupMoments, HistogramAnswer, HistogramRequest,
    HistogramResult, HistogramTask, LevelCounts, Node, NodeRequest, Released, ResultBody,
    SecureKeysTask, Table1SummaryResult, Table1SummaryTask, TaskBody,
};
use serde::{Deserialize, Serialize};
use stats::moments::Moments;
use stats::tree::{HistogramState, NodeId, RefineRequest, RefineTargets, TreeError, TreeRoot};
use std::collections::BTreeMap;

/// Why a site cannot answer a Table 1 task.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("the task asks for variable {0:?}, which the study spec does not list; refusing")]
    OutsideSpec(String),
    #[error("variable {variable:?}: {message}")]
    Tree { variable: String, message: String },
}

impl SiteError {
    /// The part of the error that may leave the site: names columns and rules, never a patient id
    /// or a value (the full text stays in the site's own log).
    pub fn public_message(&self) -> String {
        match self {
            SiteError::Table(t) => match t {
                TableError::NotNumeric { column, .. } => format!(
                    "column {column:?} holds a value that is not a number at this site (the site admin sees which in the agent's log)"
                ),
                TableError::BadLabel {
                    column, expected, ..
                } => format!(
                    "label column {column:?} holds a value other than {expected} at this site (details in the agent's log)"
                ),
                TableError::MissingColumn { column, .. } => {
                    format!("column {column:?} is missing from this site's table")
                }
                other => format!("the site's table is malformed: {other}"),
            },
            SiteError::OutsideSpec(_) => self.to_string(),
            SiteError::Tree { variable, .. } => format!(
                "variable {variable:?}: the site refused a histogram request (details in the agent's log)"
            ),
        }
    }
}

fn to_node(n: NodeId) -> Node {
    Node {
        depth: n.depth(),
        index: n.index(),
    }
}
fn to_node_id(n: Node) -> Result<NodeId, TreeError> {
    NodeId::new(n.depth, n.index)
}

fn release(policy: &SitePolicy, count: u64) -> Released<u64> {
    if policy.count_releasable(count) {
        Released::Value(count)
    } else {
        Released::Suppressed
    }
}

/// Labelled rows split by group (index 0 positive).
fn groups(table: &SiteTable, spec: &Table1Spec) -> Result<Vec<Option<usize>>, TableError> {
    Ok(table
        .label_column(
            &spec.label_column,
            &spec.positive_label,
            &spec.negative_label,
        )?
        .into_iter()
        .map(|l| l.map(|positive| if positive { 0 } else { 1 }))
        .collect())
}

fn check_in_spec(spec: &Table1Spec, names: &[String], kind: VariableKind) -> Result<(), SiteError> {
    for n in names {
        if !spec.variables.contains(n) || spec.kind_of(n) != kind {
            return Err(SiteError::OutsideSpec(n.clone()));
        }
    }
    Ok(())
}

/// Site half of round 1.
pub fn site_summary(
    table: &SiteTable,
    spec: &Table1Spec,
    task: &Table1SummaryTask,
    policy: &SitePolicy,
) -> Result<Table1SummaryResult, SiteError> {
    check_in_spec(spec, &task.continuous, VariableKind::Continuous)?;
    check_in_spec(spec, &task.categorical, VariableKind::Categorical)?;
    let group = groups(table, spec)?;
    let mut group_n = [0u64; GROUPS];
    let mut label_missing = 0u64;
    for g in &group {
        match g {
            Some(g) => group_n[*g] += 1,
            None => label_missing += 1,
        }
    }
    let mut continuous = Vec::new();
    for name in &task.continuous {
        let values = table.numeric_column(name)?;
        let mut per_group: [Vec<f64>; GROUPS] = Default::default();
        let mut missing = [0u64; GROUPS];
        for (v, g) in values.iter().zip(&group) {
            if let Some(g) = g {
                match v {
                    Some(x) => per_group[*g].push(*x),
                    None => missing[*g] += 1,
                }
            }
        }
        let groups = per_group.map(|vals| {
            if policy.count_releasable(vals.len() as u64) {
                let m = Moments::from_values(&vals);
                Released::Value(GroupMoments {
                    n: m.n,
                    mean: m.mean,
                    m2: m.m2,
                })
            } else {
                Released::Suppressed
            }
        });
        continuous.push(ContinuousSummary {
            variable: name.clone(),
            groups,
            missing: missing.map(|c| release(policy, c)),
        });
    }
    let mut categorical = Vec::new();
    for name in &task.categorical {
        let values = table.text_column(name)?;
        let mut levels: BTreeMap<&str, [u64; GROUPS]> = BTreeMap::new();
        let mut missing = [0u64; GROUPS];
        for (v, g) in values.iter().zip(&group) {
            if let Some(g) = g {
                match v {
                    Some(level) => levels.entry(level).or_default()[*g] += 1,
                    None => missing[*g] += 1,
                }
            }
        }
        categorical.push(CategoricalSummary {
            variable: name.clone(),
            levels: levels
                .into_iter()
                .map(|(level, c)| LevelCounts {
                    level: level.to_string(),
                    counts: c.map(|c| release(policy, c)),
                })
                .collect(),
            missing: missing.map(|c| release(policy, c)),
        });
    }
    Ok(Table1SummaryResult {
        group_n: group_n.map(|c| release(policy, c)),
        label_missing: release(policy, label_missing),
        continuous,
        categorical,
    })
}

/// Site half of the levels round of a secure Table 1: per categorical variable of the task, the
/// sorted levels present among the labelled rows (exactly the levels `site_summary` would list,
/// without their counts).
pub fn site_levels(
    table: &SiteTable,
    spec: &Table1Spec,
    task: &Table1SummaryTask,
) -> Result<Vec<Vec<String>>, SiteError> {
    check_in_spec(spec, &task.categorical, VariableKind::Categorical)?;
    let group = groups(table, spec)?;
    let mut out = Vec::new();
    for name in &task.categorical {
        let values = table.text_column(name)?;
        let levels: std::collections::BTreeSet<&str> = values
            .iter()
            .zip(&group)
            .filter_map(|(v, g)| g.and(*v))
            .collect();
        out.push(levels.into_iter().map(str::to_string).collect());
    }
    Ok(out)
}

/// Site half of a histogram round.
pub fn site_histogram(
    table: &SiteTable,
    spec: &Table1Spec,
    task: &HistogramTask,
    policy: &SitePolicy,
) -> Result<HistogramResult, SiteError> {
    let names: Vec<String> = task.variables.iter().map(|v| v.variable.clone()).collect();
    check_in_spec(spec, &names, VariableKind::Continuous)?;
    let group = groups(table, spec)?;
    let mut variables = Vec::new();
    for req in &task.variables {
        let values = table.numeric_column(&req.variable)?;
        let mut per_group: [Vec<f64>; GROUPS] = Default::default();
        for (v, g) in values.iter().zip(&group) {
            if let (Some(x), Some(g)) = (v, g) {
                per_group[*g].push(*x);
            }
        }
        let root = TreeRoot::new(req.root_lo, req.root_hi).map_err(|e| SiteError::Tree {
            variable: req.variable.clone(),
            message: e.to_string(),
        })?;
        let mut answer: [Vec<(Node, u64)>; GROUPS] = Default::default();
        for r in &req.requests {
            let g = r.group as usize;
            let tree_err = |e: TreeError| SiteError::Tree {
                variable: req.variable.clone(),
                message: e.to_string(),
            };
            let vals = per_group.get(g).ok_or_else(|| SiteError::Tree {
                variable: req.variable.clone(),
                message: format!("group {g} does not exist"),
            })?;
            let node = to_node_id(r.node).map_err(tree_err)?;
            // `site_release` itself refuses any node outside this site's canonical tree (see its
            // disclosure guarantee), so a misbehaving aggregator gets an error, not a count.
            let released =
                stats::tree::site_release(vals, &root, node, r.extra_depth, policy.min_count)
                    .map_err(tree_err)?;
            answer[g].extend(released.into_iter().map(|(n, c)| (to_node(n), c)));
        }
        for g in &mut answer {
            g.sort_by_key(|(n, _)| to_node_id(*n).ok());
        }
        variables.push(HistogramAnswer {
            variable: req.variable.clone(),
            groups: answer,
        });
    }
    Ok(HistogramResult { variables })
}

// ---------------------------------------------------------------------------------------------
// Aggregator half.

/// A continuous variable pooled over sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PooledContinuous {
    variable: String,
    /// `None` where any site suppressed that group.
    groups: [Option<GroupMoments>; GROUPS],
    missing: [Option<u64>; GROUPS],
    suppressed_by: Vec<SiteId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PooledCategorical {
    variable: String,
    levels: BTreeMap<String, [Option<u64>; GROUPS]>,
    missing: [Option<u64>; GROUPS],
    suppressed_by: Vec<SiteId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pooled {
    group_n: [Option<u64>; GROUPS],
    label_missing: Option<u64>,
    continuous: Vec<PooledContinuous>,
    categorical: Vec<PooledCategorical>,
}

/// A continuous variable's federated histogram.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VarTree {
    variable: String,
    state: HistogramState,
    /// Leaves asked about in the current round (each names its site).
    requested: Vec<RefineRequest>,
}

impl PartialEq for VarTree {
    fn eq(&self, other: &Self) -> bool {
        self.variable == other.variable
            && self.requested == other.requested
            && self.state == other.state
    }
}

/// Aggregator state of a Table 1 study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table1Driver {
    spec: Table1Spec,
    sites: Vec<SiteId>,
    pooled: Option<Pooled>,
    trees: Vec<VarTree>,
    histogram_rounds: u32,
    notes: Vec<String>,
    /// Under `secure_aggregation`: the key round (with the levels) comes first, then the masked
    /// summary round (`crate::secure`); histogram rounds stay plain.
    #[serde(default)]
    secure: Option<SecureRounds>,
    /// Under `secure_aggregation`: each site's categorical levels from the key round, so that a
    /// restart without a dropped site lists the survivors' levels only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    levels: BTreeMap<SiteId, Vec<Vec<String>>>,
    /// Sites left out after missing the masked summary round's deadline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dropped: Vec<DroppedSite>,
}

fn to_moments(m: GroupMoments) -> Moments {
    Moments {
        n: m.n,
        mean: m.mean,
        m2: m.m2,
    }
}

fn merge_moments(a: GroupMoments, b: GroupMoments) -> GroupMoments {
    let m = to_moments(a).merge(&to_moments(b));
    GroupMoments {
        n: m.n,
        mean: m.mean,
        m2: m.m2,
    }
}

fn add_released(acc: &mut Option<u64>, r: &Released<u64>, site: &SiteId, by: &mut Vec<SiteId>) {
    match r {
        Released::Value(v) => {
            if let Some(a) = acc {
                *a += v
            }
        }
        Released::Suppressed => {
            *acc = None;
            if !by.contains(site) {
                by.push(site.clone())
            }
        }
    }
}

fn summary_task(spec: &Table1Spec) -> Table1SummaryTask {
    let of = |kind| {
        spec.variables
            .iter()
            .filter(|v| spec.kind_of(v) == kind)
            .cloned()
            .collect()
    };
    Table1SummaryTask {
        continuous: of(VariableKind::Continuous),
        categorical: of(VariableKind::Categorical),
    }
}

impl Table1Driver {
    /// A new driver and its first task (the same for every site).
    pub fn start(spec: Table1Spec, sites: Vec<SiteId>) -> (Self, TaskBody) {
        let secure = spec
            .secure_aggregation
            .then(|| SecureRounds::new(&crate::study::AnalysisSpec::Table1(spec.clone()), &sites));
        let task = match secure {
            // The key round's task is the same for every site (the engine sends one task).
            Some(_) => TaskBody::SecureKeys(SecureKeysTask {
                inner: Some(Box::new(TaskBody::Table1Levels(summary_task(&spec)))),
            }),
            None => TaskBody::Table1Summary(summary_task(&spec)),
        };
        (
            Self {
                spec,
                sites,
                pooled: None,
                trees: Vec::new(),
                histogram_rounds: 0,
                notes: Vec::new(),
                secure,
                levels: BTreeMap::new(),
                dropped: Vec::new(),
            },
            task,
        )
    }

    /// Combines a complete round (results iterate in `SiteId` order).
    pub fn on_round(&mut self, results: &BTreeMap<SiteId, ResultBody>) -> Step {
        let r = match (&mut self.secure, self.pooled.is_none()) {
            (Some(s), _) if s.keys().is_empty() => self.on_key_round(results),
            (Some(s), true) => match s.open_sum(results) {
                Ok(sum) => self.on_summary(&sum),
                Err(e) => Err(e),
            },
            (None, true) => self.on_summary(results),
            (_, false) => self.on_histogram(results),
        };
        match r {
            Ok(Some(tasks)) => Step::Next(tasks),
            Ok(None) => Step::Done(StudyOutput::Table1(self.output())),
            Err(e) => Step::Failed(e),
        }
    }

    /// Secure Table 1, key round: record the keys and each site's levels, and ask for the
    /// masked summary in one layout (the union of the levels).
    fn on_key_round(
        &mut self,
        results: &BTreeMap<SiteId, ResultBody>,
    ) -> Result<Option<BTreeMap<SiteId, TaskBody>>, String> {
        let secure = self.secure.as_mut().ok_or("not a secure study")?;
        let inner = secure.on_key_round(results)?;
        let n_categorical = summary_task(&self.spec).categorical.len();
        for site in &self.sites {
            match inner.get(site) {
                Some(ResultBody::Table1Levels(l)) if l.len() == n_categorical => {
                    self.levels.insert(site.clone(), l.clone());
                }
                Some(ResultBody::Table1Levels(_)) => {
                    return Err(format!("site {site} answered a different set of variables"));
                }
                other => {
                    return Err(format!(
                        "site {site} answered the levels round with {}",
                        other.map_or("nothing", ResultBody::kind)
                    ));
                }
            }
        }
        let (tasks, shape) = self.summary_round()?;
        let secure = self.secure.as_mut().ok_or("not a secure study")?;
        Ok(Some(secure.masked(tasks, shape)?))
    }

    /// The masked summary round over the current sites: their requests and the layout listing,
    /// per categorical variable, the union of their levels.
    fn summary_round(&self) -> Result<(BTreeMap<SiteId, TaskBody>, SumShape), String> {
        let task = summary_task(&self.spec);
        let mut levels = vec![std::collections::BTreeSet::new(); task.categorical.len()];
        for site in &self.sites {
            let l = self.levels.get(site).ok_or_else(|| {
                format!(
                    "no levels recorded for site {site} (a state written before they were kept)"
                )
            })?;
            for (acc, l) in levels.iter_mut().zip(l) {
                acc.extend(l.iter().cloned());
            }
        }
        let shape = SumShape::Table1Summary {
            continuous: task.continuous.clone(),
            categorical: task
                .categorical
                .iter()
                .cloned()
                .zip(levels.into_iter().map(|l| l.into_iter().collect()))
                .collect(),
        };
        let tasks = crate::engine::same_for_all(&self.sites, TaskBody::Table1Summary(task));
        Ok((tasks, shape))
    }

    /// Dropout in the masked summary round (see the module doc): leaves `dropped` out of the
    /// rest of the study and restarts the summary round over the survivors, its layout listing
    /// their levels only. Refused, with the state unchanged (the engine then pauses), when no
    /// masked round is open or fewer than secure aggregation's minimum would remain.
    pub fn drop_sites(
        &mut self,
        dropped: &[DroppedSite],
    ) -> Result<BTreeMap<SiteId, TaskBody>, String> {
        if self.pooled.is_some() || !self.secure.as_ref().is_some_and(SecureRounds::is_open) {
            return Err("not in a masked round".into());
        }
        let gone: Vec<SiteId> = dropped.iter().map(|d| d.site.clone()).collect();
        let survivors: Vec<SiteId> = self
            .sites
            .iter()
            .filter(|s| !gone.contains(s))
            .cloned()
            .collect();
        let min = SecureRounds::policy().min_participants();
        if survivors.len() < min {
            return Err(format!(
                "only {} sites would remain, fewer than secure aggregation's {min}",
                survivors.len()
            ));
        }
        let all = std::mem::replace(&mut self.sites, survivors);
        let restarted = self.summary_round().and_then(|(tasks, shape)| {
            let secure = self.secure.as_mut().expect("checked above");
            secure.restart_without_reshaped(&gone, tasks, shape)
        });
        match restarted {
            Ok(tasks) => {
                self.dropped.extend_from_slice(dropped);
                Ok(tasks)
            }
            Err(e) => {
                self.sites = all;
                Err(e)
            }
        }
    }

    fn on_summary(
        &mut self,
        results: &BTreeMap<SiteId, ResultBody>,
    ) -> Result<Option<BTreeMap<SiteId, TaskBody>>, String> {
        let task = summary_task(&self.spec);
        let mut group_n = [Some(0u64); GROUPS];
        let mut label_missing = Some(0u64);
        let mut ignored = Vec::new();
        let mut continuous: Vec<PooledContinuous> = task
            .continuous
            .iter()
            .map(|v| PooledContinuous {
                variable: v.clone(),
                groups: [None; GROUPS],
                missing: [Some(0); GROUPS],
                suppressed_by: vec![],
            })
            .collect();
        let mut categorical: Vec<PooledCategorical> = task
            .categorical
            .iter()
            .map(|v| PooledCategorical {
                variable: v.clone(),
                levels: BTreeMap::new(),
                missing: [Some(0); GROUPS],
                suppressed_by: vec![],
            })
            .collect();
        // A group suppressed at any site has unknown pooled moments (None), never the moments
        // of the other sites.
        let mut suppressed = vec![[false; GROUPS]; continuous.len()];
        for (site, body) in results {
            let ResultBody::Table1Summary(s) = body else {
                return Err(format!(
                    "site {site} answered the summary round with {}",
                    body.kind()
                ));
            };
            for g in 0..GROUPS {
                add_released(&mut group_n[g], &s.group_n[g], site, &mut ignored);
            }
            add_released(&mut label_missing, &s.label_missing, site, &mut ignored);
            if s.continuous.len() != continuous.len() || s.categorical.len() != categorical.len() {
                return Err(format!("site {site} answered a different set of variables"));
            }
            for (i, (pc, sc)) in continuous.iter_mut().zip(&s.continuous).enumerate() {
                if pc.variable != sc.variable {
                    return Err(format!(
                        "site {site} answered variable {} out of order",
                        sc.variable
                    ));
                }
                for g in 0..GROUPS {
                    add_released(
                        &mut pc.missing[g],
                        &sc.missing[g],
                        site,
                        &mut pc.suppressed_by,
                    );
                    match sc.groups[g] {
                        Released::Value(m) => {
                            pc.groups[g] = Some(match pc.groups[g] {
                                None => m,
                                Some(acc) => merge_moments(acc, m),
                            });
                        }
                        Released::Suppressed => {
                            suppressed[i][g] = true;
                            if !pc.suppressed_by.contains(site) {
                                pc.suppressed_by.push(site.clone());
                            }
                        }
                    }
                }
            }
            for (pc, sc) in categorical.iter_mut().zip(&s.categorical) {
                if pc.variable != sc.variable {
                    return Err(format!(
                        "site {site} answered variable {} out of order",
                        sc.variable
                    ));
                }
                for g in 0..GROUPS {
                    add_released(
                        &mut pc.missing[g],
                        &sc.missing[g],
                        site,
                        &mut pc.suppressed_by,
                    );
                }
                for l in &sc.levels {
                    // A level first seen at a later site starts from the earlier sites' zeros.
                    let acc = pc
                        .levels
                        .entry(l.level.clone())
                        .or_insert([Some(0); GROUPS]);
                    for g in 0..GROUPS {
                        add_released(&mut acc[g], &l.counts[g], site, &mut pc.suppressed_by);
                    }
                }
            }
        }
        for (pc, sup) in continuous.iter_mut().zip(&suppressed) {
            for g in 0..GROUPS {
                if sup[g] {
                    pc.groups[g] = None;
                }
            }
        }
        // Histogram trees for the continuous variables whose groups are known at every site.
        let mut trees = Vec::new();
        for pc in &continuous {
            let (Some(a), Some(b)) = (pc.groups[0], pc.groups[1]) else {
                self.notes.push(format!(
                    "{}: median, IQR and Mann-Whitney not computed because a site suppressed a group",
                    pc.variable
                ));
                continue;
            };
            let all = to_moments(merge_moments(a, b));
            match TreeRoot::from_pooled_moments(&all) {
                Ok(root) => {
                    let state = HistogramState::new(
                        root,
                        self.sites.len(),
                        GROUPS,
                        self.spec.resolution * root.width(),
                    );
                    let requested = state.initial_requests(self.spec.depth_per_round);
                    trees.push(VarTree {
                        variable: pc.variable.clone(),
                        state,
                        requested,
                    })
                }
                Err(e) => self
                    .notes
                    .push(format!("{}: no histogram ({e})", pc.variable)),
            }
        }
        self.pooled = Some(Pooled {
            group_n,
            label_missing,
            continuous,
            categorical,
        });
        self.trees = trees;
        Ok(self.histogram_task())
    }

    fn on_histogram(
        &mut self,
        results: &BTreeMap<SiteId, ResultBody>,
    ) -> Result<Option<BTreeMap<SiteId, TaskBody>>, String> {
        self.histogram_rounds += 1;
        let extra = self.spec.depth_per_round;
        for tree in &mut self.trees {
            if tree.requested.is_empty() {
                continue;
            }
            for (site, body) in results {
                let idx = self
                    .sites
                    .iter()
                    .position(|s| s == site)
                    .ok_or_else(|| format!("site {site} is not part of this study"))?;
                let mine: Vec<&RefineRequest> =
                    tree.requested.iter().filter(|r| r.site == idx).collect();
                if mine.is_empty() {
                    continue;
                }
                let ResultBody::Histogram(h) = body else {
                    return Err(format!(
                        "site {site} answered a histogram round with {}",
                        body.kind()
                    ));
                };
                let ans = h
                    .variables
                    .iter()
                    .find(|a| a.variable == tree.variable)
                    .ok_or_else(|| {
                        format!("site {site} did not answer variable {}", tree.variable)
                    })?;
                for r in mine {
                    let inside: Vec<(NodeId, u64)> = ans.groups[r.group]
                        .iter()
                        .map(|(n, c)| Ok((to_node_id(*n)?, *c)))
                        .collect::<Result<Vec<_>, TreeError>>()
                        .map_err(|e| format!("site {site}: {e}"))?
                        .into_iter()
                        .filter(|(n, _)| r.node.contains(n))
                        .collect();
                    tree.state
                        .apply_release(idx, r.group, r.node, &inside)
                        .map_err(|e| format!("variable {}: site {site}: {e}", tree.variable))?;
                }
            }
            tree.state.finish_round(&tree.requested);
            tree.requested = tree
                .state
                .next_requests(&RefineTargets::table1(0, 1), extra)
                .map_err(|e| format!("variable {}: {e}", tree.variable))?;
        }
        Ok(self.histogram_task())
    }

    /// The next histogram round (each site's own requests; a site with none gets an empty task
    /// so that every site answers every round), or `None` when every histogram is final.
    fn histogram_task(&self) -> Option<BTreeMap<SiteId, TaskBody>> {
        if self.trees.iter().all(|t| t.requested.is_empty()) {
            return None;
        }
        let per_site = self
            .sites
            .iter()
            .enumerate()
            .map(|(idx, site)| {
                let variables = self
                    .trees
                    .iter()
                    .filter_map(|t| {
                        let requests: Vec<NodeRequest> = t
                            .requested
                            .iter()
                            .filter(|r| r.site == idx)
                            .map(|r| NodeRequest {
                                group: r.group as u8,
                                node: to_node(r.node),
                                extra_depth: r.extra_depth,
                            })
                            .collect();
                        (!requests.is_empty()).then(|| HistogramRequest {
                            variable: t.variable.clone(),
                            root_lo: t.state.root().lo(),
                            root_hi: t.state.root().hi(),
                            requests,
                        })
                    })
                    .collect();
                (
                    site.clone(),
                    TaskBody::Histogram(HistogramTask { variables }),
                )
            })
            .collect();
        Some(per_site)
    }

    fn output(&self) -> Table1Output {
        build_output(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Output.

/// Descriptive statistics of one group of a continuous variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinuousStats {
    pub n: u64,
    pub mean: f64,
    /// Sample SD (divisor n − 1).
    pub sd: f64,
    /// Type-7 quartiles from the federated histogram, `None` where a suppression prevented it.
    pub quartiles: Option<[f64; 3]>,
}

/// A hypothesis test's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Test {
    pub name: String,
    pub statistic: f64,
    pub df: Option<f64>,
    pub p_value: f64,
    /// Present when the sites' `min_count` kept the histogram too coarse to pin the statistic
    /// down: the range of values consistent with what was released.
    pub bounds: Option<TestBounds>,
}

/// The range a rank statistic can take given the released histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestBounds {
    pub statistic: [f64; 2],
    pub p_value: [f64; 2],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelResult {
    pub level: String,
    /// Count per column: overall, group 1, group 0; `None` = suppressed.
    pub counts: [Option<u64>; 3],
}

/// One variable's Table 1 result. Index order of the `[_; 3]` arrays: overall, group 1, group 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VariableResult {
    Continuous {
        variable: String,
        stats: [Option<ContinuousStats>; 3],
        t_test: Option<Test>,
        mann_whitney: Option<Test>,
        missing: [Option<u64>; 3],
        /// Width of the widest histogram cell the quartiles were read from.
        resolution: Option<f64>,
        suppressed_by: Vec<SiteId>,
    },
    Categorical {
        variable: String,
        levels: Vec<LevelResult>,
        chi_square: Option<Test>,
        missing: [Option<u64>; 3],
        suppressed_by: Vec<SiteId>,
    },
}

/// The finished Table 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table1Output {
    /// Patients per column (overall, group 1, group 0); `None` = suppressed.
    pub n: [Option<u64>; 3],
    pub label_missing: Option<u64>,
    pub variables: Vec<VariableResult>,
    pub histogram_rounds: u32,
    pub sites: Vec<SiteId>,
    /// What could not be computed and why.
    pub notes: Vec<String>,
    /// Sites left out after missing a masked round's deadline (round and reason); `sites` lists
    /// only those whose data the table holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DroppedSite>,
}

fn sum3(a: Option<u64>, b: Option<u64>) -> [Option<u64>; 3] {
    [a.zip(b).map(|(a, b)| a + b), a, b]
}

fn build_output(d: &Table1Driver) -> Table1Output {
    let pooled = d
        .pooled
        .as_ref()
        .expect("output only after the summary round");
    let mut variables = Vec::new();
    for name in &d.spec.variables {
        if let Some(pc) = pooled.continuous.iter().find(|c| &c.variable == name) {
            let tree = d.trees.iter().find(|t| &t.variable == name);
            let [a, b] = pc.groups;
            let all = a.zip(b).map(|(a, b)| merge_moments(a, b));
            let mut resolution: Option<f64> = None;
            let mut quartiles = |groups: &[usize]| -> Option<[f64; 3]> {
                let t = tree?;
                let mut q = [0.0; 3];
                for (i, p) in [0.25, 0.5, 0.75].into_iter().enumerate() {
                    let e = t.state.quantile(groups, p).ok()?;
                    q[i] = e.value;
                    resolution = Some(resolution.unwrap_or(0.0).max(e.resolution()));
                }
                Some(q)
            };
            let q_all = quartiles(&[0, 1]);
            let q1 = quartiles(&[0]);
            let q0 = quartiles(&[1]);
            let stats_of = |m: Option<GroupMoments>, q: Option<[f64; 3]>| {
                m.map(|m| ContinuousStats {
                    n: m.n,
                    mean: m.mean,
                    sd: to_moments(m).sd_sample().unwrap_or(f64::NAN),
                    quartiles: q,
                })
            };
            let t_test = a.zip(b).and_then(|(a, b)| {
                let r = stats::hypothesis::student_t_test(&to_moments(a), &to_moments(b)).ok()?;
                Some(Test {
                    name: "Student t".into(),
                    statistic: r.statistic,
                    df: r.df,
                    p_value: r.p_value,
                    bounds: None,
                })
            });
            let mann_whitney = tree.and_then(|t| {
                let r = t.state.mann_whitney(0, 1).ok()?;
                resolution = Some(resolution.unwrap_or(0.0).max(r.resolution));
                let exact = r.w_min == r.w_max;
                Some(Test {
                    name: "Mann-Whitney U".into(),
                    statistic: r.test.w,
                    df: None,
                    p_value: r.test.p_value,
                    bounds: (!exact).then_some(TestBounds {
                        statistic: [r.w_min, r.w_max],
                        p_value: [r.p_min, r.p_max],
                    }),
                })
            });
            variables.push(VariableResult::Continuous {
                variable: name.clone(),
                stats: [stats_of(all, q_all), stats_of(a, q1), stats_of(b, q0)],
                t_test,
                mann_whitney,
                missing: sum3(pc.missing[0], pc.missing[1]),
                resolution,
                suppressed_by: pc.suppressed_by.clone(),
            });
        } else if let Some(pc) = pooled.categorical.iter().find(|c| &c.variable == name) {
            let levels: Vec<LevelResult> = pc
                .levels
                .iter()
                .map(|(level, c)| LevelResult {
                    level: level.clone(),
                    counts: sum3(c[0], c[1]),
                })
                .collect();
            let table: Option<Vec<Vec<u64>>> = pc
                .levels
                .values()
                .map(|c| Some(vec![c[0]?, c[1]?]))
                .collect();
            let chi_square = table.and_then(|t| {
                let r = stats::hypothesis::chi_square_independence(&t).ok()?;
                Some(Test {
                    name: "chi-squared".into(),
                    statistic: r.statistic,
                    df: r.df,
                    p_value: r.p_value,
                    bounds: None,
                })
            });
            variables.push(VariableResult::Categorical {
                variable: name.clone(),
                levels,
                chi_square,
                missing: sum3(pc.missing[0], pc.missing[1]),
                suppressed_by: pc.suppressed_by.clone(),
            });
        }
    }
    Table1Output {
        n: sum3(pooled.group_n[0], pooled.group_n[1]),
        label_missing: pooled.label_missing,
        variables,
        histogram_rounds: d.histogram_rounds,
        sites: d.sites.clone(),
        notes: d.notes.clone(),
        dropped: d.dropped.clone(),
    }
}

impl Table1Output {
    /// The CSV a statistician reads: `variable,level,overall,group_1,group_0,test,statistic,p_value`.
    /// Descriptive cells are rounded for reading; statistics and p-values keep full precision.
    pub fn to_csv(&self) -> String {
        let mut out =
            String::from("variable,level,overall,group_1,group_0,test,statistic,p_value\n");
        let cell = |x: Option<String>| x.unwrap_or_else(|| "suppressed".into());
        let count = |c: Option<u64>| cell(c.map(|c| c.to_string()));
        let q = |s: &str| {
            if s.contains(',') || s.contains('"') {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut row = |v: &str, l: &str, cols: [String; 3], t: Option<&Test>| {
            let (name, stat, p) = match t {
                // A rank test the sites' min_count left unresolved: the statistic and p-value
                // columns keep the estimate only while its range is narrow; otherwise they are
                // left empty and the test column gives the range.
                Some(t) => match &t.bounds {
                    Some(b) if b.p_value[1] - b.p_value[0] > 0.05 => (
                        format!(
                            "\"{} (not resolvable at min_count: p in [{:.3}, {:.3}])\"",
                            t.name, b.p_value[0], b.p_value[1]
                        ),
                        String::new(),
                        String::new(),
                    ),
                    Some(b) => (
                        format!(
                            "\"{} (estimate; p in [{:.3}, {:.3}] given min_count)\"",
                            t.name, b.p_value[0], b.p_value[1]
                        ),
                        t.statistic.to_string(),
                        t.p_value.to_string(),
                    ),
                    None => (
                        t.name.clone(),
                        t.statistic.to_string(),
                        t.p_value.to_string(),
                    ),
                },
                None => (String::new(), String::new(), String::new()),
            };
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                q(v),
                q(l),
                q(&cols[0]),
                q(&cols[1]),
                q(&cols[2]),
                name,
                stat,
                p
            ));
        };
        row("n", "", self.n.map(count), None);
        for v in &self.variables {
            match v {
                VariableResult::Continuous {
                    variable,
                    stats,
                    t_test,
                    mann_whitney,
                    missing,
                    resolution,
                    ..
                } => {
                    // Quartiles read from histogram cells wider than the variable's SD say
                    // nothing (the sites' min_count kept the tree coarse): show them as
                    // suppressed rather than as numbers; otherwise state the resolution when it
                    // is not negligible.
                    let sd = stats[0].as_ref().map_or(f64::INFINITY, |s| s.sd);
                    let res = resolution.unwrap_or(0.0);
                    let coarse = res > sd;
                    let note = if res > 1e-6 * sd {
                        format!(" (±{res:.2})")
                    } else {
                        String::new()
                    };
                    let ms = stats
                        .clone()
                        .map(|s| cell(s.map(|s| format!("{:.2} ± {:.2}", s.mean, s.sd))));
                    row(variable, "mean ± SD", ms, t_test.as_ref());
                    let md = stats.clone().map(|s| {
                        cell(
                            s.and_then(|s| s.quartiles)
                                .filter(|_| !coarse)
                                .map(|q| format!("{:.2} [{:.2}, {:.2}]{note}", q[1], q[0], q[2])),
                        )
                    });
                    row(variable, "median [IQR]", md, mann_whitney.as_ref());
                    if missing.iter().any(|m| *m != Some(0)) {
                        row(variable, "missing", missing.map(count), None);
                    }
                }
                VariableResult::Categorical {
                    variable,
                    levels,
                    chi_square,
                    missing,
                    ..
                } => {
                    row(
                        variable,
                        "",
                        [String::new(), String::new(), String::new()],
                        chi_square.as_ref(),
                    );
                    for l in levels {
                        let cols: Vec<String> = (0..3)
                            .map(|i| {
                                cell(l.counts[i].zip(self.n[i]).map(|(c, n)| {
                                    if n == 0 {
                                        format!("{c}")
                                    } else {
                                        format!("{c} ({:.1}%)", 100.0 * c as f64 / n as f64)
                                    }
                                }))
                            })
                            .collect();
                        row(
                            variable,
                            &l.level,
                            [cols[0].clone(), cols[1].clone(), cols[2].clone()],
                            None,
                        );
                    }
                    if missing.iter().any(|m| *m != Some(0)) {
                        row(variable, "missing", missing.map(count), None);
                    }
                }
            }
        }
        out
    }
}
