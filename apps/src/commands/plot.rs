//! `llmfs plot RUN_DIR`: draw a run's plots (`RUN_DIR/plots/*.png`) from its metrics.jsonl.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run directory (runs/NAME): reads its metrics.jsonl, writes its plots/
    pub run_dir: PathBuf,
}

/// Draws the plots of the run and prints the path of each PNG written, one a line.
pub fn run(args: Args) -> Result<()> {
    let written = pipelines::plots::plot_run(&args.run_dir).context("cannot draw the plots")?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
