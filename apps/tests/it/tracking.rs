//! `--track tensorboard` while a run trains and `llmfs track` after it: the event files hold every
//! metric of metrics.jsonl at its step (read back by our reader, and by TensorBoard's own
//! `EventAccumulator` when a Python with `tensorboard` is at hand), the config and the samples.

use std::path::{Path, PathBuf};
use std::process::Command;

use pipelines::runs::metrics::read_metrics;
use pipelines::track::{scalars, tensorboard};

use crate::common::*;

/// `(step, tag, value)` of every scalar in the event files of `dir`, in file order.
fn event_scalars(dir: &Path) -> Vec<(i64, String, f32)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 1, "{files:?}");
    let events = tensorboard::read_events(&files[0]).unwrap();
    events.iter().flat_map(|e| e.summary.iter().flat_map(move |s| s.value.iter().filter_map(move |v| Some((e.step, v.tag.clone(), v.simple_value?))))).collect()
}

fn texts(dir: &Path) -> Vec<String> {
    let file = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    let events = tensorboard::read_events(&file).unwrap();
    events.iter().flat_map(|e| e.summary.iter().flat_map(|s| s.value.iter().filter(|v| v.tensor.is_some()).map(|v| v.tag.clone()))).collect()
}

#[test]
fn a_run_is_mirrored_to_tensorboard_while_it_trains_and_after() {
    let home = tempfile::tempdir().unwrap();
    let run_dir = home.path().join("run");
    let out = run(&mut finetune_instruct(home.path(), &run_dir, false, &["--epochs", "1", "--batch-size", "8", "--eval-every", "2", "--track", "tensorboard"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("tracking:") && stderr(&out).contains("metric events written to"), "{}", stderr(&out));

    // Every number of metrics.jsonl, at its step, as f32.
    let expected: Vec<(i64, String, f32)> = read_metrics(&run_dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .flat_map(|event| scalars(event).into_iter().map(move |(tag, value)| (event.step as i64, tag, value as f32)))
        .collect();
    assert!(expected.iter().any(|(_, tag, _)| tag == "train/loss") && expected.iter().any(|(_, tag, _)| tag == "val/loss"), "{expected:?}");
    let live = run_dir.join("tensorboard");
    assert_eq!(event_scalars(&live), expected);
    let tags = texts(&live);
    assert!(tags.contains(&"config".to_string()) && tags.contains(&"samples".to_string()), "{tags:?}");

    // After the fact, from the files: the same scalars.
    let later = home.path().join("tb-later");
    let out = run(llmfs(home.path()).arg("track").arg(&run_dir).arg("--to").arg(format!("tensorboard={}", later.display())));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(event_scalars(&later), expected);
    let out = run(llmfs(home.path()).arg("track").arg(&run_dir).args(["--to", "mlflow"]));
    assert!(!out.status.success() && stderr(&out).contains("expected tensorboard"), "{}", stderr(&out));

    let Some(python) = python_with("tensorboard") else {
        eprintln!("skipped the TensorBoard check: no Python with tensorboard (set LLMFS_PYTHON)");
        return;
    };
    let script = "import sys, json\nfrom tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
        acc = EventAccumulator(sys.argv[1]); acc.Reload()\n\
        print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()['scalars']}))";
    let check = Command::new(python).args(["-c", script]).arg(&live).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let read: serde_json::Value = serde_json::from_slice(check.stdout.trim_ascii()).unwrap();
    for (step, tag, value) in &expected {
        let points = read[tag].as_array().unwrap_or_else(|| panic!("TensorBoard has no {tag}: {read}"));
        assert!(points.iter().any(|p| p[0] == *step && (p[1].as_f64().unwrap() - *value as f64).abs() <= 1e-6 * value.abs().max(1.0) as f64), "{tag} at {step}: {points:?}");
    }
}
