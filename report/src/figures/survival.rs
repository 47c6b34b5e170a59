//! Kaplan-Meier figure: right-continuous step curves with their pointwise CI bands (the band
//! type the stats crate used, log-log by default), censoring ticks, median survival in the
//! legend, log-rank and Cox HR under the title, and the numbers-at-risk table under the plot,
//! aligned with the time axis ticks.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{BoldPoints, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use stats::report::KmCurveReport;

use super::{
    DrawResult, FONT, Figure, GRID, LABEL_SIZE, LEGEND_SIZE, REFERENCE, TICK_SIZE, TITLE_SIZE,
    colour, nice_step, p_text, shorten, tick,
};
use crate::model::{Part, SurvivalAnalysis};

/// Patients still at risk at time `t` (time ≥ t): the at-risk count of the first life-table
/// row at or after `t`, 0 after the last row. Every event or censoring time is a row, so this
/// is exact for the released table.
pub(crate) fn at_risk(curve: &KmCurveReport, t: f64) -> u64 {
    curve
        .steps
        .iter()
        .find(|s| s.time >= t)
        .map_or(0, |s| s.at_risk)
}

/// "8.0 (95% CI 6.0–11.0)", with NR for a median or limit that was not reached.
pub(crate) fn median_label(c: &KmCurveReport) -> String {
    let f = |x: Option<f64>| x.map_or_else(|| "NR".to_string(), |v| format!("{v:.1}"));
    let m = &c.median;
    format!(
        "{} (95% CI {}–{})",
        f(m.value),
        f(m.ci_lower),
        f(m.ci_upper)
    )
}

/// One line of test results under the title.
pub(crate) fn tests_line(a: &SurvivalAnalysis) -> String {
    let lr = match &a.log_rank {
        Part::Available(l) => format!("log-rank χ² = {:.2}, {}", l.statistic, p_text(l.p_value)),
        _ => "log-rank: not computed (see report)".into(),
    };
    let hr = match &a.cox {
        Part::Available(v) if !v.is_empty() => {
            let c = &v[0];
            let h = &c.hazard_ratio;
            let ci = match (h.ci_lower, h.ci_upper) {
                (Some(l), Some(u)) => format!(" (95% CI {l:.2}–{u:.2})"),
                _ => String::new(),
            };
            let vs = match a.curves.as_slice() {
                [g0, g1, ..] => format!(" {} vs {}", g1.label, g0.label),
                _ => String::new(),
            };
            match h.value {
                Some(v) => format!(
                    "Cox HR{vs} = {v:.2}{ci}, {} ({}, {})",
                    p_text(c.p_value),
                    c.model,
                    c.ties
                ),
                None => "Cox HR undefined".into(),
            }
        }
        _ => "Cox HR: not computed (see report)".into(),
    };
    format!("{lr}   ·   {hr}")
}

/// Stepped (time, value) polyline from (0, 1): horizontal to each time, then vertical.
fn stepped(
    c: &KmCurveReport,
    f: impl Fn(&stats::report::KmStep) -> f64,
    end: f64,
) -> Vec<(f64, f64)> {
    let mut pts = vec![(0.0, 1.0)];
    let mut prev = 1.0;
    for s in &c.steps {
        let v = f(s);
        pts.push((s.time, prev));
        pts.push((s.time, v));
        prev = v;
    }
    // The curve is defined up to the last observed time only.
    let last = c.steps.last().map_or(0.0, |s| s.time).min(end);
    pts.push((last, prev));
    pts
}

/// A KM figure of one grouping.
pub(crate) struct KmFigure<'a> {
    /// File stem ("km_predicted" / "km_observed").
    pub stem: &'static str,
    /// Heading.
    pub title: String,
    /// The analysis.
    pub analysis: &'a SurvivalAnalysis,
}

const LEFT: u32 = 170;
/// Most x-axis labels (and numbers-at-risk columns).
const X_LABELS: usize = 9;

impl Figure for KmFigure<'_> {
    fn stem(&self) -> &'static str {
        self.stem
    }
    fn size(&self) -> (u32, u32) {
        (1000, 640 + self.table_height())
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let a = self.analysis;
        let (w, h) = root.dim_in_pixel();
        let t_max = a
            .curves
            .iter()
            .flat_map(|c| c.steps.iter().map(|s| s.time))
            .filter(|t| t.is_finite())
            .fold(0.0f64, f64::max);
        let t_max = if t_max > 0.0 { t_max } else { 1.0 };
        let t_end = (t_max / nice_step(t_max, 6)).ceil() * nice_step(t_max, 6);
        let (top, bottom) = root.split_vertically(h - self.table_height());
        let centre_top = Pos::new(HPos::Center, VPos::Top);
        top.draw_text(
            &self.title,
            &TextStyle::from((FONT, TITLE_SIZE).into_font()).pos(centre_top),
            (w as i32 / 2, 12),
        )?;
        top.draw_text(
            &tests_line(a),
            &TextStyle::from((FONT, LEGEND_SIZE).into_font())
                .color(&REFERENCE)
                .pos(centre_top),
            (w as i32 / 2, 44),
        )?;
        let mut chart = ChartBuilder::on(&top)
            .margin(20)
            .margin_top(75)
            .margin_left(LEFT - 80)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..t_end, 0f64..1.02f64)?;
        chart
            .configure_mesh()
            .x_desc(a.endpoint.as_str())
            .y_desc("Survival probability")
            .axis_desc_style((FONT, LABEL_SIZE))
            .label_style((FONT, TICK_SIZE))
            .x_labels(X_LABELS)
            .x_label_formatter(&|v: &f64| tick(*v))
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .draw()?;
        // The mesh labels sit at these key points; the risk table uses the same ones.
        let ticks: Vec<f64> = chart
            .as_coord_spec()
            .x_spec()
            .key_points(BoldPoints(X_LABELS));
        for (i, c) in a.curves.iter().enumerate() {
            let col = colour(i);
            let upper = stepped(c, |s| s.ci_upper.unwrap_or(s.survival), t_end);
            let lower = stepped(c, |s| s.ci_lower.unwrap_or(s.survival), t_end);
            let band: Vec<(f64, f64)> = upper.iter().chain(lower.iter().rev()).copied().collect();
            chart.draw_series(std::iter::once(Polygon::new(band, col.mix(0.15).filled())))?;
            chart
                .draw_series(LineSeries::new(
                    stepped(c, |s| s.survival, t_end),
                    col.stroke_width(3),
                ))?
                .label(format!(
                    "{}: n = {}, events = {}, median {}",
                    c.label,
                    c.n,
                    c.events,
                    median_label(c)
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], col.stroke_width(3))
                });
            // Censoring ticks ("+") on the curve.
            chart.draw_series(c.steps.iter().filter(|s| s.censored > 0).map(|s| {
                EmptyElement::at((s.time, s.survival))
                    + PathElement::new(vec![(-5, 0), (5, 0)], col.stroke_width(2))
                    + PathElement::new(vec![(0, -6), (0, 6)], col.stroke_width(2))
            }))?;
        }
        if !a.curves.is_empty() {
            chart
                .configure_series_labels()
                // Lower left: KM curves start at 1 and fall, so that corner is the emptiest.
                .position(SeriesLabelPosition::LowerLeft)
                .margin(12)
                .label_font((FONT, LEGEND_SIZE))
                .background_style(WHITE.mix(0.92))
                .border_style(RGBColor(160, 160, 160))
                .draw()?;
        }
        // Numbers at risk, aligned with the x ticks.
        let base = bottom.get_base_pixel();
        let head =
            TextStyle::from((FONT, LABEL_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        bottom.draw_text("Number at risk", &head, (16, 16))?;
        for (i, c) in a.curves.iter().enumerate() {
            let y = 48 + 28 * i as i32;
            let col = colour(i);
            let name = TextStyle::from((FONT, TICK_SIZE + 1).into_font())
                .color(&col)
                .pos(Pos::new(HPos::Left, VPos::Center));
            bottom.draw_text(&shorten(&c.label, 19), &name, (16, y))?;
            for &t in &ticks {
                let (px, _) = chart.backend_coord(&(t, 0.0));
                bottom.draw_text(
                    &at_risk(c, t).to_string(),
                    &TextStyle::from((FONT, TICK_SIZE + 1).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                    (px - base.0, y),
                )?;
            }
        }
        Ok(())
    }
}

impl KmFigure<'_> {
    fn table_height(&self) -> u32 {
        40 + 28 * self.analysis.curves.len().max(1) as u32
    }
}
