//! Classification figures from `stats::report::ModelReport`s: ROC curves (ML vs clinical, AUC
//! with its CI in the legend), confusion matrices at the Youden cut-off, calibration curves with
//! the diagonal, and decision curves with treat-all / treat-none.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use stats::report::{Estimate, ModelReport};

use super::{
    DrawResult, FONT, Figure, GRID, LABEL_SIZE, LEGEND_SIZE, REFERENCE, TICK_SIZE, TITLE_SIZE,
    clip_below, colour, p_text, tick,
};

/// "AUC 0.812 (95% CI 0.741–0.883)"; the interval is the DeLong one (the table also shows the
/// bootstrap interval).
pub(crate) fn auc_label(e: &Estimate) -> String {
    match (e.value, e.ci_lower, e.ci_upper) {
        (Some(v), Some(l), Some(u)) => format!("AUC {v:.3} (95% CI {l:.3}–{u:.3})"),
        (Some(v), _, _) => format!("AUC {v:.3} (no CI)"),
        _ => "AUC undefined".into(),
    }
}

/// ROC curves of every model, the chance diagonal, and each model's Youden point.
pub(crate) struct RocFigure<'a> {
    pub models: &'a [ModelReport],
}

impl Figure for RocFigure<'_> {
    fn stem(&self) -> &'static str {
        "roc"
    }
    fn size(&self) -> (u32, u32) {
        (820, 760)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let mut chart = ChartBuilder::on(root)
            .caption("ROC curve", (FONT, TITLE_SIZE))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("1 − specificity (false-positive rate)")
            .y_desc("Sensitivity (true-positive rate)")
            .axis_desc_style((FONT, LABEL_SIZE))
            .label_style((FONT, TICK_SIZE))
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .draw()?;
        chart.draw_series(DashedLineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            6,
            5,
            REFERENCE.stroke_width(1),
        ))?;
        for (i, m) in self.models.iter().enumerate() {
            let c = colour(i);
            let pts: Vec<(f64, f64)> = m.roc.iter().map(|p| (p.fpr, p.tpr)).collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(3)))?
                .label(format!("{}: {}", m.name, auc_label(&m.auc)))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3))
                });
            if let (Some(se), Some(sp)) = (m.sensitivity.value, m.specificity.value) {
                chart.draw_series(std::iter::once(Circle::new((1.0 - sp, se), 6, c.filled())))?;
            }
        }
        // A legend entry for the cut-off dots (no data of its own).
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label("Youden-optimal cut-off")
            .legend(|(x, y)| Circle::new((x + 11, y), 5, REFERENCE.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .margin(12)
            .label_font((FONT, LEGEND_SIZE))
            .background_style(WHITE.mix(0.92))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
        Ok(())
    }
}

/// Confusion matrices at each model's cut-off, side by side.
pub(crate) struct ConfusionFigure<'a> {
    pub models: &'a [ModelReport],
}

const CM_PANEL_W: u32 = 470;

impl Figure for ConfusionFigure<'_> {
    fn stem(&self) -> &'static str {
        "confusion_matrix"
    }
    fn size(&self) -> (u32, u32) {
        (CM_PANEL_W * self.models.len().max(1) as u32, 440)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let panels = root.split_evenly((1, self.models.len().max(1)));
        for (m, panel) in self.models.iter().zip(&panels) {
            draw_confusion(m, panel)?;
        }
        Ok(())
    }
}

fn draw_confusion<DB: DrawingBackend>(m: &ModelReport, area: &DrawingArea<DB, Shift>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let centre = Pos::new(HPos::Center, VPos::Center);
    let title = TextStyle::from((FONT, TITLE_SIZE - 2).into_font()).pos(centre);
    let label = TextStyle::from((FONT, LABEL_SIZE - 1).into_font()).pos(centre);
    let small = TextStyle::from((FONT, TICK_SIZE).into_font()).pos(centre);
    let (w, _) = area.dim_in_pixel();
    let cx = w as i32 / 2;
    area.draw_text(&m.name, &title, (cx, 24))?;
    area.draw_text(
        &format!("cut-off p ≥ {:.3} (Youden)", m.cutoff),
        &small.color(&REFERENCE),
        (cx, 50),
    )?;
    let cell = 140i32;
    let (x0, y0) = (cx - cell + 40, 110);
    area.draw_text("Predicted +", &label, (x0 + cell / 2, y0 - 18))?;
    area.draw_text("Predicted −", &label, (x0 + 3 * cell / 2, y0 - 18))?;
    let row_label = TextStyle::from((FONT, LABEL_SIZE - 1).into_font())
        .pos(Pos::new(HPos::Right, VPos::Center));
    area.draw_text("Observed +", &row_label, (x0 - 12, y0 + cell / 2))?;
    area.draw_text("Observed −", &row_label, (x0 - 12, y0 + 3 * cell / 2))?;
    let c = m.confusion;
    // (row, col, name, count, row total): rows = observed +/−, columns = predicted +/−.
    let cells = [
        (0, 0, "TP", c.tp, c.tp + c.fn_),
        (0, 1, "FN", c.fn_, c.tp + c.fn_),
        (1, 0, "FP", c.fp, c.fp + c.tn),
        (1, 1, "TN", c.tn, c.fp + c.tn),
    ];
    for (r, col, name, n, row_total) in cells {
        let share = if row_total == 0 {
            0.0
        } else {
            n as f64 / row_total as f64
        };
        // Correct cells (TP, TN) in blue, errors in orange; depth = share of the observed row.
        let base = if r == col {
            RGBColor(31, 119, 180)
        } else {
            RGBColor(230, 120, 30)
        };
        let x = x0 + col * cell;
        let y = y0 + r * cell;
        area.draw(&Rectangle::new(
            [(x, y), (x + cell, y + cell)],
            base.mix(0.12 + 0.7 * share).filled(),
        ))?;
        area.draw(&Rectangle::new(
            [(x, y), (x + cell, y + cell)],
            WHITE.stroke_width(2),
        ))?;
        let ink = if share > 0.55 { WHITE } else { BLACK };
        area.draw_text(
            &format!("{name} = {n}"),
            &TextStyle::from((FONT, LABEL_SIZE + 3).into_font())
                .pos(centre)
                .color(&ink),
            (x + cell / 2, y + cell / 2 - 12),
        )?;
        let pct = if row_total == 0 {
            "row empty".to_string()
        } else {
            format!("{:.0}% of row", 100.0 * share)
        };
        area.draw_text(&pct, &small.color(&ink), (x + cell / 2, y + cell / 2 + 16))?;
    }
    area.draw_text(
        &format!(
            "n = {} ({} positive, {} negative)",
            c.tp + c.fp + c.tn + c.fn_,
            m.n_pos,
            m.n_neg
        ),
        &small.color(&REFERENCE),
        (cx, y0 + 2 * cell + 26),
    )?;
    Ok(())
}

/// Calibration curves (decile groups) with the ideal diagonal; HL p in the legend.
pub(crate) struct CalibrationFigure<'a> {
    pub models: &'a [ModelReport],
}

impl Figure for CalibrationFigure<'_> {
    fn stem(&self) -> &'static str {
        "calibration"
    }
    fn size(&self) -> (u32, u32) {
        (820, 760)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let mut chart = ChartBuilder::on(root)
            .caption("Calibration (decile groups)", (FONT, TITLE_SIZE))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("Mean predicted probability")
            .y_desc("Observed response rate")
            .axis_desc_style((FONT, LABEL_SIZE))
            .label_style((FONT, TICK_SIZE))
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                6,
                5,
                REFERENCE.stroke_width(1),
            ))?
            .label("ideal calibration")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], REFERENCE.stroke_width(1))
            });
        for (i, m) in self.models.iter().enumerate() {
            let c = colour(i);
            let pts: Vec<(f64, f64)> = m
                .calibration
                .iter()
                .map(|b| (b.mean_predicted, b.observed))
                .collect();
            let hl = &m.hosmer_lemeshow;
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                .label(format!(
                    "{}: Hosmer-Lemeshow χ² = {:.2}, df {}, {}",
                    m.name,
                    hl.statistic,
                    hl.df,
                    p_text(hl.p_value)
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(2))
                });
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 5, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .margin(12)
            .label_font((FONT, LEGEND_SIZE))
            .background_style(WHITE.mix(0.92))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
        Ok(())
    }
}

/// Decision curves: net benefit of each model, treat-all and treat-none.
pub(crate) struct DecisionCurveFigure<'a> {
    pub models: &'a [ModelReport],
}

impl Figure for DecisionCurveFigure<'_> {
    fn stem(&self) -> &'static str {
        "decision_curve"
    }
    fn size(&self) -> (u32, u32) {
        (900, 640)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let all = self
            .models
            .first()
            .map(|m| {
                m.decision_curve
                    .iter()
                    .map(|p| (p.threshold, p.treat_all))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        // y range as R's dcurves: from just below 0 to just above the best net benefit
        // (treat-all at pt → 0 is the prevalence); treat-all's steep fall is clipped.
        let top = self
            .models
            .iter()
            .flat_map(|m| m.decision_curve.iter())
            .flat_map(|p| [p.net_benefit, p.treat_all])
            .filter(|v| v.is_finite())
            .fold(0.05f64, f64::max);
        let hi = top * 1.1;
        let lo = -0.1 * hi.max(0.1);
        let mut chart = ChartBuilder::on(root)
            .caption("Decision curve", (FONT, TITLE_SIZE))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(75)
            .build_cartesian_2d(0f64..1f64, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("Threshold probability")
            .y_desc("Net benefit")
            .x_label_formatter(&|v: &f64| tick(*v))
            .y_label_formatter(&|v: &f64| tick(*v))
            .axis_desc_style((FONT, LABEL_SIZE))
            .label_style((FONT, TICK_SIZE))
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (1.0, 0.0)],
                BLACK.stroke_width(2),
            ))?
            .label("treat none")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], BLACK.stroke_width(2)));
        let grey = RGBColor(150, 150, 150);
        for (k, seg) in clip_below(&all, lo).into_iter().enumerate() {
            let s = chart.draw_series(LineSeries::new(seg, grey.stroke_width(2)))?;
            if k == 0 {
                s.label("treat all").legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], grey.stroke_width(2))
                });
            }
        }
        for (i, m) in self.models.iter().enumerate() {
            let c = colour(i);
            let pts: Vec<(f64, f64)> = m
                .decision_curve
                .iter()
                .map(|p| (p.threshold, p.net_benefit))
                .collect();
            for (k, seg) in clip_below(&pts, lo).into_iter().enumerate() {
                let s = chart.draw_series(LineSeries::new(seg, c.stroke_width(3)))?;
                if k == 0 {
                    s.label(m.name.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3))
                    });
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(12)
            .label_font((FONT, LEGEND_SIZE))
            .background_style(WHITE.mix(0.92))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
        Ok(())
    }
}
