//! The survival count-table protocol: what a site releases about its patients' progression-free
//! survival per group (predicted high/low, or observed responder/non-responder), and how the
//! aggregator aligns the sites' tables on the union of their times.
//!
//! # Site message
//!
//! Per group, a list of `(time, events, censored)` cells ([`SurvivalCell`]), ascending in time.
//! At-risk counts are **not** sent: the aggregator reconstructs them from the group total
//! N = Σ(events + censored) as `at_risk(t) = N − Σ_{τ < t}(events + censored)` (KM convention:
//! patients censored at t are at risk at t). This lets tables of different sites, released at
//! different times, be aligned exactly on the union of their times: at a time where a site
//! released nothing, its at-risk count is simply carried.
//!
//! # Time resolution and min_count
//!
//! - [`TimeResolution::Exact`]: the distinct observed times themselves. Allowed only if every
//!   released count is already 0 or ≥ `min_count` (heavily tied times, or `min_count <= 1`);
//!   otherwise the build fails with [`MetricsError::ExactTimesDisclosive`].
//! - [`TimeResolution::Grid`]: the study's shared ascending grid (e.g. every month). Each time is
//!   moved **up** to the first grid point ≥ it; then consecutive occupied grid points are merged
//!   at the site (the same run rule as the score tables: events and censored counts each 0 or
//!   ≥ `min_count`), and a merged run is released at its **last** occupied grid point — a grid
//!   point, never a patient's own time.
//!
//! **Effect of coarsening** (documented bias): events are moved later by less than one grid step
//! plus the span of their merged run, so the KM curve is shifted right (survival and medians are
//! overstated by at most that amount); censorings move with them and, being counted at risk at
//! their released time, slightly inflate the at-risk denominators of events released at the
//! same point. Within a released time all events are tied, which the Efron/Breslow Cox and the
//! hypergeometric log-rank handle as ties. Cox and log-rank remain exact for the coarsened data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::MetricsError;
use crate::metrics::table::{Counted, merge_runs};

/// How a site releases times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TimeResolution {
    /// The distinct observed times (only when every count is 0 or ≥ min_count).
    Exact,
    /// A shared ascending grid of time points (the last must cover the longest follow-up).
    Grid(Vec<f64>),
}

/// Events and censorings released at one time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SurvivalCell {
    /// The time (an observed time or a grid point).
    pub time: f64,
    /// Events (progression or death) at the time.
    pub events: u64,
    /// Censorings at the time.
    pub censored: u64,
}

impl Counted for SurvivalCell {
    fn counts(&self) -> (u64, u64) {
        (self.events, self.censored)
    }
    fn absorb(&mut self, o: &Self) {
        self.events += o.events;
        self.censored += o.censored;
        self.time = self.time.max(o.time);
    }
}

/// SITE HALF: one site's survival table, per group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteSurvivalTable {
    /// min_count used.
    pub min_count: u64,
    /// `groups[g]` = cells of group g, ascending in time (empty if the site has no such patient).
    pub groups: Vec<Vec<SurvivalCell>>,
}

fn check_time(i: usize, t: f64) -> Result<(), MetricsError> {
    if !(t.is_finite() && t >= 0.0) {
        return Err(MetricsError::BadTime { index: i, value: t });
    }
    Ok(())
}

/// Order-preserving key of a finite non-negative time.
fn key(t: f64) -> u64 {
    // Non-negative finite f64 compare like their bit patterns; +0.0 normalises -0.0.
    (t + 0.0).to_bits()
}

impl SiteSurvivalTable {
    /// Builds the site's table: `times[i]`, `events[i]` (true = progression/death) and
    /// `groups[i] < n_groups` for each of its patients.
    pub fn build(
        times: &[f64],
        events: &[bool],
        groups: &[usize],
        n_groups: usize,
        resolution: &TimeResolution,
        min_count: u64,
    ) -> Result<SiteSurvivalTable, MetricsError> {
        use crate::metrics::table::check_lengths;
        check_lengths(
            "SiteSurvivalTable::build",
            "times",
            times.len(),
            "events",
            events.len(),
        )?;
        check_lengths(
            "SiteSurvivalTable::build",
            "times",
            times.len(),
            "groups",
            groups.len(),
        )?;
        if let TimeResolution::Grid(g) = resolution
            && (g.is_empty()
                || g.windows(2).any(|w| w[0] >= w[1] || w[1].is_nan())
                || !g.iter().all(|x| x.is_finite()))
        {
            return Err(MetricsError::BadOption {
                name: "time_grid",
                value: format!("{} points", g.len()),
                reason: "the time grid must be non-empty, finite and strictly ascending",
            });
        }
        let mut per: Vec<BTreeMap<u64, SurvivalCell>> = vec![BTreeMap::new(); n_groups];
        for i in 0..times.len() {
            check_time(i, times[i])?;
            if groups[i] >= n_groups {
                return Err(MetricsError::BadOption {
                    name: "group",
                    value: groups[i].to_string(),
                    reason: "a patient's group index must be below n_groups",
                });
            }
            let t = match resolution {
                TimeResolution::Exact => times[i],
                TimeResolution::Grid(g) => {
                    let j = g.partition_point(|&x| x < times[i]);
                    *g.get(j).ok_or(MetricsError::BeyondGrid {
                        time: times[i],
                        last: *g.last().expect("non-empty"),
                    })?
                }
            };
            let c = per[groups[i]].entry(key(t)).or_insert(SurvivalCell {
                time: t,
                events: 0,
                censored: 0,
            });
            if events[i] {
                c.events += 1;
            } else {
                c.censored += 1;
            }
        }
        let mut out = Vec::with_capacity(n_groups);
        for cells in per {
            let cells: Vec<SurvivalCell> = cells.into_values().collect();
            match resolution {
                TimeResolution::Exact => {
                    for c in &cells {
                        for n in [c.events, c.censored] {
                            if n > 0 && n < min_count {
                                return Err(MetricsError::ExactTimesDisclosive {
                                    time: c.time,
                                    count: n,
                                    min_count,
                                });
                            }
                        }
                    }
                    out.push(cells);
                }
                TimeResolution::Grid(_) => {
                    if cells.is_empty() {
                        out.push(cells);
                        continue;
                    }
                    let tagged: Vec<(u32, SurvivalCell)> = cells
                        .into_iter()
                        .enumerate()
                        .map(|(i, c)| (i as u32, c))
                        .collect();
                    let runs = merge_runs(&tagged, min_count)?;
                    out.push(runs.into_iter().map(|r| r.2).collect());
                }
            }
        }
        Ok(SiteSurvivalTable {
            min_count,
            groups: out,
        })
    }

    /// Aggregator-side check: ascending times, no count in `1..min_count`.
    pub fn validate(&self, min_count: u64) -> Result<(), MetricsError> {
        for cells in &self.groups {
            for (i, c) in cells.iter().enumerate() {
                if !(c.time.is_finite() && c.time >= 0.0) || (i > 0 && c.time <= cells[i - 1].time)
                {
                    return Err(MetricsError::BadCell {
                        index: i,
                        reason: "times must be finite, non-negative and strictly ascending".into(),
                    });
                }
                for n in [c.events, c.censored] {
                    if n > 0 && n < min_count {
                        return Err(MetricsError::DisclosureViolation {
                            index: i,
                            count: n,
                            max_bad: min_count - 1,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// One row of a group's life table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SurvivalRow {
    /// Time.
    pub time: f64,
    /// At risk just before the time (includes those censored at it).
    pub at_risk: u64,
    /// Events at the time.
    pub events: u64,
    /// Censorings at the time.
    pub censored: u64,
}

/// A group's life table: one row per released time (events or censorings), ascending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupTable {
    /// Rows, ascending in time.
    pub rows: Vec<SurvivalRow>,
}

impl GroupTable {
    /// Life table from (time, events, censored) cells in any order (equal times are summed).
    pub fn from_cells<'a, I: IntoIterator<Item = &'a SurvivalCell>>(cells: I) -> GroupTable {
        let mut map: BTreeMap<u64, SurvivalCell> = BTreeMap::new();
        for c in cells {
            map.entry(key(c.time))
                .and_modify(|e| {
                    e.events += c.events;
                    e.censored += c.censored;
                })
                .or_insert(*c);
        }
        let total: u64 = map.values().map(|c| c.events + c.censored).sum();
        let mut left = total;
        let rows = map
            .into_values()
            .map(|c| {
                let r = SurvivalRow {
                    time: c.time,
                    at_risk: left,
                    events: c.events,
                    censored: c.censored,
                };
                left -= c.events + c.censored;
                r
            })
            .collect();
        GroupTable { rows }
    }

    /// EXACT: life table of per-patient (time, event) data.
    pub fn from_patients(times: &[f64], events: &[bool]) -> Result<GroupTable, MetricsError> {
        crate::metrics::table::check_lengths(
            "GroupTable::from_patients",
            "times",
            times.len(),
            "events",
            events.len(),
        )?;
        let mut cells = Vec::with_capacity(times.len());
        for (i, (&t, &e)) in times.iter().zip(events).enumerate() {
            check_time(i, t)?;
            cells.push(SurvivalCell {
                time: t,
                events: e as u64,
                censored: (!e) as u64,
            });
        }
        Ok(GroupTable::from_cells(&cells))
    }

    /// Patients in the group.
    pub fn n(&self) -> u64 {
        self.rows.first().map(|r| r.at_risk).unwrap_or(0)
    }

    /// At-risk count at time `t` (patients whose released time is ≥ t).
    pub fn at_risk_at(&self, t: f64) -> u64 {
        let i = self.rows.partition_point(|r| r.time < t);
        self.rows.get(i).map(|r| r.at_risk).unwrap_or(0)
    }
}

/// AGGREGATOR HALF: pools site tables (in `SiteId` order) into one life table per group, on the
/// union of the sites' times. Counts add at equal times; at-risk follows from the pooled total,
/// which equals the sum of each site's reconstructed at-risk count.
pub fn pool_survival(sites: &[SiteSurvivalTable]) -> Result<Vec<GroupTable>, MetricsError> {
    let n_groups = sites.first().map(|s| s.groups.len()).unwrap_or(0);
    for s in sites {
        if s.groups.len() != n_groups {
            return Err(MetricsError::BadOption {
                name: "n_groups",
                value: s.groups.len().to_string(),
                reason: "every site must release the same number of groups",
            });
        }
    }
    Ok((0..n_groups)
        .map(|g| GroupTable::from_cells(sites.iter().flat_map(|s| s.groups[g].iter())))
        .collect())
}

/// One row of a two-group table aligned on the union of both groups' times.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TwoGroupRow {
    /// Time.
    pub time: f64,
    /// At risk per group (index 0 = reference group, 1 = compared group).
    pub at_risk: [u64; 2],
    /// Events per group.
    pub events: [u64; 2],
    /// Censorings per group.
    pub censored: [u64; 2],
}

/// Two groups on a common time axis: the input of the log-rank test and of the Cox model for a
/// binary group indicator (x = 1 for group 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoGroupTable {
    /// Rows ascending in time.
    pub rows: Vec<TwoGroupRow>,
}

impl TwoGroupTable {
    /// Aligns two life tables on the union of their times (at-risk carried where a group has no
    /// row).
    pub fn align(g0: &GroupTable, g1: &GroupTable) -> TwoGroupTable {
        let mut times: Vec<f64> = g0.rows.iter().chain(&g1.rows).map(|r| r.time).collect();
        times.sort_by(f64::total_cmp);
        times.dedup();
        let gs = [g0, g1];
        let mut idx = [0usize; 2];
        let rows = times
            .into_iter()
            .map(|t| {
                let mut row = TwoGroupRow {
                    time: t,
                    at_risk: [0; 2],
                    events: [0; 2],
                    censored: [0; 2],
                };
                for k in 0..2 {
                    let rs = &gs[k].rows;
                    row.at_risk[k] = rs.get(idx[k]).map(|r| r.at_risk).unwrap_or(0);
                    if let Some(r) = rs.get(idx[k]).filter(|r| r.time == t) {
                        row.events[k] = r.events;
                        row.censored[k] = r.censored;
                        idx[k] += 1;
                    }
                }
                row
            })
            .collect();
        TwoGroupTable { rows }
    }
}
