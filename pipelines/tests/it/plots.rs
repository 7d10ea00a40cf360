//! `pipelines::plots`: reading metrics.jsonl and drawing a run's PNGs.

use std::path::{Path, PathBuf};

use pipelines::plots::{PLOT_SIZE, plot_run};
use pipelines::runs::read_metrics;

/// A run directory with this metrics.jsonl.
fn run_dir_with(metrics: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("run-").tempdir().unwrap();
    std::fs::write(dir.path().join("metrics.jsonl"), metrics).unwrap();
    dir
}

/// A classifier-like run: train every step, val every 5 steps, both with accuracy; test at the end.
fn classifier_metrics(steps: u64) -> String {
    let mut lines = String::new();
    for step in 1..=steps {
        let loss = 2.0 / (1.0 + step as f64 * 0.1) + 0.05 * (step as f64).sin();
        let accuracy = 1.0 - loss / 2.5;
        let time = 1_764_152_000.0 + step as f64;
        let seen = step * 8;
        lines += &format!(
            r#"{{"time": {time}, "step": {step}, "epoch": {}, "split": "train", "loss": {loss}, "accuracy": {accuracy}, "lr": 5e-05, "examples_seen": {seen}}}"#,
            1 + step / 20
        );
        lines.push('\n');
        if step % 5 == 0 {
            let val = loss * 1.1 + 0.05;
            lines += &format!(
                r#"{{"time": {time}, "step": {step}, "epoch": 1, "split": "val", "loss": {val}, "accuracy": {}, "perplexity": {}}}"#,
                1.0 - val / 2.5,
                val.exp()
            );
            lines.push('\n');
        }
    }
    lines += &format!(r#"{{"time": 1764153000.0, "step": {steps}, "epoch": 3, "split": "test", "loss": 0.5, "accuracy": 0.9}}"#);
    lines + "\n"
}

/// Width and height from a PNG's header, after checking its signature and that IHDR comes first.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 33, "{} is too short for a PNG", path.display());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_classifier_run_gets_loss_and_accuracy_plots() {
    let run = run_dir_with(&classifier_metrics(60));
    let written = plot_run(run.path()).unwrap();
    let plots = run.path().join("plots");
    assert_eq!(written, vec![plots.join("loss.png"), plots.join("accuracy.png")]);
    for path in &written {
        assert_eq!(png_size(path), PLOT_SIZE);
        // A drawn chart, not a blank page: PNG compresses a white image to almost nothing.
        assert!(std::fs::metadata(path).unwrap().len() > 10_000, "{} looks empty", path.display());
    }
    // Renamed into place: no temporary files left behind.
    assert_eq!(files_in(&plots), ["accuracy.png", "loss.png"]);

    // Plotting again (the run went on) replaces the files.
    std::fs::write(run.path().join("metrics.jsonl"), classifier_metrics(80)).unwrap();
    assert_eq!(plot_run(run.path()).unwrap(), written);
    assert_eq!(files_in(&plots), ["accuracy.png", "loss.png"]);
}

#[test]
fn a_run_without_accuracy_gets_only_the_loss_plot() {
    let metrics = (1..=30)
        .map(|step| format!(r#"{{"time": 1.0, "step": {step}, "epoch": 1, "split": "train", "loss": {}}}"#, 10.0 / step as f64))
        .collect::<Vec<_>>()
        .join("\n");
    let run = run_dir_with(&metrics); // no newline after the last line: still a complete event
    let written = plot_run(run.path()).unwrap();
    assert_eq!(written, vec![run.path().join("plots/loss.png")]);
    assert_eq!(png_size(&written[0]), PLOT_SIZE);
    assert_eq!(files_in(&run.path().join("plots")), ["loss.png"]);
}

#[test]
fn a_run_with_a_single_event_is_plotted() {
    let run = run_dir_with(r#"{"time": 1.0, "step": 0, "epoch": 1, "split": "val", "loss": 3.5, "accuracy": 0.5}"#);
    let written = plot_run(run.path()).unwrap();
    assert_eq!(written.len(), 2);
}

#[test]
fn the_reader_keeps_every_field_and_unknown_keys() {
    let run = run_dir_with(concat!(
        r#"{"time": 1764152000.5, "step": 120, "epoch": 2, "split": "train", "loss": 0.41, "accuracy": 0.93, "lr": 5e-05, "perplexity": 1.5, "tokens_per_s": 800.0, "examples_seen": 960, "grad_norm": 1.25}"#,
        "\n\n",
        r#"{"time": 1764152001.0, "step": 120, "epoch": 2, "split": "val", "loss": 0.5}"#,
        "\n",
    ));
    let events = read_metrics(&run.path().join("metrics.jsonl")).unwrap();
    assert_eq!(events.len(), 2);
    let train = &events[0];
    assert_eq!((train.step, train.epoch, train.split.as_str(), train.loss), (120, 2, "train", Some(0.41)));
    assert_eq!((train.accuracy, train.lr, train.perplexity), (Some(0.93), Some(5e-5), Some(1.5)));
    assert_eq!((train.tokens_per_s, train.examples_seen), (Some(800.0), Some(960)));
    assert_eq!(train.extra.get("grad_norm"), Some(&serde_json::json!(1.25)));
    assert!(!train.extra.contains_key("loss"));
    let val = &events[1];
    assert_eq!((val.split.as_str(), val.accuracy, val.lr), ("val", None, None));
    assert!(val.extra.is_empty());
}

#[test]
fn a_half_written_last_line_is_ignored() {
    let complete = classifier_metrics(10);
    let count = complete.lines().count();
    let run = run_dir_with(&(complete + r#"{"time": 1764153001.0, "step": 11, "epoch": 1, "split": "tr"#));
    let events = read_metrics(&run.path().join("metrics.jsonl")).unwrap();
    assert_eq!(events.len(), count);
    assert_eq!(plot_run(run.path()).unwrap().len(), 2);
}

#[test]
fn a_bad_line_in_the_middle_is_an_error_naming_the_file_and_line() {
    let good = r#"{"time": 1.0, "step": 1, "epoch": 1, "split": "train", "loss": 2.0}"#;
    // Half a line, and a line without a split (an event without a loss is fine: it measures something else).
    for bad in [r#"{"time": 1.0, "step": 2, "epo"#, r#"{"time": 1.0, "step": 2, "epoch": 1, "loss": 2.0}"#] {
        let run = run_dir_with(&format!("{good}\n{good}\n{bad}\n{good}\n"));
        let error = format!("{:#}", read_metrics(&run.path().join("metrics.jsonl")).unwrap_err());
        assert!(error.contains("metrics.jsonl, line 3"), "{error}");
        let error = format!("{:#}", plot_run(run.path()).unwrap_err());
        assert!(error.contains("line 3"), "{error}");
        assert!(!run.path().join("plots/loss.png").exists());
    }
}

#[test]
fn non_finite_numbers_are_skipped() {
    let run = run_dir_with(concat!(
        // serde_json writes NaN as null; Python's json writes NaN and Infinity.
        r#"{"time": 1.0, "step": 1, "epoch": 1, "split": "train", "loss": 2.0, "accuracy": null, "lr": NaN}"#,
        "\n",
        r#"{"time": 2.0, "step": 2, "epoch": 1, "split": "train", "loss": NaN}"#,
        "\n",
        r#"{"time": 3.0, "step": 3, "epoch": 1, "split": "train", "loss": null}"#,
        "\n",
        r#"{"time": 4.0, "step": 4, "epoch": 1, "split": "train", "loss": 1.0, "perplexity": Infinity, "tokens_per_s": -Infinity, "note": "NaN, Infinity and \"-Infinity\" in a string"}"#,
        "\n",
    ));
    let events = read_metrics(&run.path().join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = events.iter().map(|event| event.step).collect();
    assert_eq!(steps, [1, 4]);
    assert_eq!((events[0].accuracy, events[0].lr), (None, None));
    assert_eq!((events[1].perplexity, events[1].tokens_per_s), (None, None));
    assert_eq!(events[1].extra["note"], r#"NaN, Infinity and "-Infinity" in a string"#);
    // Only a null accuracy: no accuracy plot.
    assert_eq!(plot_run(run.path()).unwrap(), vec![run.path().join("plots/loss.png")]);
}

#[test]
fn a_run_without_metrics_is_a_clear_error() {
    for contents in ["", "\n\n", r#"{"time": 1.0, "st"#] {
        let run = run_dir_with(contents);
        let error = format!("{:#}", plot_run(run.path()).unwrap_err());
        assert!(error.contains("no metrics yet in"), "{error}");
    }
    let empty = tempfile::tempdir().unwrap();
    let error = format!("{:#}", plot_run(empty.path()).unwrap_err());
    assert!(error.contains("no metrics yet in"), "{error}");
    let missing = PathBuf::from(empty.path()).join("no-such-run");
    let error = format!("{:#}", plot_run(&missing).unwrap_err());
    assert!(error.contains("not a run directory"), "{error}");
}
