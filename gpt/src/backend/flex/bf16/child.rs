//! A check run in a child process (`fork`), so that a fault in it (an instruction the CPU
//! refuses, an address it will not take) ends the child and not the caller. The AMX kernel's
//! first run on a CPU is such a check: it has been tested only against an emulation of Intel's
//! specification, and a wrong kernel should cost speed, not the process.

use std::time::{Duration, Instant};

/// How a check in a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// It returned this.
    Returned(bool),
    /// The child died by this signal: SIGILL for an instruction the CPU refused (#UD), SIGSEGV for
    /// an address or an operand it refused (#PF, #GP).
    Signalled(i32),
    /// It panicked (exit status 2) or exited with another status.
    Exited(i32),
    /// It ran past the time allowed, and was killed.
    TimedOut,
    /// No child: `fork` or `waitpid` failed with this errno.
    NotRun(i32),
}

impl Outcome {
    /// What happened, for a warning: "returned false", "died by signal 4 (SIGILL)", …
    pub(super) fn describe(self) -> String {
        match self {
            Self::Returned(value) => format!("returned {value}"),
            Self::Signalled(signal) => format!("died by signal {signal} ({})", signal_name(signal)),
            Self::Exited(2) => "panicked".into(),
            Self::Exited(status) => format!("exited with status {status}"),
            Self::TimedOut => "ran past its time and was killed".into(),
            Self::NotRun(errno) => format!("could not run in a child process ({})", std::io::Error::from_raw_os_error(errno)),
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGILL => "SIGILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        _ => "another signal",
    }
}

/// Runs `check` in a child process and waits up to `limit` for it.
///
/// # Safety
/// `check` runs in a copy of this process that has only the calling thread: it must not wait
/// for another thread (no rayon) nor take a lock another thread may hold at the fork
/// (stdout's, stderr's). Allocating is safe with glibc's malloc (it resets its locks in the
/// child) and in practice with mimalloc (per-thread heaps; its few locks guard rare paths, and a
/// child that hangs on one is killed at `limit`). The child ends with `_exit`, so nothing of the
/// parent's (buffers, destructors, atexit) runs twice.
pub(super) unsafe fn in_child(check: impl FnOnce() -> bool, limit: Duration) -> Outcome {
    // SAFETY: as the caller promises for the child; the parent only waits.
    match unsafe { libc::fork() } {
        -1 => Outcome::NotRun(errno()),
        0 => {
            // SAFETY: the child: setrlimit and _exit are async-signal-safe; a fault leaves no core file.
            unsafe {
                let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                let status = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
                    Ok(true) => 0,
                    Ok(false) => 1,
                    Err(_) => 2,
                };
                libc::_exit(status)
            }
        }
        child => wait(child, limit),
    }
}

/// The outcome of `child`, killed once `limit` has passed.
fn wait(child: libc::pid_t, limit: Duration) -> Outcome {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_micros(100);
    loop {
        let mut status = 0;
        // SAFETY: `child` is our child; `status` is written.
        match unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } {
            0 if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            0 => {
                // SAFETY: as above; the blocking wait reaps the killed child.
                unsafe {
                    libc::kill(child, libc::SIGKILL);
                    libc::waitpid(child, &mut status, 0);
                }
                return Outcome::TimedOut;
            }
            -1 if errno() == libc::EINTR => {}
            -1 => return Outcome::NotRun(errno()),
            _ if libc::WIFSIGNALED(status) => return Outcome::Signalled(libc::WTERMSIG(status)),
            _ => {
                return match libc::WEXITSTATUS(status) {
                    0 => Outcome::Returned(true),
                    1 => Outcome::Returned(false),
                    other => Outcome::Exited(other),
                };
            }
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(20);

    #[test]
    fn a_child_returns_what_the_check_returns() {
        // SAFETY: the checks take no lock and spawn nothing.
        unsafe {
            assert_eq!(in_child(|| true, LIMIT), Outcome::Returned(true));
            assert_eq!(in_child(|| false, LIMIT), Outcome::Returned(false));
        }
    }

    #[test]
    fn a_fault_ends_only_the_child() {
        // SAFETY: as above; the faults are the child's.
        unsafe {
            let outcome = in_child(
                || {
                    libc::raise(libc::SIGILL);
                    true
                },
                LIMIT,
            );
            assert_eq!(outcome, Outcome::Signalled(libc::SIGILL));
            assert_eq!(outcome.describe(), "died by signal 4 (SIGILL)");
            let null = std::hint::black_box(std::ptr::null_mut::<u64>());
            assert_eq!(
                in_child(
                    || {
                        // Rust's handler of SIGSEGV (stack overflows) passes other faults on.
                        null.write_volatile(1);
                        true
                    },
                    LIMIT
                ),
                Outcome::Signalled(libc::SIGSEGV)
            );
        }
    }

    #[test]
    fn a_panic_or_a_hang_in_the_child_is_reported() {
        // SAFETY: as above (the panic's message takes stderr's lock: no other thread of this
        // test holds it at the fork, and a deadlock would end as a time-out).
        unsafe {
            assert_eq!(in_child(|| panic!("in the child"), LIMIT), Outcome::Exited(2));
            let started = Instant::now();
            let outcome = in_child(
                || {
                    std::thread::sleep(Duration::from_secs(60));
                    true
                },
                Duration::from_millis(200),
            );
            assert_eq!(outcome, Outcome::TimedOut);
            assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        }
    }
}
