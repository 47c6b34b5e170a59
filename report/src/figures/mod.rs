//! Figures: every figure is a [`Figure`] that draws on a plotters drawing area of any backend;
//! [`render`] draws it twice, into an SVG string and into an RGB buffer encoded as PNG, with the
//! embedded DejaVu Sans font (no system font lookup, so output is the same on every machine).
//!
//! Families: [`lasso`] (coefficient path, CV curve, selection frequencies), [`classification`]
//! (ROC, confusion matrix, calibration, decision curve), [`survival`] (Kaplan-Meier with the
//! numbers-at-risk table).

mod bitmap;
pub mod classification;
pub mod lasso;
pub mod survival;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::sync::OnceLock;

use crate::error::ReportError;

/// The font family every figure uses; registered once from the embedded TTF.
pub(crate) const FONT: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// What drawing code returns: plotters' errors are generic over the backend, so they are
/// boxed here and turned into [`ReportError::Figure`] by [`render`].
pub(crate) type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A figure that can be drawn on any backend.
pub(crate) trait Figure {
    /// File stem under `figures/` (e.g. "roc").
    fn stem(&self) -> &'static str;
    /// Size in pixels (the PNG's size; the SVG's viewport).
    fn size(&self) -> (u32, u32);
    /// Draws on a white area of [`Figure::size`].
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// A figure rendered both ways.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    /// File stem.
    pub stem: &'static str,
    /// SVG document.
    pub svg: String,
    /// PNG file bytes.
    pub png: Vec<u8>,
}

fn register_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Font) }
}

/// Draws `fig` into an SVG string and a PNG.
pub(crate) fn render<F: Figure>(fig: &F) -> Result<Rendered, ReportError> {
    register_font()?;
    let stem = fig.stem();
    let (w, h) = fig.size();
    let err = |e: Box<dyn std::error::Error>| ReportError::Figure {
        figure: stem,
        message: e.to_string(),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.into()))?;
        fig.draw(&root).map_err(err)?;
        root.present().map_err(|e| err(e.into()))?;
    }
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let font = ab_glyph::FontRef::try_from_slice(DEJAVU_SANS).map_err(|_| ReportError::Font)?;
        let root = bitmap::TextFixBitmap::new(&mut rgb, (w, h), font).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.into()))?;
        fig.draw(&root).map_err(err)?;
        root.present().map_err(|e| err(e.into()))?;
    }
    let png = encode_png(&rgb, w, h).map_err(|e| ReportError::Png {
        figure: stem,
        message: e.to_string(),
    })?;
    Ok(Rendered { stem, svg, png })
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        // Flat-colour plots: adaptive filtering with the best deflate is ~5× smaller than the
        // defaults and still takes milliseconds.
        enc.set_compression(png::Compression::Best);
        enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
        let mut writer = enc.write_header()?;
        writer.write_image_data(rgb)?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Shared style.

/// Model colours (ML, clinical, then further comparators): the first colours of matplotlib's
/// "tab10", which stay distinguishable for the common colour-vision deficiencies.
pub(crate) const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Colour of series `i`.
pub(crate) fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Reference lines (chance, ideal calibration, treat-none).
pub(crate) const REFERENCE: RGBColor = RGBColor(90, 90, 90);

/// Grid lines at the axis labels.
pub(crate) const GRID: RGBColor = RGBColor(222, 222, 222);

/// Font sizes (pixels).
pub(crate) const TITLE_SIZE: u32 = 22;
pub(crate) const LABEL_SIZE: u32 = 17;
pub(crate) const TICK_SIZE: u32 = 14;
pub(crate) const LEGEND_SIZE: u32 = 14;

/// A p-value with its relation for a figure label: "p < 0.001" or "p = 0.041".
pub(crate) fn p_text(p: f64) -> String {
    if !p.is_finite() {
        "p undefined".into()
    } else if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

/// An axis tick value without trailing zeros ("5", "2.5", "0.25").
pub(crate) fn tick(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// `x` with `digits` significant digits (C's `%g` without the exponent for ordinary sizes).
pub(crate) fn sig(x: f64, digits: usize) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    if (-4..6).contains(&mag) {
        let dp = (digits as i32 - 1 - mag).max(0) as usize;
        format!("{x:.dp$}")
    } else {
        format!("{x:.*e}", digits.saturating_sub(1))
    }
}

/// Splits a polyline at the horizontal line `y = lo`, keeping only the parts at or above it;
/// the crossing points are interpolated so clipped curves end exactly on the axis.
pub(crate) fn clip_below(points: &[(f64, f64)], lo: f64) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        let inside = y >= lo;
        if i > 0 {
            let (px, py) = points[i - 1];
            let was_inside = py >= lo;
            if inside != was_inside && y != py {
                let t = (lo - py) / (y - py);
                cur.push((px + t * (x - px), lo));
                if was_inside {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
        if inside {
            cur.push((x, y));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.retain(|s| s.len() >= 2);
    out
}

/// "Nice" tick spacing (1, 2, 2.5 or 5 × 10^k) giving about `target` intervals over `span`.
pub(crate) fn nice_step(span: f64, target: usize) -> f64 {
    if span.is_nan() || span <= 0.0 || span.is_infinite() {
        return 1.0;
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Text of at most `max` characters (an ellipsis marks the cut), so long radiomics feature
/// names do not push plots off the canvas.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_interpolates_the_crossing() {
        let pts = [(0.0, 1.0), (1.0, -1.0), (2.0, -3.0), (3.0, 1.0)];
        let segs = clip_below(&pts, 0.0);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0], vec![(0.0, 1.0), (0.5, 0.0)]);
        assert_eq!(segs[1], vec![(2.75, 0.0), (3.0, 1.0)]);
        // Entirely inside: unchanged.
        assert_eq!(clip_below(&pts[..1], -5.0).len(), 0);
        assert_eq!(clip_below(&pts, -5.0), vec![pts.to_vec()]);
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(36.0, 6), 10.0);
        assert_eq!(nice_step(24.0, 6), 5.0);
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(1.0, 4), 0.25);
        assert_eq!(nice_step(0.0, 4), 1.0);
    }

    #[test]
    fn significant_digits() {
        assert_eq!(sig(0.023456, 3), "0.0235");
        assert_eq!(sig(12.345, 3), "12.3");
        assert_eq!(sig(1.5e-7, 2), "1.5e-7");
        assert_eq!(sig(0.0, 3), "0");
    }

    #[test]
    fn shortening_marks_the_cut() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }

    #[test]
    fn p_values_print_as_a_reader_expects() {
        assert_eq!(p_text(0.0004), "p < 0.001");
        assert_eq!(p_text(0.0412), "p = 0.041");
        assert_eq!(p_text(f64::NAN), "p undefined");
    }

    #[test]
    fn ticks_drop_trailing_zeros() {
        assert_eq!(tick(5.0), "5");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(-0.0), "0");
    }
}
