//! Data-parallel training's collectives: every rank trains on its share of each global batch and
//! the ranks average their gradients before the optimizer step. One small trait over the
//! transports: [`Single`] (one process, the plain path: every call is a no-op) and, with the `mpi`
//! feature, [`mpi::MpiWorld`] (`mpirun -np N llmfs …`: MPI launches the ranks, does the rendezvous
//! and carries the buffers).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

mod gradients;
#[cfg(feature = "mpi")]
pub mod mpi;
mod watchdog;

pub use gradients::{average_gradients, broadcast_parameters};
pub use watchdog::Watchdog;

/// How long a rank waits in a collective for the others before it stops (`--collective-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The ranks of one training run.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..world_size()`; rank 0 owns the run directory.
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Every rank's `values` become the element-wise mean over the ranks (gradients).
    fn all_reduce_mean(&self, values: &mut [f32]) -> Result<()>;
    /// Every rank's `values` become the element-wise sum over the ranks (losses and counts).
    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()>;
    /// Every rank's `values` become rank `root`'s (the initial weights).
    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()>;
    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Ends every rank now (MPI_Abort): after an error on one rank, the others would wait for it.
    fn abort(&self) -> !;
}

/// One process: the world of a run not launched by `mpirun`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_mean(&self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _values: &mut [f32], _root: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self) -> ! {
        std::process::exit(1)
    }
}

/// The world of this process once [`init`] made it: training asks for it with [`current`].
static WORLD: Mutex<Option<Arc<dyn Collective>>> = Mutex::new(None);

/// Joins the ranks this process was launched with ([`world`]) for the commands that train;
/// the world lasts until the guard's [`WorldGuard::finish`].
pub fn init(timeout: Duration) -> Result<WorldGuard> {
    let world: Arc<dyn Collective> = Arc::from(world(timeout)?);
    if world.world_size() > 1 {
        eprintln!("rank {} of {}", world.rank(), world.world_size());
    }
    *WORLD.lock().map_err(|_| anyhow::anyhow!("the world's lock is poisoned"))? = Some(world);
    Ok(WorldGuard)
}

/// The ranks training runs on: the world [`init`] joined, else one process.
pub fn current() -> Arc<dyn Collective> {
    WORLD.lock().ok().and_then(|w| w.clone()).unwrap_or_else(|| Arc::new(Single))
}

/// Ends the world: MPI is finalised after a command that succeeded on this rank; after an error
/// every rank is stopped (the others may be waiting for this one in a collective).
#[must_use]
pub struct WorldGuard;

impl WorldGuard {
    pub fn finish<T>(self, result: Result<T>) -> Result<T> {
        let world = WORLD.lock().ok().and_then(|mut w| w.take());
        if let (Some(world), Err(error)) = (&world, &result)
            && world.world_size() > 1
        {
            eprintln!("error: rank {}: {error:#}", world.rank());
            world.abort();
        }
        // The last reference: MPI_Finalize, once the training loop has let go of the world.
        drop(world);
        result
    }
}

/// The world size an MPI launcher announced to this process (Open MPI's, MPICH's / Slurm's PMI
/// variables), if any.
pub fn launched_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"].iter().find_map(|var| std::env::var(var).ok()?.parse().ok())
}

/// The ranks this process trains with: MPI's world when an MPI launcher started it with more
/// than one rank, else [`Single`]. Launched with several ranks by a build without the `mpi`
/// feature is an error (each rank would train alone and write the same run directory).
pub fn world(timeout: Duration) -> Result<Box<dyn Collective>> {
    match launched_world_size() {
        Some(size) if size > 1 => open_mpi(size, timeout),
        _ => Ok(Box::new(Single)),
    }
}

#[cfg(feature = "mpi")]
fn open_mpi(_size: usize, timeout: Duration) -> Result<Box<dyn Collective>> {
    Ok(Box::new(mpi::MpiWorld::init(timeout)?))
}

#[cfg(not(feature = "mpi"))]
fn open_mpi(size: usize, _timeout: Duration) -> Result<Box<dyn Collective>> {
    anyhow::bail!("launched as one of {size} MPI ranks, but this llmfs was built without the `mpi` feature (cargo build --features mpi; scripts/setup-mpi.sh installs Open MPI)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_is_a_world_of_one() {
        let single = Single;
        let mut values = [1.0f32, 2.0];
        single.all_reduce_mean(&mut values).unwrap();
        assert_eq!((single.rank(), single.world_size(), values), (0, 1, [1.0, 2.0]));
    }
}
