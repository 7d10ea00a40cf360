//! Several devices in one process (`llmfs pretrain --devices cuda:0,cuda:1`): one thread per
//! device, each a rank of a [`ThreadWorld`], as Burn's own DDP strategy runs one thread per
//! device. The ranks exchange buffers in the process's memory: each publishes where its
//! buffers are, and after all have, each reduces its share of the values, for every rank at
//! once. Where every device is a CUDA GPU and NCCL is there, the ranks' gradients do not come
//! here: the backend averages them between the GPUs ([`Collective::device_group`]). Other GPUs'
//! go through host memory, as under `mpirun`.

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use gpt::burn::prelude::Device;

use super::{Collective, Watchdog};

/// Where one rank's buffers are during a collective (addresses, so that the state is `Send`).
#[derive(Clone, Copy, Default)]
struct Published {
    read: usize,
    write: usize,
    len: usize,
}

#[derive(Default)]
struct State {
    /// Ranks at the current meeting point, and how many meetings have completed.
    arrived: usize,
    generation: u64,
    /// The first rank that stopped with an error, and the error: the others stop at their next
    /// collective instead of waiting for it.
    failed: Option<(usize, String)>,
    published: Vec<Published>,
}

struct Shared {
    size: usize,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked holding the lock left nothing half-done in it: go on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fail(&self, rank: usize, error: String) {
        let mut state = self.lock();
        state.failed.get_or_insert((rank, error));
        self.changed.notify_all();
    }
}

/// One rank of the threads of one process.
pub struct ThreadWorld {
    rank: usize,
    shared: Arc<Shared>,
    watchdog: Watchdog,
    /// Every rank's device, where the backend averages gradients between them.
    device_group: Option<Arc<[Device]>>,
}

impl ThreadWorld {
    /// The `size` ranks of one process; `timeout`: the longest a collective may wait for the
    /// others before the process stops.
    fn ranks(size: usize, timeout: Duration, device_group: Option<Arc<[Device]>>) -> Vec<ThreadWorld> {
        let shared = Arc::new(Shared { size, state: Mutex::new(State { published: vec![Published::default(); size], ..State::default() }), changed: Condvar::new() });
        (0..size)
            .map(|rank| {
                let watchdog = Watchdog::start(rank, timeout, |message| {
                    // The others cannot be unblocked from here: as MPI_Abort, end the process.
                    eprintln!("error: {message}");
                    std::process::exit(1);
                });
                ThreadWorld { rank, shared: shared.clone(), watchdog, device_group: device_group.clone() }
            })
            .collect()
    }

    /// Waits until every rank has called it as often as this one. With `give_up`, a rank that
    /// stopped with an error ends the wait with that error (a collective's first meeting, before
    /// any rank reads another's buffers); without, the wait goes on (its last, once every rank is
    /// reading or writing the others' buffers and none may leave early).
    fn meet(&self, what: &'static str, give_up: bool) -> Result<()> {
        let stopped = |failed: usize| anyhow!("rank {}: stopped in {what}: rank {failed} failed", self.rank);
        self.watchdog.time(what, || {
            let mut state = self.shared.lock();
            if give_up && let Some((failed, _)) = &state.failed {
                return Err(stopped(*failed));
            }
            let generation = state.generation;
            state.arrived += 1;
            if state.arrived == self.shared.size {
                state.arrived = 0;
                state.generation += 1;
                self.shared.changed.notify_all();
                return Ok(());
            }
            loop {
                state = self.shared.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                if state.generation != generation {
                    return Ok(());
                }
                if give_up && let Some(failed) = state.failed.as_ref().map(|(rank, _)| *rank) {
                    // No longer waiting here: the meeting completes without this rank.
                    state.arrived -= 1;
                    return Err(stopped(failed));
                }
            }
        })
    }

    /// Publishes this rank's buffers and waits for every rank's, which it returns.
    fn exchange(&self, what: &'static str, mine: Published) -> Result<Vec<Published>> {
        self.shared.lock().published[self.rank] = mine;
        self.meet(what, true)?;
        let all = self.shared.lock().published.clone();
        if all.iter().any(|p| p.len != mine.len) {
            // Every rank sees the same lengths, so all leave here, none touching another's buffers.
            let lengths: Vec<usize> = all.iter().map(|p| p.len).collect();
            bail!("{what}: the ranks' buffers differ in length ({lengths:?}): do they train the same model?");
        }
        Ok(all)
    }

    /// This rank's share of `len` values: a contiguous range, the ranks' shares in order.
    fn share(&self, len: usize) -> std::ops::Range<usize> {
        let size = self.shared.size;
        (len * self.rank / size)..(len * (self.rank + 1) / size)
    }
}

// SAFETY (for the reads and writes through published addresses below): a rank publishes its
// buffers, borrowed for the whole call, and does not return before the call's last meeting,
// which every rank reaches only after its last access to the others' buffers. Between the two
// meetings each buffer is either only read (`read`) or written in disjoint shares, one per rank
// (`write`, which Rust's borrows keep apart from every `read`).
impl Collective for ThreadWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.size
    }

    fn in_one_process(&self) -> bool {
        true
    }

    fn device_group(&self) -> Option<&[Device]> {
        self.device_group.as_deref()
    }

    fn wait_timed(&self, what: &'static str, wait: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        self.watchdog.time(what, wait)
    }

    fn all_reduce_mean(&self, sent: &[f32], mean: &mut [f32]) -> Result<()> {
        anyhow::ensure!(sent.len() == mean.len(), "an all-reduce of {} values into {}", sent.len(), mean.len());
        let all = self.exchange("an all-reduce of gradients", Published { read: sent.as_ptr() as usize, write: mean.as_mut_ptr() as usize, len: sent.len() })?;
        // Sums in rank order, in f32 (as MPI's and NCCL's), then scaled as MpiWorld scales.
        let scale = 1.0 / self.shared.size as f32;
        let share = self.share(sent.len());
        let reads: Vec<&[f32]> = all.iter().map(|p| unsafe { std::slice::from_raw_parts((p.read as *const f32).add(share.start), share.len()) }).collect();
        let mut sums = vec![0.0f32; share.len()];
        for values in &reads {
            sums.iter_mut().zip(*values).for_each(|(s, v)| *s += v);
        }
        sums.iter_mut().for_each(|s| *s *= scale);
        for p in &all {
            unsafe { std::slice::from_raw_parts_mut((p.write as *mut f32).add(share.start), share.len()) }.copy_from_slice(&sums);
        }
        self.meet("an all-reduce of gradients", false)
    }

    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()> {
        // Metrics: a few values. Each rank sums every rank's into its own copy, then writes it
        // back once all have read.
        let all = self.exchange("an all-reduce of metrics", Published { read: values.as_ptr() as usize, write: 0, len: values.len() })?;
        let mut sums = vec![0.0f64; values.len()];
        for p in &all {
            let theirs = unsafe { std::slice::from_raw_parts(p.read as *const f64, p.len) };
            sums.iter_mut().zip(theirs).for_each(|(s, v)| *s += v);
        }
        self.meet("an all-reduce of metrics", false)?;
        values.copy_from_slice(&sums);
        Ok(())
    }

    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()> {
        anyhow::ensure!(root < self.shared.size, "no rank {root} among {}", self.shared.size);
        let all = self.exchange("a broadcast of weights", Published { read: values.as_ptr() as usize, write: 0, len: values.len() })?;
        if self.rank != root {
            let theirs = unsafe { std::slice::from_raw_parts(all[root].read as *const f32, values.len()) };
            values.copy_from_slice(theirs);
        }
        self.meet("a broadcast of weights", false)
    }

    fn barrier(&self) -> Result<()> {
        self.meet("a barrier", true)
    }

    fn abort(&self) -> ! {
        std::process::exit(1)
    }
}

thread_local! {
    /// The world of a rank's thread: [`super::current`] asks for it before the process's.
    static RANK_WORLD: RefCell<Option<Arc<dyn Collective>>> = const { RefCell::new(None) };
}

/// The world of this thread, if it is a rank of [`run_ranks`].
pub(super) fn this_threads_world() -> Option<Arc<dyn Collective>> {
    RANK_WORLD.with(|world| world.borrow().clone())
}

/// Runs `f` with `world` as this thread's ([`super::current`]): for a rank's work moved to
/// another thread (a rayon pool of its own), with `super::current()` of the rank's thread.
pub fn in_world<T>(world: Arc<dyn Collective>, f: impl FnOnce() -> T) -> T {
    let before = RANK_WORLD.with(|w| w.borrow_mut().replace(world));
    // Restored on unwinding too: a pool's worker outlives the rank's work.
    struct Restore(Option<Arc<dyn Collective>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            RANK_WORLD.with(|w| *w.borrow_mut() = before);
        }
    }
    let _restore = Restore(before);
    f()
}

/// Runs `rank_main(rank)` for `size` ranks, each on its own thread in a [`ThreadWorld`]
/// ([`super::current`] gives it there). Returns when all have returned: rank 0's value, or the
/// error of the rank that failed first (the others stop at their next collective).
pub fn run_ranks<T: Send>(size: usize, timeout: Duration, rank_main: impl Fn(usize) -> Result<T> + Sync) -> Result<T> {
    run(size, timeout, None, rank_main)
}

/// [`run_ranks`] with rank r on `devices[r]`, between which the backend averages the gradients
/// itself ([`Collective::device_group`]: `gpt::backend::collective::device_group` says which
/// devices can). One device is a group too: the backend's all-reduce runs, over one rank.
pub fn run_ranks_on_device_group<T: Send>(devices: Vec<Device>, timeout: Duration, rank_main: impl Fn(usize) -> Result<T> + Sync) -> Result<T> {
    run(devices.len(), timeout, Some(devices.into()), rank_main)
}

fn run<T: Send>(size: usize, timeout: Duration, device_group: Option<Arc<[Device]>>, rank_main: impl Fn(usize) -> Result<T> + Sync) -> Result<T> {
    anyhow::ensure!(size > 0, "no devices to train on");
    let worlds = ThreadWorld::ranks(size, timeout, device_group);
    let shared = worlds[0].shared.clone();
    let rank_main = &rank_main;
    let mut results: Vec<Result<T>> = std::thread::scope(|scope| {
        let handles: Vec<_> = worlds
            .into_iter()
            .map(|world| {
                let rank = world.rank;
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("rank {rank}"))
                    // The main thread's stack, not a spawned thread's 2 MiB: the model's
                    // recursion (loading, autodiff's graph) was written for the main thread.
                    .stack_size(64 << 20)
                    .spawn_scoped(scope, move || {
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_world(Arc::new(world), || rank_main(rank))))
                            .unwrap_or_else(|panic| Err(anyhow!("panicked: {}", panic_message(&panic))));
                        if let Err(error) = &result {
                            shared.fail(rank, format!("{error:#}"));
                        }
                        result
                    })
            })
            .collect();
        handles.into_iter().map(|handle| handle.map_err(|e| anyhow!("cannot start a rank's thread: {e}"))?.join().unwrap_or_else(|_| Err(anyhow!("a rank's thread panicked")))).collect()
    });
    if let Some((rank, error)) = shared.lock().failed.take() {
        // Every rank refusing the same (a flag, a file) is not one rank's failure.
        let same_everywhere = results.iter().all(|r| r.as_ref().err().is_some_and(|e| format!("{e:#}") == error));
        if same_everywhere {
            bail!("{error}");
        }
        bail!("rank {rank}: {error}");
    }
    results.swap_remove(0)
}

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::current;

    const TIMEOUT: Duration = Duration::from_secs(60);

    #[test]
    fn every_rank_gets_the_mean_of_every_ranks_values() {
        for size in [1, 2, 3, 5] {
            // Lengths below, at and above the number of ranks: some shares are empty.
            for len in [0, 1, 4, 7, 1000] {
                let means = run_ranks(size, TIMEOUT, |rank| {
                    let world = current();
                    assert_eq!((world.rank(), world.world_size()), (rank, size));
                    let sent: Vec<f32> = (0..len).map(|i| (i * 10 + rank) as f32).collect();
                    let mut mean = vec![f32::NAN; len];
                    world.all_reduce_mean(&sent, &mut mean)?;
                    // Again: the meetings of one call do not run into the next's.
                    let mut again = vec![f32::NAN; len];
                    world.all_reduce_mean(&sent, &mut again)?;
                    assert_eq!(mean, again);
                    Ok(mean)
                })
                .unwrap();
                let ranks_mean = (0..size).sum::<usize>() as f32 / size as f32;
                let expected: Vec<f32> = (0..len).map(|i| (i * 10) as f32 + ranks_mean).collect();
                for (got, want) in means.iter().zip(&expected) {
                    assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{size} ranks, {len} values: {got} vs {want}");
                }
                assert_eq!(means.len(), len);
            }
        }
    }

    #[test]
    fn a_ranks_work_moved_to_another_thread_keeps_its_world() {
        run_ranks(3, TIMEOUT, |rank| {
            let world = current();
            let moved = std::thread::scope(|s| s.spawn(|| in_world(world.clone(), || current().rank())).join().unwrap());
            // Another thread without it sees the process's world, one process.
            let elsewhere = std::thread::scope(|s| s.spawn(|| current().world_size()).join().unwrap());
            anyhow::ensure!((moved, elsewhere) == (rank, 1), "rank {rank}: {moved} moved, a world of {elsewhere} elsewhere");
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn sums_broadcasts_and_barriers_reach_every_rank() {
        let seen = run_ranks(3, TIMEOUT, |rank| {
            let world = current();
            let mut sums = [rank as f64, 1.0];
            world.all_reduce_sum(&mut sums)?;
            let mut weights = vec![rank as f32; 5];
            world.broadcast(&mut weights, 2)?;
            world.barrier()?;
            Ok((sums, weights, world.in_one_process()))
        })
        .unwrap();
        assert_eq!(seen, ([3.0, 3.0], vec![2.0; 5], true));
    }

    #[test]
    fn a_rank_that_fails_stops_the_others_at_their_next_collective() {
        let error = run_ranks(3, TIMEOUT, |rank| {
            let world = current();
            let mut sums = [1.0f64];
            world.all_reduce_sum(&mut sums)?;
            if rank == 1 {
                bail!("the shard is unreadable");
            }
            // Ranks 0 and 2 wait here for rank 1, which will not come.
            world.barrier()?;
            Ok(())
        })
        .unwrap_err();
        assert_eq!(error.to_string(), "rank 1: the shard is unreadable");
        // Every rank failing alike (a flag every rank refuses): the error alone.
        let error = run_ranks(3, TIMEOUT, |_| -> Result<()> { bail!("--quantize int8 is for inference") }).unwrap_err();
        assert_eq!(error.to_string(), "--quantize int8 is for inference");
        // A panic is a failure too, not a hang of the others.
        let error = run_ranks(2, TIMEOUT, |rank| {
            if rank == 0 {
                panic!("a bug");
            }
            current().barrier()
        })
        .unwrap_err();
        assert_eq!(error.to_string(), "rank 0: panicked: a bug");
        // Buffers of other lengths: every rank refuses before touching another's.
        let error = run_ranks(2, TIMEOUT, |rank| {
            let sent = vec![1.0f32; 3 + rank];
            current().all_reduce_mean(&sent, &mut vec![0.0; 3 + rank])
        })
        .unwrap_err();
        assert!(error.to_string().contains("the ranks' buffers differ in length ([3, 4])"), "{error}");
    }
}
