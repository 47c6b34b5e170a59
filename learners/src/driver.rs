//! Batched, exact federated fitting of the MLP meta-model: one L-BFGS per outer fit, all fits
//! advanced together so that each round trip carries every fit's current weights and returns
//! every fit's loss/gradient sums.
//!
//! Round trip: the aggregator sends [`MlpDriver::next_requests`] to every site; each site answers
//! [`site_mlp_sums`] over its own training rows of each requested fit (meta-feature rows never
//! leave the site); the aggregator calls [`MlpDriver::apply`] with the answers **in site-id
//! order**. Repeat until [`MlpDriver::is_done`]; then [`MlpDriver::result`]. The driver is serde
//! so an aggregator can persist it between rounds.
//!
//! Pooled path (`release_predictions = true`): [`fit_mlp_pooled`] runs the same driver on rows
//! held centrally, computing one partial sum per site group in site order. Floating-point
//! addition is not associative, so "the same model for the same seed" holds bit for bit exactly
//! when the pooled sums are formed over the same site groups in the same order, which is what
//! `fit_mlp_pooled` does (the aggregator knows which site sent each released row). Summing all
//! rows as one block instead changes the last bits of the sums (1e-16 relative), and on this
//! non-convex objective ~200 L-BFGS iterations amplify that into visibly different weights
//! (probabilities differing by ~1e-2 in the test, objective values by under 5 %).

use std::collections::BTreeMap;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{LearnerError, Result};
use crate::lbfgs::{Lbfgs, Status};
use crate::mlp::{LossGradSum, MlpModel, MlpSpec, init_weights, mlp_loss_grad, objective};
use crate::plan::FitId;
use crate::rng::{derive_seed, tag};

/// One fit's current weights, as sent to the sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpRequest {
    pub fit: FitId,
    pub weights: Vec<f64>,
}

/// A site's rows of one fit: meta-features of its outer training rows and their labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitRows {
    pub x: Array2<f64>,
    pub y: Vec<bool>,
}

/// SITE HALF: loss/gradient sums of every requested fit over this site's rows, in request order.
/// A fit the site holds no rows for (e.g. it has no patients) answers zero sums with `n = 0`.
pub fn site_mlp_sums(
    spec: &MlpSpec,
    requests: &[MlpRequest],
    rows: &BTreeMap<FitId, FitRows>,
) -> Result<Vec<(FitId, LossGradSum)>> {
    requests
        .iter()
        .map(|r| {
            let sums = match rows.get(&r.fit) {
                Some(d) => mlp_loss_grad(spec, &r.weights, d.x.view(), &d.y)?,
                None => mlp_loss_grad(
                    spec,
                    &r.weights,
                    Array2::zeros((0, spec.n_inputs)).view(),
                    &[],
                )?,
            };
            Ok((r.fit, sums))
        })
        .collect()
}

/// AGGREGATOR HALF: the optimiser of every fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpDriver {
    spec: MlpSpec,
    /// One optimiser per fit, sorted by fit id (a list, not a map, so that it serialises to JSON).
    fits: Vec<(FitId, Lbfgs)>,
    round_trips: u32,
}

/// One finished fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpFit {
    pub model: MlpModel,
    /// Objective J at the returned weights.
    pub objective: f64,
    pub iterations: u32,
    pub evaluations: u32,
    pub status: Status,
}

/// Initial-weight seed of one fit: `derive_seed(seed, [MLP_INIT, repeat, fold])`.
pub fn init_seed(seed: u64, fit: FitId) -> u64 {
    derive_seed(
        seed,
        &[tag::MLP_INIT, u64::from(fit.repeat), u64::from(fit.fold)],
    )
}

impl MlpDriver {
    pub fn new(spec: MlpSpec, fits: &[FitId], seed: u64) -> Result<Self> {
        spec.validate()?;
        let fits = fits
            .iter()
            .map(|&f| {
                (
                    f,
                    Lbfgs::new(init_weights(&spec, init_seed(seed, f)), spec.optimiser),
                )
            })
            .collect();
        Ok(Self {
            spec,
            fits,
            round_trips: 0,
        })
    }

    pub fn spec(&self) -> &MlpSpec {
        &self.spec
    }

    /// The weights every unfinished fit needs sums at, in fit order.
    pub fn next_requests(&self) -> Vec<MlpRequest> {
        self.fits
            .iter()
            .filter_map(|(fit, o)| {
                o.point().map(|w| MlpRequest {
                    fit: *fit,
                    weights: w.to_vec(),
                })
            })
            .collect()
    }

    /// Applies one round's answers, `per_site[s]` being site s's answer (sites in id order).
    /// Every site must answer every requested fit exactly once.
    pub fn apply(&mut self, per_site: &[Vec<(FitId, LossGradSum)>]) -> Result<()> {
        let requests = self.next_requests();
        if per_site.is_empty() {
            return Err(LearnerError::Protocol {
                what: "MLP round",
                detail: "no site answered".into(),
            });
        }
        let mut by_site: Vec<BTreeMap<FitId, &LossGradSum>> = Vec::with_capacity(per_site.len());
        for (s, answer) in per_site.iter().enumerate() {
            let mut m = BTreeMap::new();
            for (fit, sums) in answer {
                if m.insert(*fit, sums).is_some() {
                    return Err(LearnerError::Protocol {
                        what: "MLP round",
                        detail: format!(
                            "site #{s} answered fit ({}, {}) twice",
                            fit.repeat, fit.fold
                        ),
                    });
                }
            }
            if m.len() != requests.len() || requests.iter().any(|r| !m.contains_key(&r.fit)) {
                return Err(LearnerError::Protocol {
                    what: "MLP round",
                    detail: format!(
                        "site #{s} answered {} fits, the round asked for {} (stale or partial answer)",
                        m.len(),
                        requests.len()
                    ),
                });
            }
            by_site.push(m);
        }
        // Validate everything before changing any state, so a bad answer leaves the driver as it was.
        let mut updates = Vec::with_capacity(requests.len());
        for r in &requests {
            let parts: Vec<&LossGradSum> = by_site.iter().map(|m| m[&r.fit]).collect();
            updates.push((r.fit, objective(&self.spec, &r.weights, &parts)?));
        }
        for (fit, (f, g)) in updates {
            let i = self
                .fits
                .binary_search_by(|(id, _)| id.cmp(&fit))
                .expect("requested fit");
            self.fits[i].1.tell(f, g);
        }
        self.round_trips += 1;
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.fits.iter().all(|(_, o)| o.point().is_none())
    }

    /// Round trips so far (= evaluations of the slowest fit).
    pub fn round_trips(&self) -> u32 {
        self.round_trips
    }

    /// The fitted models; an error if a fit is still running.
    pub fn result(&self) -> Result<BTreeMap<FitId, MlpFit>> {
        self.fits
            .iter()
            .map(|&(fit, ref o)| {
                let status = o.status().ok_or(LearnerError::Protocol {
                    what: "MLP result",
                    detail: format!(
                        "fit ({}, {}) has not finished; keep calling apply",
                        fit.repeat, fit.fold
                    ),
                })?;
                let (w, f) = o.best();
                Ok((
                    fit,
                    MlpFit {
                        model: MlpModel {
                            spec: self.spec.clone(),
                            weights: w.to_vec(),
                        },
                        objective: f.unwrap_or(f64::NAN),
                        iterations: o.iterations(),
                        evaluations: o.evaluations(),
                        status,
                    },
                ))
            })
            .collect()
    }
}

/// Pooled reference / `release_predictions` path: `groups[s]` holds site s's rows per fit (sites
/// in id order). Same driver, same per-site sums, so the same model as the federated path.
pub fn fit_mlp_pooled(
    spec: &MlpSpec,
    fits: &[FitId],
    seed: u64,
    groups: &[&BTreeMap<FitId, FitRows>],
) -> Result<BTreeMap<FitId, MlpFit>> {
    let mut d = MlpDriver::new(spec.clone(), fits, seed)?;
    while !d.is_done() {
        let req = d.next_requests();
        let answers = groups
            .iter()
            .map(|g| site_mlp_sums(spec, &req, g))
            .collect::<Result<Vec<_>>>()?;
        d.apply(&answers)?;
    }
    d.result()
}
