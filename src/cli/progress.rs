//! The progress bar on standard error: bytes done, speed, ETA.
//!
//! Shown only when standard error is a terminal, `-q` is not given, and the run is still
//! going after [`DELAY`]: a short run, or output captured by a script, gets nothing extra.
//! The library reports progress once per group of blocks, so between reports the bar's
//! clock and spinner keep moving on a steady tick while the position waits.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a run must last before the bar appears.
const DELAY: Duration = Duration::from_millis(800);
/// Redraw interval while the bar is shown.
const TICK: Duration = Duration::from_millis(250);

pub struct Progress {
    bar: ProgressBar,
    /// Dropping or sending on it tells the delay thread the run is over.
    stop: Option<mpsc::Sender<()>>,
    waiter: Option<JoinHandle<()>>,
}

impl Progress {
    /// A bar for `total` bytes (`None`: unknown, a spinner with a byte count), labelled
    /// `label`; inert unless `enabled`.
    pub fn new(enabled: bool, total: Option<u64>, label: String) -> Self {
        // Hidden until the delay has passed: nothing is drawn for short runs.
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
        if !enabled {
            return Progress {
                bar,
                stop: None,
                waiter: None,
            };
        }
        let template = if total.is_some() {
            "{spinner} {msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} \
             {bytes_per_sec}, ETA {eta}"
        } else {
            "{spinner} {msg} [{elapsed_precise}] {bytes} {bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label);
        let (tx, rx) = mpsc::channel::<()>();
        let shown = bar.clone();
        let waiter = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(DELAY) {
                shown.set_draw_target(ProgressDrawTarget::stderr());
                shown.enable_steady_tick(TICK);
            }
        });
        Progress {
            bar,
            stop: Some(tx),
            waiter: Some(waiter),
        }
    }

    /// Bytes of original done so far.
    pub fn set(&self, done: u64) {
        self.bar.set_position(done);
    }

    /// Removes the bar (before any per-file message is printed).
    pub fn finish(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(w) = self.waiter.take() {
            let _ = w.join();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
