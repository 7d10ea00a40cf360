//! Plots of a training run: read `RUN_DIR/metrics.jsonl` and draw `RUN_DIR/plots/loss.png` (and
//! `accuracy.png` when the run logs accuracy), train and val against the optimizer step, like
//! `plot_values` in *Build a LLM From Scratch* ch. 6/7; for a classifier run also
//! `confusion.png`, the test split's confusion matrix from `RUN_DIR/eval/metrics.json`.
//!
//! The events come from [`crate::runs::metrics`], which reads `metrics.jsonl` also while it grows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use plotters::prelude::*;

use crate::runs::metrics::{METRICS_FILE, MetricEvent, metrics_path, read_metrics};

/// The folder of a run directory that the plots go to.
pub const PLOTS_DIR: &str = "plots";
/// Width and height of every plot, in pixels.
pub const PLOT_SIZE: (u32, u32) = (1000, 600);


/// Draws the plots of a run from its `metrics.jsonl` into `run_dir/plots/`: `loss.png` always,
/// `accuracy.png` when some event has an accuracy. Returns the paths written. Each PNG is rendered
/// to a temporary file next to it and renamed, so a reader never sees half a picture.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    if !run_dir.is_dir() {
        bail!("{} is not a run directory", run_dir.display());
    }
    let metrics = metrics_path(run_dir);
    if !metrics.exists() {
        bail!("no metrics yet in {}: there is no {METRICS_FILE}", run_dir.display());
    }
    let events = read_metrics(&metrics)?;
    if events.is_empty() {
        bail!("no metrics yet in {}", metrics.display());
    }
    register_font()?;
    let plots_dir = run_dir.join(PLOTS_DIR);
    std::fs::create_dir_all(&plots_dir).with_context(|| format!("cannot create {}", plots_dir.display()))?;
    let run_name = run_name(run_dir);

    let mut written = Vec::new();
    let loss = series_by_split(&events, |event| event.loss);
    written.push(write_plot(&plots_dir, &run_name, "loss", SeriesLabelPosition::UpperRight, &loss)?);
    let accuracy = series_by_split(&events, |event| event.accuracy);
    if !accuracy.is_empty() {
        written.push(write_plot(&plots_dir, &run_name, "accuracy", SeriesLabelPosition::LowerRight, &accuracy)?);
    }
    if let Some(path) = plot_confusion(run_dir, &plots_dir, &run_name)? {
        written.push(path);
    }
    Ok(written)
}

/// `plots/confusion.png` from the test split of `RUN_DIR/eval/metrics.json` (a classifier run's
/// final scores), when there is one.
fn plot_confusion(run_dir: &Path, plots_dir: &Path, run_name: &str) -> Result<Option<PathBuf>> {
    let path = run_dir.join("eval").join("metrics.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let metrics: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let test = &metrics["test"];
    let labels: Vec<String> = test["classes"].as_array().into_iter().flatten().filter_map(|c| c["label"].as_str().map(str::to_string)).collect();
    let confusion: Vec<Vec<usize>> = serde_json::from_value(test["confusion"].clone()).with_context(|| format!("{}: no test confusion matrix", path.display()))?;
    if labels.is_empty() || confusion.len() != labels.len() || confusion.iter().any(|row| row.len() != labels.len()) {
        bail!("{}: the test confusion matrix does not match its {} classes", path.display(), labels.len());
    }
    let title = format!("{run_name}: test confusion (rows: true, columns: predicted)");
    render(plots_dir, "confusion", |file| draw_confusion(file, &title, &labels, &confusion)).map(Some)
}

/// The matrix as coloured cells (each row's share of its true class) with the counts in them.
fn draw_confusion(path: &Path, title: &str, labels: &[String], confusion: &[Vec<usize>]) -> Result<()> {
    let k = labels.len() as i32;
    let (width, height) = PLOT_SIZE;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(title.to_string(), (20, 15), (FONT, 24).into_font()))?;
    let (left, top) = (180, 110);
    let cell = ((width as i32 - left - 40) / k).min((height as i32 - top - 30) / k).max(1);
    let font = (FONT, (cell / 3).clamp(10, 22)).into_font();
    for (j, label) in labels.iter().enumerate() {
        let x = left + j as i32 * cell + cell / 2 - 4 * label.len().min(12) as i32;
        root.draw(&Text::new(super::data::excerpt(label, 12), (x, top - 28), font.clone()))?;
    }
    for (i, row) in confusion.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f64;
        let y = top + i as i32 * cell;
        root.draw(&Text::new(super::data::excerpt(&labels[i], 16), (10, y + cell / 2 - 8), font.clone()))?;
        for (j, &count) in row.iter().enumerate() {
            let share = count as f64 / total;
            let x = left + j as i32 * cell;
            let fill = RGBColor((255.0 - 224.0 * share) as u8, (255.0 - 136.0 * share) as u8, (255.0 - 75.0 * share) as u8);
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], fill.filled()))?;
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], BLACK.mix(0.3)))?;
            let color = if share > 0.5 { WHITE } else { BLACK };
            let digits = count.to_string();
            let at = (x + cell / 2 - 5 * digits.len() as i32, y + cell / 2 - 8);
            root.draw(&Text::new(digits, at, font.clone().color(&color)))?;
        }
    }
    root.present()?;
    Ok(())
}

/// The name of the run directory, also for paths such as `.` or `runs/x/`.
fn run_name(run_dir: &Path) -> String {
    let absolute = run_dir.canonicalize().unwrap_or_else(|_| run_dir.to_path_buf());
    absolute.file_name().map_or_else(|| run_dir.display().to_string(), |name| name.to_string_lossy().into_owned())
}

/// Plotters draws text only with registered fonts (no system fonts: no fontconfig needed), so we
/// ship DejaVu Sans and register it once as the family every chart uses.
const FONT: &str = "sans-serif";

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf")).is_ok()
    });
    if !ok {
        bail!("the embedded font DejaVuSans.ttf is not a valid font");
    }
    Ok(())
}

/// (split, [(step, value)]) for the events where `value` is a finite number, train first, then
/// val, test and any other split by name; points sorted by step.
type Series = Vec<(String, Vec<(u64, f64)>)>;

fn series_by_split(events: &[MetricEvent], value: impl Fn(&MetricEvent) -> Option<f64>) -> Series {
    let mut by_split: BTreeMap<(usize, &str), Vec<(u64, f64)>> = BTreeMap::new();
    for event in events {
        if let Some(y) = value(event).filter(|y| y.is_finite()) {
            let order = ["train", "val", "test"].iter().position(|s| *s == event.split).unwrap_or(3);
            by_split.entry((order, &event.split)).or_default().push((event.step, y));
        }
    }
    by_split
        .into_iter()
        .map(|((_, split), mut points)| {
            points.sort_by_key(|&(step, _)| step); // stable: events of one step keep their order
            (split.to_string(), points)
        })
        .collect()
}

/// Renders the chart of one metric (`plots_dir/{metric}.png`).
fn write_plot(
    plots_dir: &Path,
    run_name: &str,
    metric: &str,
    legend: SeriesLabelPosition,
    series: &Series,
) -> Result<PathBuf> {
    let title = format!("{run_name}: {metric}");
    render(plots_dir, metric, |file| draw_chart(file, &title, metric, legend, series))
}

/// Draws `plots_dir/{name}.png` with `draw` into a temporary file in the same folder and renames
/// it into place.
fn render(plots_dir: &Path, name: &str, draw: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let path = plots_dir.join(format!("{name}.png"));
    // Ends in .png: plotters picks the image format from the extension.
    let temporary = plots_dir.join(format!(".{name}.{}.tmp.png", std::process::id()));
    let result = draw(&temporary).and_then(|()| {
        std::fs::rename(&temporary, &path).with_context(|| format!("cannot write {}", path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map(|()| path)
}

/// One colour per split in every plot: matplotlib's first colours, as in the book's plots.
fn split_color(split: &str) -> RGBColor {
    match split {
        "train" => RGBColor(31, 119, 180),
        "val" => RGBColor(255, 127, 14),
        "test" => RGBColor(44, 160, 44),
        _ => RGBColor(214, 39, 40),
    }
}

/// Draws the lines of `series` (value against step, one line per split) with a legend into `path`.
fn draw_chart(path: &Path, title: &str, y_label: &str, legend: SeriesLabelPosition, series: &Series) -> Result<()> {
    let points = || series.iter().flat_map(|(_, points)| points);
    let min_step = points().map(|&(step, _)| step).min().unwrap_or(0);
    let max_step = points().map(|&(step, _)| step).max().unwrap_or(0);
    let min_y = points().map(|&(_, y)| y).fold(f64::INFINITY, f64::min);
    let max_y = points().map(|&(_, y)| y).fold(f64::NEG_INFINITY, f64::max);
    // A little room above and below; a constant series still gets a visible range.
    let margin = if max_y > min_y { (max_y - min_y) * 0.05 } else { min_y.abs().max(1.0) * 0.1 };
    let steps = if max_step > min_step { min_step..max_step } else { min_step.saturating_sub(1)..max_step + 1 };

    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 28))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(steps, (min_y - margin)..(max_y + margin))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_label)
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 16))
        .light_line_style(TRANSPARENT) // the major grid lines are enough
        .draw()?;
    for (split, points) in series {
        let color = split_color(split);
        // Evaluation points are sparse: mark each one; train points are dense: a plain line.
        let point_size = if split == "train" && points.len() > 1 { 0 } else { 3 };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(point_size))?
            .label(split.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font((FONT, 18))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
