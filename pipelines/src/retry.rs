//! Trying a request again after transient failures (timeouts, dropped connections, HTTP 5xx),
//! with exponential backoff: the downloads and the LLM judge share this loop.

use std::time::Duration;

/// What one try gave when it failed: a transient failure is tried again, a final one is not.
#[derive(Debug)]
pub enum Attempt<E> {
    Transient(E),
    Final(E),
}

/// How many times to try again and how long to wait first (doubled before each next try).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub retries: u32,
    pub first_wait: Duration,
}

impl Backoff {
    /// Runs `try_once` until it succeeds, fails finally, or the retries are spent. `before_retry`
    /// sees each transient error with the attempt's number and the wait that follows. A failure
    /// comes back with the number of attempts made.
    pub fn run<T, E>(
        &self,
        mut try_once: impl FnMut() -> Result<T, Attempt<E>>,
        mut before_retry: impl FnMut(&E, u32, Duration),
    ) -> Result<T, (E, u32)> {
        let mut attempt = 1;
        loop {
            match try_once() {
                Ok(value) => return Ok(value),
                Err(Attempt::Transient(error)) if attempt <= self.retries => {
                    let wait = self.first_wait * 2u32.pow(attempt - 1);
                    before_retry(&error, attempt, wait);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(Attempt::Transient(error) | Attempt::Final(error)) => return Err((error, attempt)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_retried_with_doubling_waits_and_final_ones_are_not() {
        let backoff = Backoff { retries: 3, first_wait: Duration::from_millis(1) };
        let mut waits = Vec::new();
        let mut tries = 0;
        let result: Result<(), _> = backoff.run(
            || {
                tries += 1;
                Err(Attempt::Transient("busy"))
            },
            |_, attempt, wait| waits.push((attempt, wait.as_millis())),
        );
        assert_eq!(result, Err(("busy", 4)));
        assert_eq!(waits, [(1, 1), (2, 2), (3, 4)]);

        let mut tries = 0;
        let result: Result<u8, _> = backoff.run(
            || {
                tries += 1;
                if tries < 3 { Err(Attempt::Transient("busy")) } else { Ok(7) }
            },
            |_, _, _| {},
        );
        assert_eq!(result, Ok(7));
        let result: Result<(), _> = backoff.run(|| Err(Attempt::Final("bad request")), |_, _, _| panic!("no retry"));
        assert_eq!(result, Err(("bad request", 1)));
    }
}
