//! Crash safety: a training run killed with SIGKILL at random moments (during a step, while a
//! checkpoint or metrics.jsonl is being written, before the first checkpoint) 20 times and resumed
//! each time with `--resume` ends with exactly the weights, loss curve and samples of a run that
//! was never interrupted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const KILLS: usize = 20;

fn finetune(home: &Path, run_dir: &Path, resume: bool) -> Command {
    let flags = ["--epochs", "4", "--batch-size", "4", "--checkpoint-every", "1", "--eval-every", "4", "--eval-batches", "1"];
    finetune_instruct(home, run_dir, resume, &[&flags[..], &["--sample-tokens", "4"]].concat())
}

/// (step, split, loss) of every event, and the sample texts: what must not change.
fn curve(run_dir: &Path) -> (Vec<(u64, String, Option<f64>)>, Vec<String>) {
    let events = pipelines::runs::read_metrics(&run_dir.join("metrics.jsonl")).unwrap();
    let samples = std::fs::read_to_string(run_dir.join("samples.jsonl")).unwrap();
    (
        events.into_iter().map(|e| (e.step, e.split, e.loss)).collect(),
        samples.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].to_string()).collect(),
    )
}

#[test]
fn twenty_sigkills_and_resumes_give_the_uninterrupted_run() {
    let home = tempfile::tempdir().unwrap();
    let whole = home.path().join("whole");
    let started = Instant::now();
    let out = finetune(home.path(), &whole, false).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let duration = started.elapsed();

    // Kill times from a fixed LCG: 0.15 s (mostly start-up) to 0.15 s + 1/15 of the whole run.
    let crashed = home.path().join("crashed");
    let mut state: u64 = 0x5eed;
    let (mut kills, mut started_runs) = (0, 0);
    let mut finished = false;
    while kills < KILLS {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let fraction = (state >> 11) as f64 / (1u64 << 53) as f64;
        let delay = Duration::from_secs_f64(0.15 + fraction * duration.as_secs_f64() / 15.0);
        let resume = crashed.join("run.json").exists();
        let mut child = finetune(home.path(), &crashed, resume).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        started_runs += 1;
        std::thread::sleep(delay);
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "attempt {started_runs} failed on its own");
            finished = true;
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    if !finished {
        let out = finetune(home.path(), &crashed, true).output().unwrap();
        assert!(out.status.success(), "the final resume failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("{kills} SIGKILLs over {started_runs} attempts (uninterrupted run: {:.1} s)", duration.as_secs_f64());
    assert!(kills >= 10, "only {kills} kills landed before the run finished: the kill times are too long");

    assert_eq!(
        std::fs::read(crashed.join("model/model.safetensors")).unwrap(),
        std::fs::read(whole.join("model/model.safetensors")).unwrap(),
        "the weights differ from the uninterrupted run's"
    );
    assert_eq!(curve(&crashed), curve(&whole), "the loss curve or the samples differ");
}
