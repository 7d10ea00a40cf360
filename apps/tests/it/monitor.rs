//! `llmfs monitor` driven in a real pseudo-terminal (tmux): it draws, follows a growing
//! metrics.jsonl, switches panels on keys and quits on `q`. Skipped, with a message, where tmux
//! is not installed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(socket: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux").arg("-L").arg(socket).args(args).output().expect("running tmux")
}

fn screen(socket: &str) -> String {
    String::from_utf8_lossy(&tmux(socket, &["capture-pane", "-p", "-t", "monitor"]).stdout).into_owned()
}

/// Polls the screen until it contains `text` (10 s at most).
fn wait_for(socket: &str, text: &str) -> String {
    let start = Instant::now();
    loop {
        let screen = screen(socket);
        if screen.contains(text) || start.elapsed() > Duration::from_secs(10) {
            return screen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn event(step: u64) -> String {
    format!("{{\"time\":{step},\"step\":{step},\"epoch\":1,\"split\":\"train\",\"loss\":{},\"lr\":5e-5,\"accuracy\":0.5}}\n", 2.0 / step as f64)
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[test]
fn the_monitor_follows_a_live_run_in_a_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let run = tempfile::tempdir().unwrap();
    std::fs::write(
        run.path().join("run.json"),
        r#"{"task":"classification","model":"gpt2","train":{"epochs":1,"batch_size":8,"grad_accumulation":1,"drop_last":true},"examples":{"train":80}}"#,
    )
    .unwrap();
    let metrics = run.path().join("metrics.jsonl");
    append(&metrics, &(1..=3).map(event).collect::<String>());

    let socket = format!("llmfs-test-{}", std::process::id());
    // The tmux server goes away with the test, passed or failed.
    struct KillServer(String);
    impl Drop for KillServer {
        fn drop(&mut self) {
            tmux(&self.0, &["kill-server"]);
        }
    }
    let _server = KillServer(socket.clone());
    let command = format!("{} monitor --refresh-ms 100 {}", env!("CARGO_BIN_EXE_llmfs"), run.path().display());
    let started = tmux(&socket, &["new-session", "-d", "-s", "monitor", "-x", "120", "-y", "32", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));

    let shown = wait_for(&socket, "step 3/10");
    assert!(shown.contains("llmfs monitor") && shown.contains("[Loss]"), "{shown}");
    // A half-written line is not shown until it is complete.
    append(&metrics, &event(4)[..20]);
    std::thread::sleep(Duration::from_millis(400));
    assert!(screen(&socket).contains("step 3/10"));
    append(&metrics, &event(4)[20..]);
    let shown = wait_for(&socket, "step 4/10");
    assert!(shown.contains("step 4/10"), "{shown}");

    tmux(&socket, &["send-keys", "-t", "monitor", "Right"]);
    let shown = wait_for(&socket, "[Accuracy]");
    assert!(shown.contains("[Accuracy]"), "{shown}");

    tmux(&socket, &["send-keys", "-t", "monitor", "q"]);
    let start = Instant::now();
    while tmux(&socket, &["has-session", "-t", "monitor"]).status.success() {
        assert!(start.elapsed() < Duration::from_secs(10), "q did not quit the monitor");
        std::thread::sleep(Duration::from_millis(100));
    }
}
