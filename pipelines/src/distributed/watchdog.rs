//! A rank stuck in a collective (another rank hung or died without MPI noticing) would wait
//! forever: the watchdog times every collective and, past the timeout, runs the given stop
//! action (MPI's abort, which ends every rank) after saying which rank waited for what.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the rank is waiting for, and since when.
type Waiting = Option<(&'static str, Instant)>;

pub struct Watchdog {
    state: Arc<(Mutex<Waiting>, Condvar)>,
}

impl Watchdog {
    /// Starts the watching thread: `stop(message)` runs once a collective has lasted `timeout`.
    pub fn start(rank: usize, timeout: Duration, stop: impl Fn(&str) + Send + 'static) -> Self {
        let state: Arc<(Mutex<Waiting>, Condvar)> = Arc::new((Mutex::new(None), Condvar::new()));
        let watched = state.clone();
        std::thread::Builder::new()
            .name("collective-watchdog".into())
            .spawn(move || {
                let (lock, changed) = &*watched;
                let Ok(mut waiting) = lock.lock() else { return };
                loop {
                    waiting = match *waiting {
                        None => match changed.wait(waiting) {
                            Ok(guard) => guard,
                            Err(_) => return,
                        },
                        Some((what, since)) => {
                            let left = timeout.saturating_sub(since.elapsed());
                            if left.is_zero() {
                                stop(&format!(
                                    "rank {rank}: waited {timeout:?} for the other ranks in {what} (--collective-timeout): a rank has died or hangs; stopping every rank (the last complete checkpoint is intact)"
                                ));
                                return;
                            }
                            match changed.wait_timeout(waiting, left) {
                                Ok((guard, _)) => guard,
                                Err(_) => return,
                            }
                        }
                    };
                }
            })
            .expect("a thread for the collective watchdog");
        Self { state }
    }

    /// Runs `call` (one collective, named `what`) under the watchdog.
    pub fn time<T>(&self, what: &'static str, call: impl FnOnce() -> T) -> T {
        self.set(Some((what, Instant::now())));
        let result = call();
        self.set(None);
        result
    }

    fn set(&self, waiting: Waiting) {
        let (lock, changed) = &*self.state;
        if let Ok(mut state) = lock.lock() {
            *state = waiting;
            changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_collective_past_its_timeout_stops_the_rank_and_a_quick_one_does_not() {
        let (sender, messages) = mpsc::channel();
        let watchdog = Watchdog::start(3, Duration::from_millis(200), move |message| sender.send(message.to_string()).unwrap());
        watchdog.time("a quick all-reduce", || std::thread::sleep(Duration::from_millis(20)));
        assert!(messages.recv_timeout(Duration::from_millis(400)).is_err(), "nothing stops a quick collective");
        watchdog.time("the gradients' all-reduce", || std::thread::sleep(Duration::from_millis(500)));
        let message = messages.recv_timeout(Duration::from_secs(2)).unwrap();
        assert!(message.starts_with("rank 3: waited 200ms for the other ranks in the gradients' all-reduce"), "{message}");
    }
}
