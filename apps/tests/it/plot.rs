//! `llmfs plot RUN_DIR`, the real binary.

use crate::common::{llmfs, run, stderr, stdout};

#[test]
fn plot_writes_the_pngs_and_prints_their_paths() {
    let hf_home = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let metrics: String = (1..=20)
        .flat_map(|step| {
            let loss = 3.0 / step as f64;
            [
                format!(r#"{{"time": 1.0, "step": {step}, "epoch": 1, "split": "train", "loss": {loss}, "accuracy": 0.5}}"#),
                format!(r#"{{"time": 1.0, "step": {step}, "epoch": 1, "split": "val", "loss": {}}}"#, loss + 0.1),
            ]
        })
        .map(|line| line + "\n")
        .collect();
    std::fs::write(run_dir.path().join("metrics.jsonl"), metrics).unwrap();

    let out = run(llmfs(hf_home.path()).arg("plot").arg(run_dir.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let plots = run_dir.path().join("plots");
    let expected = [plots.join("loss.png"), plots.join("accuracy.png")];
    assert_eq!(printed, expected.iter().map(|path| path.display().to_string()).collect::<Vec<_>>());
    for path in &expected {
        assert!(std::fs::read(path).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"), "{}", path.display());
    }
}

#[test]
fn plot_of_a_run_without_metrics_fails_clearly() {
    let hf_home = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    std::fs::write(run_dir.path().join("metrics.jsonl"), "").unwrap();
    let out = run(llmfs(hf_home.path()).arg("plot").arg(run_dir.path()));
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("no metrics yet in"), "{}", stderr(&out));
}
