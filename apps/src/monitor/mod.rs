//! `llmfs monitor RUN_DIR [RUN_DIR…]`: a terminal dashboard over run directories, live (it
//! re-reads `metrics.jsonl` and `samples.jsonl` as they grow) or finished. burn-train's own
//! dashboard shows the run in the process that trains; this one shows any run whose directory
//! you can read (copied from another machine, or on a shared disk), several at once.

mod runs;
mod ui;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

pub use runs::RunView;
pub use ui::{MonitorState, Panel};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run directories (the `--run-dir` of a training run)
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Re-read the runs' files this often (milliseconds)
    #[arg(long, default_value_t = 1000)]
    pub refresh_ms: u64,
}

impl MonitorState {
    pub fn new(dirs: &[PathBuf]) -> Self {
        Self { runs: dirs.iter().map(|d| RunView::new(d)).collect(), panel: 0, selected: 0 }
    }

    pub fn refresh(&mut self) {
        for run in &mut self.runs {
            run.refresh();
        }
    }

    /// Applies a key; `false` means quit.
    pub fn key(&mut self, code: KeyCode, modifiers: KeyModifiers) -> bool {
        let panels = Panel::ALL.len();
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Right | KeyCode::Tab | KeyCode::Char('l') => self.panel = (self.panel + 1) % panels,
            KeyCode::Left | KeyCode::BackTab | KeyCode::Char('h') => self.panel = (self.panel + panels - 1) % panels,
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1) % self.runs.len().max(1),
            KeyCode::Up | KeyCode::Char('k') => self.selected = (self.selected + self.runs.len().max(1) - 1) % self.runs.len().max(1),
            KeyCode::Char(c) if c.is_ascii_digit() && c != '0' => {
                let index = c as usize - '1' as usize;
                if index < self.runs.len() {
                    self.selected = index;
                }
            }
            _ => {}
        }
        true
    }
}

pub fn run(args: Args) -> Result<()> {
    for dir in &args.runs {
        if !dir.is_dir() {
            bail!("{} is not a directory (give the --run-dir of a training run)", dir.display());
        }
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("llmfs monitor needs a terminal; for files use `llmfs plot RUN_DIR`");
    }
    let mut state = MonitorState::new(&args.runs);
    state.refresh();
    let mut terminal = ratatui::init();
    let result = (|| -> Result<()> {
        let refresh = Duration::from_millis(args.refresh_ms.max(50));
        let mut last_refresh = Instant::now();
        loop {
            terminal.draw(|frame| ui::draw(frame, &state))?;
            let wait = refresh.saturating_sub(last_refresh.elapsed());
            if event::poll(wait)? {
                match event::read()? {
                    Event::Key(key) if key.kind == KeyEventKind::Press => {
                        if !state.key(key.code, key.modifiers) {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
            if last_refresh.elapsed() >= refresh {
                state.refresh();
                last_refresh = Instant::now();
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(state: &MonitorState) -> String {
        let mut terminal = Terminal::new(TestBackend::new(120, 32)).unwrap();
        terminal.draw(|frame| ui::draw(frame, state)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let width = buffer.area.width as usize;
        buffer.content.chunks(width).map(|row| row.iter().map(|c| c.symbol()).collect::<String>() + "\n").collect()
    }

    fn write_run(dir: &std::path::Path, steps: u64, finished: bool) {
        std::fs::write(
            dir.join("run.json"),
            r#"{"task":"classification","model":"gpt2","train":{"epochs":2,"batch_size":8,"grad_accumulation":1,"drop_last":true,"optim":{"lr":5e-5,"weight_decay":0.1}},"examples":{"train":80}}"#,
        )
        .unwrap();
        let mut log = String::new();
        for step in 1..=steps {
            let loss = 1.0 / step as f64;
            log.push_str(&format!("{{\"time\":{step},\"step\":{step},\"epoch\":1,\"split\":\"train\",\"loss\":{loss},\"accuracy\":0.5,\"lr\":5e-5}}\n"));
            if step % 5 == 0 {
                log.push_str(&format!("{{\"time\":{step},\"step\":{step},\"epoch\":1,\"split\":\"val\",\"loss\":{},\"accuracy\":0.875}}\n", loss + 0.1));
            }
        }
        if finished {
            log.push_str(&format!("{{\"time\":99,\"step\":{steps},\"epoch\":2,\"split\":\"test\",\"loss\":0.2,\"accuracy\":0.9,\"final\":true}}\n"));
        }
        std::fs::write(dir.join("metrics.jsonl"), log).unwrap();
        std::fs::write(dir.join("samples.jsonl"), "{\"step\":5,\"epoch\":1,\"prompt\":\"p\",\"text\":\"a spam-free reply\"}\n").unwrap();
    }

    #[test]
    fn shows_progress_eta_config_sample_and_switches_panels_and_runs() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_run(a.path(), 10, false);
        write_run(b.path(), 20, true);
        let mut state = MonitorState::new(&[a.path().to_path_buf(), b.path().to_path_buf()]);
        state.refresh();
        let text = screen(&state);
        // 80 examples / 8 = 10 steps an epoch, 2 epochs; 1 s a step: 10 steps to go.
        assert!(text.contains("step 10/20, epoch 1/2, ETA 10s"), "{text}");
        assert!(text.contains("[Loss]"), "{text}");
        assert!(text.contains("model: gpt2") && text.contains("lr: 0.00005"), "{text}");
        assert!(text.contains("step 5: a spam-free reply"), "{text}");
        assert!(text.contains("last val (step 10): loss 0.2000,") && text.contains("accuracy 87.5%"), "{text}");
        let names: Vec<String> = state.runs.iter().map(|r| r.name.clone()).collect();
        assert!(text.contains(&format!("{} train", names[0])), "a legend entry per run and split: {text}");

        assert!(state.key(KeyCode::Right, KeyModifiers::NONE));
        assert!(screen(&state).contains("[Accuracy]"));
        assert!(state.key(KeyCode::Down, KeyModifiers::NONE));
        let text = screen(&state);
        assert!(text.contains("step 20/20, epoch 1/2, finished"), "{text}");
        assert!(state.key(KeyCode::Char('1'), KeyModifiers::NONE));
        assert_eq!(state.selected, 0);
        assert!(state.key(KeyCode::Left, KeyModifiers::NONE) && state.key(KeyCode::Left, KeyModifiers::NONE));
        assert!(screen(&state).contains("[HellaSwag acc_norm]"));
        assert!(screen(&state).contains("no hellaswag acc_norm in these runs yet"));
        assert!(!state.key(KeyCode::Char('q'), KeyModifiers::NONE));
    }

    #[test]
    fn an_empty_directory_is_a_run_that_has_not_started() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = MonitorState::new(&[dir.path().to_path_buf()]);
        state.refresh();
        let text = screen(&state);
        assert!(text.contains("no run yet (no run.json)"), "{text}");
        assert!(text.contains("no loss in these runs yet"), "{text}");
    }
}
