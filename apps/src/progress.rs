//! Progress bars of the commands that work through a list (examples, records, replies).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` items on stderr drawn with indicatif's `template`, when stderr is a terminal;
/// a hidden one otherwise (pipes, CI), so that logs stay clean.
pub fn counting_bar(len: usize, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
