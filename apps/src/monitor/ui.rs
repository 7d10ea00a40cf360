//! Drawing the monitor: a chart of the chosen metric with every run overlaid, the chosen run's
//! progress, configuration and latest sample, and a key line.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, Gauge, GraphType, Paragraph, Wrap};

use super::runs::RunView;
use pipelines::runs::MetricEvent;

/// The metrics the chart can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Loss,
    Accuracy,
    Perplexity,
    LearningRate,
    TokensPerSecond,
    Hellaswag,
}

impl Panel {
    pub const ALL: [Panel; 6] =
        [Panel::Loss, Panel::Accuracy, Panel::Perplexity, Panel::LearningRate, Panel::TokensPerSecond, Panel::Hellaswag];

    pub fn title(self) -> &'static str {
        match self {
            Panel::Loss => "Loss",
            Panel::Accuracy => "Accuracy",
            Panel::Perplexity => "Perplexity",
            Panel::LearningRate => "Learning rate",
            Panel::TokensPerSecond => "Tokens/s",
            Panel::Hellaswag => "HellaSwag acc_norm",
        }
    }

    /// The (split, value) series this panel draws.
    fn series(self) -> (&'static [&'static str], fn(&MetricEvent) -> Option<f64>) {
        match self {
            Panel::Loss => (&["train", "train_eval", "val"], |e| e.loss),
            Panel::Accuracy => (&["train_eval", "val"], |e| e.accuracy),
            Panel::Perplexity => (&["train_eval", "val"], |e| e.perplexity),
            Panel::LearningRate => (&["train"], |e| e.lr),
            Panel::TokensPerSecond => (&["train"], |e| e.tokens_per_s),
            Panel::Hellaswag => (&["hellaswag"], |e| e.extra.get("acc_norm").and_then(serde_json::Value::as_f64)),
        }
    }
}

/// What the monitor shows: the runs, the chosen panel and the chosen run.
pub struct MonitorState {
    pub runs: Vec<RunView>,
    pub panel: usize,
    pub selected: usize,
}

const RUN_COLORS: [Color; 6] = [Color::Cyan, Color::Yellow, Color::Magenta, Color::Green, Color::Red, Color::Blue];

fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The one-line status of a run: state, step/total, epoch, ETA.
pub fn status_line(run: &RunView) -> String {
    let Some(last) = run.last_train() else {
        return if run.config.is_some() { "started, no step yet".into() } else { "no run yet (no run.json)".into() };
    };
    let total = run.total_steps();
    let mut line = match total {
        Some(total) => format!("step {}/{total}", last.step),
        None => format!("step {}", last.step),
    };
    line.push_str(&format!(", epoch {}", last.epoch));
    if let Some(epochs) = run.config.as_ref().and_then(|c| c.pointer("/train/epochs")).and_then(serde_json::Value::as_u64) {
        line.push_str(&format!("/{epochs}"));
    }
    if run.finished() {
        line.push_str(", finished");
    } else if let (Some(total), Some(pace)) = (total, run.seconds_per_step()) {
        line.push_str(&format!(", ETA {}", format_duration(pace * total.saturating_sub(last.step) as f64)));
    }
    line
}

pub fn draw(frame: &mut Frame, state: &MonitorState) {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(3), Constraint::Min(8), Constraint::Length(1)])
        .split(frame.area());
    draw_header(frame, rows[0], state);
    let columns = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(68), Constraint::Percentage(32)])
        .split(rows[1]);
    draw_chart(frame, columns[0], state);
    draw_details(frame, columns[1], state);
    let keys = "←/→ tab: metric   ↑/↓: run   q: quit";
    frame.render_widget(Paragraph::new(keys).style(Style::default().fg(Color::DarkGray)), rows[2]);
}

fn draw_header(frame: &mut Frame, area: Rect, state: &MonitorState) {
    let mut spans = Vec::new();
    for (i, run) in state.runs.iter().enumerate() {
        let mut style = Style::default().fg(RUN_COLORS[i % RUN_COLORS.len()]);
        if i == state.selected {
            style = style.add_modifier(Modifier::BOLD | Modifier::REVERSED);
        }
        spans.push(Span::styled(format!(" {} ", run.name), style));
        spans.push(Span::raw(" "));
    }
    let status = state.runs.get(state.selected).map(status_line).unwrap_or_default();
    let text = vec![Line::from(spans), Line::from(status)];
    frame.render_widget(Paragraph::new(text).block(Block::default().borders(Borders::TOP).title(" llmfs monitor ")), area);
}

fn draw_chart(frame: &mut Frame, area: Rect, state: &MonitorState) {
    let panel = Panel::ALL[state.panel % Panel::ALL.len()];
    let (splits, field) = panel.series();
    let mut series: Vec<(String, Color, Vec<(f64, f64)>)> = Vec::new();
    for (i, run) in state.runs.iter().enumerate() {
        for split in splits {
            let points = run.series(split, field);
            if !points.is_empty() {
                let label = if state.runs.len() > 1 { format!("{} {split}", run.name) } else { split.to_string() };
                let color = if state.runs.len() > 1 { RUN_COLORS[i % RUN_COLORS.len()] } else { split_color(split) };
                series.push((label, color, points));
            }
        }
    }
    let titles: Vec<&str> = Panel::ALL.iter().map(|p| p.title()).collect();
    let title = titles
        .iter()
        .map(|t| if *t == panel.title() { format!("[{t}]") } else { t.to_string() })
        .collect::<Vec<_>>()
        .join(" ");
    let block = Block::default().borders(Borders::ALL).title(format!(" {title} "));
    if series.is_empty() {
        frame.render_widget(Paragraph::new(format!("no {} in these runs yet", panel.title().to_lowercase())).block(block), area);
        return;
    }
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for (_, _, points) in &series {
        for &(x, y) in points {
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
    }
    if y_max - y_min < 1e-12 {
        (y_min, y_max) = (y_min - 0.5 * y_min.abs().max(1e-6), y_max + 0.5 * y_max.abs().max(1e-6));
    }
    let datasets: Vec<Dataset> = series
        .iter()
        .map(|(label, color, points)| {
            Dataset::default()
                .name(label.clone())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(*color))
                .data(points)
        })
        .collect();
    let number = |v: f64| if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) { format!("{v:.2e}") } else { format!("{v:.3}") };
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(Axis::default().title("step").bounds([0.0, x_max]).labels(vec![Span::raw("0"), Span::raw(format!("{x_max:.0}"))]))
        .y_axis(Axis::default().bounds([y_min, y_max]).labels(vec![Span::raw(number(y_min)), Span::raw(number(y_max))]));
    frame.render_widget(chart, area);
}

fn split_color(split: &str) -> Color {
    match split {
        "train" => Color::Cyan,
        "train_eval" => Color::Green,
        "val" => Color::Yellow,
        _ => Color::Magenta,
    }
}

fn draw_details(frame: &mut Frame, area: Rect, state: &MonitorState) {
    let Some(run) = state.runs.get(state.selected) else {
        return;
    };
    let parts = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(3), Constraint::Min(6), Constraint::Percentage(40)])
        .split(area);

    let step = run.last_train().map_or(0, |e| e.step);
    let ratio = run.total_steps().filter(|&t| t > 0).map_or(0.0, |t| (step as f64 / t as f64).min(1.0));
    let gauge = Gauge::default()
        .block(Block::default().borders(Borders::ALL).title(" Progress "))
        .gauge_style(Style::default().fg(Color::Green))
        .ratio(if run.finished() { 1.0 } else { ratio })
        .label(status_line(run));
    frame.render_widget(gauge, parts[0]);

    let mut lines: Vec<Line> = vec![Line::from(format!("dir: {}", run.dir.display()))];
    if let Some(config) = &run.config {
        for (label, pointer) in [
            ("task", "/task"),
            ("model", "/model"),
            ("device", "/device"),
            ("epochs", "/train/epochs"),
            ("batch", "/train/batch_size"),
            ("lr", "/train/optim/lr"),
            ("weight decay", "/train/optim/weight_decay"),
            ("trainable", "/trainable"),
            ("parameters", "/parameters"),
        ] {
            if let Some(value) = config.pointer(pointer) {
                let text = value.as_str().map_or_else(|| value.to_string(), str::to_string);
                lines.push(Line::from(format!("{label}: {text}")));
            }
        }
    }
    if let Some(last) = run.events.iter().rev().find(|e| e.split == "val") {
        let mut text = format!("last val (step {}): loss {:.4}", last.step, last.loss.unwrap_or(f64::NAN));
        if let Some(accuracy) = last.accuracy {
            text.push_str(&format!(", accuracy {:.1}%", 100.0 * accuracy));
        }
        lines.push(Line::from(text));
    }
    if run.bad_lines() > 0 {
        lines.push(Line::styled(format!("{} unreadable lines skipped", run.bad_lines()), Style::default().fg(Color::Red)));
    }
    let config = Paragraph::new(lines).wrap(Wrap { trim: true }).block(Block::default().borders(Borders::ALL).title(" Run "));
    frame.render_widget(config, parts[1]);

    let sample = match run.samples.last() {
        Some(sample) => {
            let step = sample.get("step").and_then(serde_json::Value::as_u64).unwrap_or(0);
            let text = sample.get("text").and_then(serde_json::Value::as_str).unwrap_or("");
            format!("step {step}: {text}")
        }
        None => "no samples (samples.jsonl)".to_string(),
    };
    let sample = Paragraph::new(sample).wrap(Wrap { trim: false }).block(Block::default().borders(Borders::ALL).title(" Latest sample "));
    frame.render_widget(sample, parts[2]);
}
