//! The learning curve of a run folder, `curve.png`: every episode's return (light),
//! its moving average over 20 episodes, and the periodic greedy evaluations,
//! against env steps. Drawn with plotters; labels use the DejaVu Sans font from
//! the `dejavu` crate, so no system fonts are needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::TrainError;

/// Episodes in the moving average.
const WINDOW: usize = 20;

fn plot_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Plot(e.to_string())
}

/// Reads `metrics.csv` and draws `png` (900 × 500) titled `title`.
pub fn draw_curve(metrics_csv: &Path, png: &Path, title: &str) -> Result<(), TrainError> {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        // Registering can only fail for unparsable font bytes, which the crate ships.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
    let mut reader = csv::Reader::from_path(metrics_csv).map_err(plot_error)?;
    let mut episodes: Vec<(u64, f64)> = Vec::new();
    let mut evals: Vec<(u64, f64)> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(plot_error)?;
        let field = |i: usize| record.get(i).and_then(|v| v.parse::<f64>().ok());
        let Some(step) = record.get(0).and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        if let Some(r) = field(1) {
            episodes.push((step, r));
        }
        if let Some(r) = field(2) {
            evals.push((step, r));
        }
    }
    let average: Vec<(u64, f64)> = episodes
        .iter()
        .enumerate()
        .map(|(i, &(step, _))| {
            let window = &episodes[i.saturating_sub(WINDOW - 1)..=i];
            (
                step,
                window.iter().map(|(_, r)| r).sum::<f64>() / window.len() as f64,
            )
        })
        .collect();
    let all = episodes.iter().chain(&evals);
    let max_step = all.clone().map(|(s, _)| *s).max().unwrap_or(1).max(1);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, r)| {
        (lo.min(*r), hi.max(*r))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.05).max(1.0);

    let root = BitMapBackend::new(png, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..max_step, (lo - pad)..(hi + pad))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("env steps")
        .y_desc("return")
        .draw()
        .map_err(plot_error)?;
    let light = RGBColor(150, 170, 220);
    chart
        .draw_series(LineSeries::new(episodes.iter().copied(), &light))
        .map_err(plot_error)?
        .label("episode return")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], light));
    chart
        .draw_series(LineSeries::new(average, BLUE.stroke_width(2)))
        .map_err(plot_error)?
        .label(format!("mean of last {WINDOW} episodes"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(evals.iter().copied(), RED.stroke_width(2)))
        .map_err(plot_error)?
        .label("greedy evaluation")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_series(evals.iter().map(|&p| Circle::new(p, 3, RED.filled())))
        .map_err(plot_error)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}
