//! LASSO figures from `models::lasso::LassoResult`, drawn as glmnet's `plot.glmnet` /
//! `plot.cv.glmnet` do: x = natural log of λ; coefficient paths on the standardised scale (per
//! one SD of the feature, so radiomics features of very different units are comparable; the
//! CSV also has the original scale); the CV curve as mean deviance ± one standard error with
//! vertical lines at λ.min and λ.1se; and a bar chart of bootstrap selection frequencies.

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    DrawResult, FONT, Figure, GRID, LABEL_SIZE, LEGEND_SIZE, REFERENCE, TICK_SIZE, TITLE_SIZE,
    colour, shorten, sig, tick,
};
use crate::model::LassoReport;

/// Most coloured (named) paths; further selected features are drawn in grey.
const MAX_NAMED_PATHS: usize = 12;
/// Most bars in the selection-frequency chart.
const MAX_BARS: usize = 25;
/// Longest feature name shown in a figure.
const MAX_NAME: usize = 38;

fn range_with_pad(lo: f64, hi: f64, pad: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (-1.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let p = (hi - lo) * pad;
    (lo - p, hi + p)
}

fn dashed_vline<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    x: f64,
    (lo, hi): (f64, f64),
    c: RGBColor,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart.draw_series(DashedLineSeries::new(
        vec![(x, lo), (x, hi)],
        6,
        5,
        c.stroke_width(2),
    ))?;
    Ok(())
}

/// Coefficient paths against log λ.
pub(crate) struct LassoPathFigure<'a> {
    pub lasso: &'a LassoReport,
}

impl Figure for LassoPathFigure<'_> {
    fn stem(&self) -> &'static str {
        "lasso_path"
    }
    fn size(&self) -> (u32, u32) {
        (1180, 640)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let cv = &self.lasso.result.cv;
        let path = &cv.path;
        let names = &self.lasso.feature_names;
        let xs: Vec<f64> = path.lambdas.iter().map(|l| l.ln()).collect();
        let p = names.len();
        let ever: Vec<usize> = (0..p)
            .filter(|&j| {
                path.beta
                    .iter()
                    .any(|b| b.get(j).is_some_and(|v| *v != 0.0))
            })
            .collect();
        // Named: the λ.min selection, largest |β| at λ.min first.
        let mut named: Vec<usize> = cv.selected_min.clone();
        let at_min = path.beta.get(cv.index_min);
        named.sort_by(|&a, &b| {
            let v = |j: usize| at_min.and_then(|r| r.get(j)).map_or(0.0, |x| x.abs());
            v(b).total_cmp(&v(a))
        });
        named.truncate(MAX_NAMED_PATHS);
        let (ylo, yhi) = {
            let vals = ever
                .iter()
                .flat_map(|&j| path.beta.iter().filter_map(move |b| b.get(j).copied()));
            let (lo, hi) = vals.fold((0.0f64, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
            range_with_pad(lo, hi, 0.06)
        };
        let (xlo, xhi) = {
            let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            range_with_pad(lo, hi, 0.02)
        };
        let (plot, legend) = root.split_horizontally(800);
        let mut chart = ChartBuilder::on(&plot)
            .caption("LASSO coefficient paths", (FONT, TITLE_SIZE))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(xlo..xhi, ylo..yhi)?;
        chart
            .configure_mesh()
            .x_desc("log(λ)")
            .y_desc("Coefficient (standardised, per SD)")
            .x_label_formatter(&|v: &f64| tick(*v))
            .y_label_formatter(&|v: &f64| tick(*v))
            .axis_desc_style((FONT, LABEL_SIZE))
            .label_style((FONT, TICK_SIZE))
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .draw()?;
        chart.draw_series(LineSeries::new(
            vec![(xlo, 0.0), (xhi, 0.0)],
            REFERENCE.stroke_width(1),
        ))?;
        let grey = RGBColor(190, 190, 190);
        let series = |j: usize| -> Vec<(f64, f64)> {
            xs.iter()
                .zip(&path.beta)
                .map(|(x, b)| (*x, b.get(j).copied().unwrap_or(0.0)))
                .collect()
        };
        for &j in ever.iter().filter(|j| !named.contains(j)) {
            chart.draw_series(LineSeries::new(series(j), grey.stroke_width(1)))?;
        }
        for (k, &j) in named.iter().enumerate() {
            chart.draw_series(LineSeries::new(series(j), colour(k).stroke_width(2)))?;
        }
        let lmin = cv.lambda_min.ln();
        let l1se = cv.lambda_1se.ln();
        dashed_vline(&mut chart, lmin, (ylo, yhi), RGBColor(200, 30, 30))?;
        dashed_vline(&mut chart, l1se, (ylo, yhi), RGBColor(60, 60, 60))?;
        // Legend panel: the λ lines, then the named features.
        let t = TextStyle::from((FONT, LEGEND_SIZE).into_font())
            .pos(Pos::new(HPos::Left, VPos::Center));
        let mut y = 60;
        legend.draw_text("Dashed lines:", &t, (10, y))?;
        y += 24;
        for (txt, c) in [
            (
                format!(
                    "λ.min = {} ({} features)",
                    sig(cv.lambda_min, 4),
                    nz(cv, cv.index_min)
                ),
                RGBColor(200, 30, 30),
            ),
            (
                format!(
                    "λ.1se = {} ({} features)",
                    sig(cv.lambda_1se, 4),
                    nz(cv, cv.index_1se)
                ),
                RGBColor(60, 60, 60),
            ),
        ] {
            legend.draw(&PathElement::new(vec![(10, y), (34, y)], c.stroke_width(2)))?;
            legend.draw_text(&txt, &t, (42, y))?;
            y += 22;
        }
        y += 14;
        legend.draw_text("Selected at λ.min:", &t, (10, y))?;
        y += 24;
        for (k, &j) in named.iter().enumerate() {
            let c = colour(k);
            legend.draw(&PathElement::new(vec![(10, y), (34, y)], c.stroke_width(3)))?;
            let name = names.get(j).map(String::as_str).unwrap_or("?");
            legend.draw_text(&shorten(name, 40), &t, (42, y))?;
            y += 22;
        }
        let rest = cv.selected_min.len().saturating_sub(named.len());
        if rest > 0 {
            legend.draw_text(&format!("… and {rest} more (grey)"), &t, (42, y))?;
            y += 22;
        }
        if cv.selected_min.is_empty() {
            legend.draw_text("none (intercept only)", &t, (42, y))?;
            y += 22;
        }
        if ever.len() > cv.selected_min.len() {
            legend.draw(&PathElement::new(
                vec![(10, y + 8), (34, y + 8)],
                grey.stroke_width(1),
            ))?;
            legend.draw_text("other features on the path", &t, (42, y + 8))?;
        }
        Ok(())
    }
}

fn nz(cv: &models::lasso::CvResult, k: usize) -> String {
    cv.path
        .nzero
        .get(k)
        .map_or_else(|| "?".into(), |n| n.to_string())
}

/// The cross-validation curve with ± 1 SE bars.
pub(crate) struct LassoCvFigure<'a> {
    pub lasso: &'a LassoReport,
}

impl Figure for LassoCvFigure<'_> {
    fn stem(&self) -> &'static str {
        "lasso_cv"
    }
    fn size(&self) -> (u32, u32) {
        (900, 640)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let cv = &self.lasso.result.cv;
        let pts: Vec<(f64, f64, f64)> = cv
            .lambdas
            .iter()
            .zip(cv.cvm.iter().zip(&cv.cvsd))
            .filter(|(l, (m, s))| l.is_finite() && **l > 0.0 && m.is_finite() && s.is_finite())
            .map(|(l, (m, s))| (l.ln(), *m, *s))
            .collect();
        let (xlo, xhi) = range_with_pad(
            pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
            pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
            0.03,
        );
        let (ylo, yhi) = range_with_pad(
            pts.iter().map(|p| p.1 - p.2).fold(f64::INFINITY, f64::min),
            pts.iter()
                .map(|p| p.1 + p.2)
                .fold(f64::NEG_INFINITY, f64::max),
            0.12,
        );
        let mut chart = ChartBuilder::on(root)
            .caption("LASSO cross-validation", (FONT, TITLE_SIZE))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(xlo..xhi, ylo..yhi)?;
        chart
            .configure_mesh()
            .x_desc("log(λ)")
            .y_desc("Binomial deviance (CV mean ± 1 SE)")
            .x_label_formatter(&|v: &f64| tick(*v))
            .y_label_formatter(&|v: &f64| tick(*v))
            .axis_desc_style((FONT, LABEL_SIZE))
            .label_style((FONT, TICK_SIZE))
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .draw()?;
        let bar = RGBColor(150, 150, 150);
        // ± 1 SE bars with 6-px caps (plotters' ErrorBar needs a feature the workspace does
        // not enable; three path segments draw the same).
        for &(x, m, s) in &pts {
            let (px, top) = chart.backend_coord(&(x, m + s));
            let (_, bottom) = chart.backend_coord(&(x, m - s));
            let base = root.get_base_pixel();
            let (px, top, bottom) = (px - base.0, top - base.1, bottom - base.1);
            for seg in [
                vec![(px, top), (px, bottom)],
                vec![(px - 3, top), (px + 3, top)],
                vec![(px - 3, bottom), (px + 3, bottom)],
            ] {
                root.draw(&PathElement::new(seg, bar.stroke_width(1)))?;
            }
        }
        let red = RGBColor(214, 39, 40);
        chart.draw_series(
            pts.iter()
                .map(|&(x, m, _)| Circle::new((x, m), 4, red.filled())),
        )?;
        for (x, txt, c) in [
            (
                cv.lambda_min.ln(),
                format!(
                    "λ.min = {} ({} features)",
                    sig(cv.lambda_min, 4),
                    nz(cv, cv.index_min)
                ),
                RGBColor(200, 30, 30),
            ),
            (
                cv.lambda_1se.ln(),
                format!(
                    "λ.1se = {} ({} features)",
                    sig(cv.lambda_1se, 4),
                    nz(cv, cv.index_1se)
                ),
                RGBColor(60, 60, 60),
            ),
        ] {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x, ylo), (x, yhi)],
                    6,
                    5,
                    c.stroke_width(2),
                ))?
                .label(txt)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .margin(12)
            .label_font((FONT, LEGEND_SIZE))
            .background_style(WHITE.mix(0.92))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
        Ok(())
    }
}

/// Bootstrap selection frequencies as horizontal bars, most frequent first.
pub(crate) struct SelectionFigure<'a> {
    pub lasso: &'a LassoReport,
}

impl SelectionFigure<'_> {
    /// Features to show (ranking order): every feature ever selected, at most [`MAX_BARS`],
    /// and at least the top-k.
    fn shown(&self) -> Vec<usize> {
        let Some(b) = self.lasso.result.bootstrap.as_ref() else {
            return Vec::new();
        };
        let k = b.top_k.len();
        b.ranking
            .iter()
            .copied()
            .enumerate()
            .filter(|(r, j)| *r < k || b.frequency.get(*j).is_some_and(|f| *f > 0.0))
            .map(|(_, j)| j)
            .take(MAX_BARS.max(k))
            .collect()
    }
}

impl Figure for SelectionFigure<'_> {
    fn stem(&self) -> &'static str {
        "selection_frequency"
    }
    fn size(&self) -> (u32, u32) {
        let n = self.shown().len().max(1) as u32;
        (1000, 150 + 30 * n)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let Some(b) = self.lasso.result.bootstrap.as_ref() else {
            return Ok(());
        };
        let shown = self.shown();
        let n = shown.len().max(1);
        let names: Vec<String> = shown
            .iter()
            .map(|&j| {
                shorten(
                    self.lasso.feature_names.get(j).map_or("?", String::as_str),
                    MAX_NAME,
                )
            })
            .collect();
        // DejaVu Sans at 14 px averages ~8 px per character.
        let label_w = names.iter().map(|s| s.chars().count()).max().unwrap_or(4) as u32 * 8 + 20;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Bootstrap selection frequency (B = {}; dark bars: top {})",
                    b.replicates,
                    b.top_k.len()
                ),
                (FONT, TITLE_SIZE),
            )
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(label_w.min(420))
            // Room right of a 100 % bar for its label.
            .build_cartesian_2d(0f64..1.12f64, 0f64..n as f64)?;
        chart
            .configure_mesh()
            .x_desc("Fraction of bootstrap replicates selecting the feature")
            .axis_desc_style((FONT, LABEL_SIZE))
            .label_style((FONT, TICK_SIZE))
            .disable_y_mesh()
            .y_labels(0)
            .x_label_formatter(&|v: &f64| {
                if *v > 1.0 + 1e-9 {
                    String::new()
                } else {
                    format!("{v:.1}")
                }
            })
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .draw()?;
        // Feature names at the bar centres, right-aligned against the axis (bar r occupies
        // [n−1−r, n−r], the most frequent at the top).
        let base = root.get_base_pixel();
        let name_style =
            TextStyle::from((FONT, TICK_SIZE).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (r, name) in names.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(0.0, (n - 1 - r) as f64 + 0.5));
            root.draw_text(name, &name_style, (px - base.0 - 8, py - base.1))?;
        }
        let top: Vec<usize> = b.top_k.clone();
        for (r, &j) in shown.iter().enumerate() {
            let f = b.frequency.get(j).copied().unwrap_or(0.0);
            let y0 = (n - 1 - r) as f64 + 0.15;
            let y1 = (n - r) as f64 - 0.15;
            let c = if top.contains(&j) {
                colour(0)
            } else {
                RGBColor(170, 190, 215)
            };
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0.0, y0), (f, y1)],
                c.filled(),
            )))?;
            let (px, py) = chart.backend_coord(&(f, (y0 + y1) / 2.0));
            let base = root.get_base_pixel();
            root.draw_text(
                &format!("{:.0}%", 100.0 * f),
                &TextStyle::from((FONT, TICK_SIZE).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
                (px - base.0 + 6, py - base.1),
            )?;
        }
        Ok(())
    }
}
