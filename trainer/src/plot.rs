//! The learning curve of a run folder, `curve.png`: every episode's return (light),
//! its moving average over 20 episodes, and the periodic greedy evaluations,
//! against env steps. Drawn with plotters; labels use the DejaVu Sans font from
//! the `dejavu` crate, so no system fonts are needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::types::{RangedCoordf64, RangedCoordu64};
use plotters::prelude::*;

use crate::TrainError;

/// Episodes in the moving average.
const WINDOW: usize = 20;

fn plot_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Plot(e.to_string())
}

/// Registers the bundled font once.
fn register_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        // Registering can only fail for unparsable font bytes, which the crate ships.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// A `metrics.csv`'s episode returns and periodic evaluations, by env step.
type Points = Vec<(u64, f64)>;

fn read_metrics(metrics_csv: &Path) -> Result<(Points, Points), TrainError> {
    let mut reader = csv::Reader::from_path(metrics_csv).map_err(plot_error)?;
    let mut episodes: Points = Vec::new();
    let mut evals: Points = Vec::new();
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
    Ok((episodes, evals))
}

/// Drops the rows of a metrics file (the run's or the fleet learner's: step
/// first) past `step`, the step a run resumes from: after a crash, the rows
/// written since the last checkpoint are played again, and would otherwise be
/// there twice. Returns how many rows went; a missing file is no error.
///
/// A crash can also tear the last row (the writer's buffer reaches the file
/// in pieces): a final line without its newline, or a row short of fields, is
/// dropped too, so the rows appended next start on a line of their own.
pub fn rewind_metrics(metrics_csv: &Path, step: u64) -> Result<usize, TrainError> {
    let bytes = match std::fs::read(metrics_csv) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(plot_error(format!("{}: {e}", metrics_csv.display()))),
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &[][..],
    };
    let mut dropped = usize::from(complete.len() < bytes.len());
    if complete.is_empty() {
        // Not even the header is whole: start the file afresh.
        if dropped > 0 {
            crate::export::write_atomic(metrics_csv, &[])?;
        }
        return Ok(0);
    }
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(complete);
    let header = reader.headers().map_err(plot_error)?.clone();
    let mut kept = csv::Writer::from_writer(Vec::new());
    kept.write_record(&header).map_err(plot_error)?;
    for record in reader.records() {
        let record = record.map_err(plot_error)?;
        if record.len() != header.len() {
            dropped += 1; // torn
            continue;
        }
        match record.get(0).and_then(|v| v.parse::<u64>().ok()) {
            Some(s) if s > step => dropped += 1,
            _ => kept.write_record(&record).map_err(plot_error)?,
        }
    }
    if dropped > 0 {
        let bytes = kept.into_inner().map_err(plot_error)?;
        crate::export::write_atomic(metrics_csv, &bytes)?;
    }
    Ok(dropped)
}

/// Opens a metrics file (step first) for writing rows: emptied for a fresh
/// run; for a run resuming from step `resume_from`, rewound to it
/// ([`rewind_metrics`]) and appended to. The header goes only into an empty
/// file. Returns the writer and how many rows the rewind dropped.
pub fn open_metrics(
    path: &Path,
    resume_from: Option<u64>,
) -> Result<(csv::Writer<std::fs::File>, usize), TrainError> {
    let dropped = match resume_from {
        Some(step) => rewind_metrics(path, step)?,
        None => 0,
    };
    let resuming = resume_from.is_some();
    let opened = |e: std::io::Error| plot_error(format!("{}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resuming)
        .truncate(!resuming)
        .open(path)
        .map_err(opened)?;
    let header = file.metadata().map_err(opened)?.len() == 0;
    let writer = csv::WriterBuilder::new()
        .has_headers(header)
        .from_writer(file);
    Ok((writer, dropped))
}

/// The mean of the last [`WINDOW`] episode returns at each episode's end.
fn moving_average(episodes: &[(u64, f64)]) -> Points {
    episodes
        .iter()
        .enumerate()
        .map(|(i, &(step, _))| {
            let window = &episodes[i.saturating_sub(WINDOW - 1)..=i];
            (
                step,
                window.iter().map(|(_, r)| r).sum::<f64>() / window.len() as f64,
            )
        })
        .collect()
}

/// Reads `metrics.csv` and draws `png` (900 × 500) titled `title`.
pub fn draw_curve(metrics_csv: &Path, png: &Path, title: &str) -> Result<(), TrainError> {
    register_font();
    let (episodes, evals) = read_metrics(metrics_csv)?;
    let average = moving_average(&episodes);
    let extent = Extent::of(episodes.iter().chain(&evals));
    draw_chart(png, title, extent, "return", |chart| {
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
        Ok(())
    })
}

/// The x and y ranges a chart needs to show some points.
struct Extent {
    max_step: u64,
    lo: f64,
    hi: f64,
}

impl Extent {
    fn of<'a>(points: impl Iterator<Item = &'a (u64, f64)>) -> Self {
        let (mut max_step, mut lo, mut hi) = (1, f64::INFINITY, f64::NEG_INFINITY);
        for &(step, r) in points {
            max_step = max_step.max(step);
            (lo, hi) = (lo.min(r), hi.max(r));
        }
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        Self { max_step, lo, hi }
    }
}

/// The chart type every picture here draws on: env steps against return.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordu64, RangedCoordf64>>;

/// A 900 × 500 chart of `extent` (5% margin on y) with axes, titled
/// `title`; `series` draws on it, then the legend goes in the lower right.
fn draw_chart(
    png: &Path,
    title: &str,
    extent: Extent,
    y_desc: &str,
    series: impl FnOnce(&mut Chart<'_, '_>) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let Extent { max_step, lo, hi } = extent;
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
        .y_desc(y_desc)
        .draw()
        .map_err(plot_error)?;
    series(&mut chart)?;
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

/// A population's runs in one picture (`png`, 900 × 500): each member's
/// moving average of episode returns (thin, labelled by `curves`' names) and
/// the members' mean of it (thick black), against env steps.
pub fn draw_population(
    curves: &[(String, std::path::PathBuf)],
    png: &Path,
    title: &str,
) -> Result<(), TrainError> {
    register_font();
    let mut averages = Vec::with_capacity(curves.len());
    for (name, path) in curves {
        let (episodes, _) = read_metrics(path)?;
        averages.push((name, moving_average(&episodes)));
    }
    let extent = Extent::of(averages.iter().flat_map(|(_, a)| a.iter()));
    let max_step = extent.max_step;
    // The members' mean on a grid of steps, each member at its latest value
    // (members that have not finished an episode yet are left out).
    let grid: Points = (1..=200u64)
        .filter_map(|i| {
            let step = max_step * i / 200;
            let known: Vec<f64> = averages
                .iter()
                .filter_map(|(_, a)| a.iter().take_while(|(s, _)| *s <= step).last())
                .map(|(_, r)| *r)
                .collect();
            (!known.is_empty()).then(|| (step, known.iter().sum::<f64>() / known.len() as f64))
        })
        .collect();

    let y_desc = format!("return, mean of last {WINDOW} episodes");
    draw_chart(png, title, extent, &y_desc, |chart| {
        for (i, (name, average)) in averages.iter().enumerate() {
            let color = Palette99::pick(i).mix(0.8);
            chart
                .draw_series(LineSeries::new(average.iter().copied(), color))
                .map_err(plot_error)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .draw_series(LineSeries::new(grid, BLACK.stroke_width(3)))
            .map_err(plot_error)?
            .label("members' mean")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(3)));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewinding_metrics_drops_the_rows_past_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("reflex-rewind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.csv");
        assert_eq!(rewind_metrics(&path, 5).unwrap(), 0, "no file yet");
        let text = "step,episode_return,eval_return,robot\n\
                    10,1.5,,r0\n20,,9.0,\n30,2.5,,\"r,1\"\n40,3.0,,r0\n";
        std::fs::write(&path, text).unwrap();
        assert_eq!(rewind_metrics(&path, 20).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "step,episode_return,eval_return,robot\n10,1.5,,r0\n20,,9.0,\n"
        );
        assert_eq!(
            rewind_metrics(&path, 20).unwrap(),
            0,
            "nothing more to drop"
        );
        // What is left still draws.
        let (episodes, evals) = read_metrics(&path).unwrap();
        assert_eq!((episodes, evals), (vec![(10, 1.5)], vec![(20, 9.0)]));

        // A crash tore the last row: short of fields, or cut inside its last
        // field (no newline): either is dropped, and a resumed run appends on
        // a line of its own.
        for torn in ["10,1.5,,r0\n20,,9", "10,1.5,,r0\n20,,9.0,r"] {
            let text = format!("step,episode_return,eval_return,robot\n{torn}");
            std::fs::write(&path, text).unwrap();
            assert_eq!(rewind_metrics(&path, 100).unwrap(), 1, "{torn:?}");
            let (mut w, _) = open_metrics(&path, Some(100)).unwrap();
            w.write_record(["30", "2.0", "", "r0"]).unwrap();
            drop(w);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                "step,episode_return,eval_return,robot\n10,1.5,,r0\n30,2.0,,r0\n",
                "{torn:?}"
            );
        }
        std::fs::write(&path, "step,episode_ret").unwrap();
        assert_eq!(rewind_metrics(&path, 100).unwrap(), 0);
        assert_eq!(std::fs::read(&path).unwrap(), b"", "a torn header: afresh");
        // A row short of fields with its newline (a tear glued to the next row
        // by an older build) is dropped as well.
        std::fs::write(&path, "step,a,b\n1,2,3\n2,3\n").unwrap();
        assert_eq!(rewind_metrics(&path, 100).unwrap(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }
}
