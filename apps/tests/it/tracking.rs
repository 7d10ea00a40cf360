//! `--track tensorboard` while a run trains and `llmfs track` after it: the event files hold every
//! metric of metrics.jsonl at its step (read back by our reader, and by TensorBoard's own
//! `EventAccumulator` when a Python with `tensorboard` is at hand), the config and the samples.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let out = run(llmfs(home.path()).arg("track").arg(&run_dir).args(["--to", "wandb"]));
    assert!(!out.status.success() && stderr(&out).contains("expected tensorboard[=DIR] or mlflow[=URI]"), "{}", stderr(&out));

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

/// A Python with MLflow: $LLMFS_MLFLOW_PYTHON (scripts/test.sh sets up a venv), else the venv
/// that script makes.
fn mlflow_python() -> Option<PathBuf> {
    let venv = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/llmfs/mlflow-venv/bin/python"));
    let candidates = std::env::var_os("LLMFS_MLFLOW_PYTHON").map(PathBuf::from).into_iter().chain(venv);
    candidates.into_iter().find(|python| Command::new(python).args(["-c", "import mlflow.server"]).output().is_ok_and(|o| o.status.success()))
}

/// A real `mlflow server` on a free loopback port (SQLite store, artifacts served by it).
struct MlflowServer {
    url: String,
    child: Child,
}

impl MlflowServer {
    fn start(python: &Path, dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(python)
            .args(["-m", "mlflow", "server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while ureq::get(&format!("{url}/health")).call().is_err() {
            assert!(started.elapsed() < Duration::from_secs(120), "mlflow server did not start on {url}");
            std::thread::sleep(Duration::from_millis(300));
        }
        Self { url, child }
    }

    fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let mut request = ureq::get(&format!("{}/api/2.0/mlflow/{endpoint}", self.url));
        for (key, value) in query {
            request = request.query(key, value);
        }
        serde_json::from_str(&request.call().unwrap().into_string().unwrap()).unwrap()
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A run tracked in a real MLflow server: stopped after 3 steps (KILLED) and resumed into the same
/// MLflow run (FINISHED) with every metric's history equal to metrics.jsonl, no step twice; the
/// params and artifacts there. A server that is down loses nothing: the run trains, says what is
/// unsent, and `llmfs track` sends it later.
#[test]
fn a_run_is_tracked_in_a_real_mlflow_server() {
    let Some(python) = mlflow_python() else {
        eprintln!("skipped the MLflow check: no Python with mlflow (scripts/test.sh installs one when it can; or set LLMFS_MLFLOW_PYTHON)");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let server = MlflowServer::start(&python, home.path());
    let track = format!("mlflow={}", server.url);
    let run_dir = home.path().join("run");
    let flags = ["--epochs", "1", "--batch-size", "8", "--eval-every", "2", "--checkpoint-every", "3", "--track", &track, "--experiment", "llmfs-test"];
    let out = run(&mut finetune_instruct(home.path(), &run_dir, false, &[&flags[..], &["--max-steps", "3"]].concat()));
    assert!(!out.status.success() && stderr(&out).contains("interrupted at step 3"), "{}", stderr(&out));
    let tracking: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("tracking.json")).unwrap()).unwrap();
    let run_id = tracking["mlflow"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(server.get("runs/get", &[("run_id", &run_id)])["run"]["info"]["status"], "KILLED");

    let out = run(&mut finetune_instruct(home.path(), &run_dir, true, &flags));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("MLflow run {run_id}")), "the same MLflow run: {}", stderr(&out));
    let mlflow_run = &server.get("runs/get", &[("run_id", &run_id)])["run"];
    assert_eq!(mlflow_run["info"]["status"], "FINISHED");
    let params = mlflow_run["data"]["params"].as_array().unwrap();
    assert!(params.iter().any(|p| p["key"] == "task" && p["value"] == "instruction"), "{params:?}");
    assert!(params.iter().any(|p| p["key"] == "train.batch_size" && p["value"] == "8"), "{params:?}");
    let tags = mlflow_run["data"]["tags"].as_array().unwrap();
    assert!(tags.iter().any(|t| t["key"] == "mlflow.runName" && t["value"] == "run"), "{tags:?}");

    // Every metric's history is metrics.jsonl's, step for step, once.
    let history = |server: &MlflowServer, run_id: &str, key: &str| -> Vec<(i64, f64)> {
        let reply = server.get("metrics/get-history", &[("run_id", run_id), ("metric_key", key)]);
        let mut points: Vec<(i64, f64)> = reply["metrics"].as_array().map_or(Vec::new(), |m| m.iter().map(|m| (m["step"].as_i64().unwrap(), m["value"].as_f64().unwrap())).collect());
        points.sort_by(|a, b| a.partial_cmp(b).unwrap());
        points
    };
    let expected = |key: &str| -> Vec<(i64, f64)> {
        let mut points: Vec<(i64, f64)> = read_metrics(&run_dir.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .flat_map(|e| scalars(e).into_iter().filter(|(k, _)| k == key).map(move |(_, v)| (e.step as i64, v)))
            .collect();
        points.sort_by(|a, b| a.partial_cmp(b).unwrap());
        points
    };
    for key in ["train/loss", "train/lr", "val/loss", "val/perplexity"] {
        let want = expected(key);
        assert!(!want.is_empty(), "{key}");
        assert_eq!(history(&server, &run_id, key), want, "{key}");
    }
    let artifacts = server.get("artifacts/list", &[("run_id", &run_id)]);
    let names: Vec<&str> = artifacts["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    for name in ["run.json", "samples.jsonl", "metrics.jsonl", "plots", "eval"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }

    // A server that is down: training is unaffected and says what it could not send ...
    let offline_run = home.path().join("offline");
    let dead = format!("mlflow=http://127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let out = run(&mut finetune_instruct(home.path(), &offline_run, false, &["--epochs", "1", "--batch-size", "8", "--track", &dead]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach the MLflow server") && stderr(&out).contains("metric values are not sent"), "{}", stderr(&out));
    // ... and `llmfs track` sends it all later.
    let out = run(llmfs(home.path()).arg("track").arg(&offline_run).arg("--to").arg(&track).args(["--experiment", "llmfs-test"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let tracking: serde_json::Value = serde_json::from_slice(&std::fs::read(offline_run.join("tracking.json")).unwrap()).unwrap();
    let offline_id = tracking["mlflow"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(server.get("runs/get", &[("run_id", &offline_id)])["run"]["info"]["status"], "FINISHED");
    let losses = read_metrics(&offline_run.join("metrics.jsonl")).unwrap();
    let want: Vec<(i64, f64)> = {
        let mut p: Vec<(i64, f64)> = losses.iter().filter(|e| e.split == "train").filter_map(|e| Some((e.step as i64, e.loss?))).collect();
        p.sort_by(|a, b| a.partial_cmp(b).unwrap());
        p
    };
    assert_eq!(history(&server, &offline_id, "train/loss"), want);
}
