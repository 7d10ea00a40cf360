//! A full disk and a read-only run directory, on real (small) tmpfs mounts: a clear error before
//! training where the problem can be seen in advance; a run that fills the disk stops with an
//! error, keeps only complete checkpoints and leaves no model or shard looking complete; and
//! `--resume` finishes it, with the weights of an uninterrupted run, once there is room.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); elsewhere these tests say so and pass without checking.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A tmpfs of `size` (mount's syntax: `8m`, `160k`) at a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the disk-full checks did not run");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,{options}")]).arg(self.path()).status().unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn finetune(home: &Path, run_dir: &Path, resume: bool) -> Command {
    let flags = ["--epochs", "2", "--batch-size", "4", "--eval-every", "100", "--eval-batches", "1", "--sample-tokens", "2"];
    finetune_instruct(home, run_dir, resume, &flags)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_disk_too_small_for_one_checkpoint_is_refused_before_training() {
    let Some(disk) = Tmpfs::mount("8m") else { return };
    let home = tempfile::tempdir().unwrap();
    let run_dir = disk.path().join("run");
    let out = run(&mut finetune(home.path(), &run_dir, false));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("free on this disk") && err.contains("needs at least") && err.contains("run"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Nothing was trained: no checkpoint, no model, no metrics.
    assert!(!run_dir.join("checkpoints").exists() && !run_dir.join("model").exists(), "{:?}", files_under(&run_dir));
    assert!(std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default().is_empty());
}

#[test]
fn a_read_only_run_directory_is_refused_before_training() {
    let Some(disk) = Tmpfs::mount("4m") else { return };
    disk.remount("ro");
    let home = tempfile::tempdir().unwrap();
    let out = run(&mut finetune(home.path(), &disk.path().join("run"), false));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&disk.path().join("run").display().to_string()) && err.contains("Read-only file system"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_run_that_fills_the_disk_stops_cleanly_and_resumes_once_there_is_room() {
    let home = tempfile::tempdir().unwrap();
    let whole = home.path().join("whole");
    let out = run(&mut finetune(home.path(), &whole, false));
    assert!(out.status.success(), "{}", stderr(&out));

    // Room for the first checkpoint (~40 MB for the 3.3 M-parameter fixture) and more, not for
    // a second one next to it: the run passes the check (with a warning) and fills the disk later.
    let Some(disk) = Tmpfs::mount("64m") else { return };
    let run_dir = disk.path().join("run");
    let out = run(&mut finetune(home.path(), &run_dir, false));
    let err = stderr(&out);
    assert!(!out.status.success(), "the run should not fit: {err}");
    assert!(err.contains("warning:") && err.contains("may use up to"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let files = files_under(&run_dir);
    assert!(!files.iter().any(|f| f.file_name().unwrap().to_string_lossy().contains(".tmp.")), "temporary files left: {files:?}");
    // No final model that looks complete: config.json is written last, after the weights.
    assert!(!run_dir.join("model/config.json").exists(), "{files:?}");

    // Room again: --resume finishes the run with the uninterrupted run's weights.
    disk.remount("size=512m");
    let out = run(&mut finetune(home.path(), &run_dir, true));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read(run_dir.join("model/model.safetensors")).unwrap() == std::fs::read(whole.join("model/model.safetensors")).unwrap(),
        "the resumed run's weights differ from the uninterrupted run's"
    );
}

#[test]
fn shard_preparation_that_fills_the_disk_leaves_only_complete_shards() {
    // The sample's 119,014 tokens make six shards of 20,000 (40 kB each): 160 kB holds about four.
    let Some(disk) = Tmpfs::mount("160k") else { return };
    let home = tempfile::tempdir().unwrap();
    let out_dir = disk.path().join("shards");
    let prepare = |home: &Path| {
        let mut cmd = llmfs(home);
        cmd.args(["prepare", "fineweb", "--input"])
            .arg(fixtures().join("data/fineweb_edu_sample.parquet"))
            .args(["--shard-size", "20000", "--workers", "1", "--out"])
            .arg(&out_dir);
        run(&mut cmd)
    };
    let out = prepare(home.path());
    let err = stderr(&out);
    assert!(!out.status.success(), "160 kB should not hold the shards: {err}");
    assert!(err.contains("No space left on device") && !err.contains("panicked"), "{err}");
    let files = files_under(&out_dir);
    assert!(!files.iter().any(|f| f.file_name().unwrap().to_string_lossy().contains(".tmp.")), "temporary files left: {files:?}");
    // Every shard there opens whole.
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "npy")) {
        pipelines::data::shards::TokenFile::open(file).unwrap();
    }
    // With room, a rerun completes (keeping what was finished).
    disk.remount("size=64m");
    let out = prepare(home.path());
    assert!(out.status.success(), "{}", stderr(&out));
}
