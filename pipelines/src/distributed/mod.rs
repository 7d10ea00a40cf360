//! Data-parallel training's collectives: every rank trains on its share of each global batch and
//! the ranks average their gradients before the optimizer step. One small trait over the
//! transports: [`Single`] (one process, the plain path: every call is a no-op),
//! [`threads::ThreadWorld`] (`--devices a,b,…`: one thread per device in one process, whose CUDA
//! devices average their gradients themselves, with NCCL) and, with the
//! `mpi` feature, [`mpi::MpiWorld`] (`mpirun -np N llmfs …`: MPI launches the ranks, does the
//! rendezvous and carries the buffers, except between CUDA GPUs of one node: NCCL, [`node_gpus`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use gpt::DeviceSpec;
use gpt::burn::prelude::Device;

mod gradients;
#[cfg(feature = "mpi")]
pub mod mpi;
mod node_gpus;
pub mod threads;
mod watchdog;

pub use gradients::{GradientBuffers, average_gradients, broadcast_parameters};
pub use threads::{in_world, run_ranks, run_ranks_on_device_group};
pub use watchdog::Watchdog;

/// How long a rank waits in a collective for the others before it stops (`--collective-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The ranks of one training run.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..world_size()`; rank 0 owns the run directory.
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Whether every rank is a thread of this process (then each was given its own device).
    fn in_one_process(&self) -> bool {
        false
    }
    /// The ranks' devices, in rank order, where the backend averages gradients between them
    /// itself (NCCL, for `--devices cuda:0,cuda:1`): then they stay on the devices. None: they go
    /// through host memory ([`Self::all_reduce_mean`]).
    fn device_group(&self) -> Option<&[Device]> {
        None
    }
    /// `mean` becomes the element-wise mean over the ranks of each rank's `sent` (gradients; the
    /// same lengths).
    fn all_reduce_mean(&self, sent: &[f32], mean: &mut [f32]) -> Result<()>;
    /// Every rank's `values` become the element-wise sum over the ranks (losses and counts).
    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()>;
    /// Every rank's `values` become rank `root`'s (the initial weights).
    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()>;
    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Runs `wait`, a wait for this rank's device to finish what it was given (NCCL's all-reduce
    /// among it), under the collective timeout: a rank whose NCCL waits for ever stops the run.
    fn wait_timed(&self, what: &'static str, wait: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let _ = what;
        wait()
    }
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
    fn in_one_process(&self) -> bool {
        true
    }
    fn all_reduce_mean(&self, sent: &[f32], mean: &mut [f32]) -> Result<()> {
        mean.copy_from_slice(sent);
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

/// Joins the ranks this process was launched with ([`world`]) for the commands that train on
/// `device` (each rank's `--device`); the world lasts until the guard's [`WorldGuard::finish`].
pub fn init(timeout: Duration, device: DeviceSpec) -> Result<WorldGuard> {
    let world: Arc<dyn Collective> = Arc::from(world(timeout, device)?);
    if world.world_size() > 1 {
        eprintln!("rank {} of {}", world.rank(), world.world_size());
    }
    *WORLD.lock().map_err(|_| anyhow::anyhow!("the world's lock is poisoned"))? = Some(world);
    Ok(WorldGuard)
}

/// The ranks training runs on: the world of this thread if it is a rank of [`run_ranks`], else
/// the world [`init`] joined, else one process.
pub fn current() -> Arc<dyn Collective> {
    threads::this_threads_world().or_else(|| WORLD.lock().ok().and_then(|w| w.clone())).unwrap_or_else(|| Arc::new(Single))
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

/// How far this rank moves its CUDA device's number (`gpt::DeviceSpec::resolve_on_gpu`): its
/// rank among the node's ranks, so that `mpirun -np 8 llmfs pretrain --device cuda` trains on
/// eight GPUs, not eight times on `cuda:0`. None (0) in a world of one, and where the launcher
/// gives each rank one GPU of its own (`CUDA_VISIBLE_DEVICES` naming one: Slurm's
/// `--gpus-per-task=1`), which it sees as `cuda:0`, and where the ranks are threads of one
/// process (`--devices` named each one's device).
pub fn gpu_shift() -> usize {
    gpu_shift_of(current().as_ref())
}

/// [`gpu_shift`] in `world`.
fn gpu_shift_of(world: &dyn Collective) -> usize {
    if world.in_one_process() {
        return 0;
    }
    gpu_shift_from(world.world_size(), world.rank(), |var| std::env::var(var).ok())
}

/// [`gpu_shift`] from the world and the launcher's variables: the node-local rank of Open MPI,
/// MPICH (Hydra) or Slurm, else the rank (one node).
fn gpu_shift_from(world_size: usize, rank: usize, var: impl Fn(&str) -> Option<String>) -> usize {
    if world_size <= 1 {
        return 0;
    }
    let visible = var("CUDA_VISIBLE_DEVICES").map(|list| list.split(',').filter(|d| !d.trim().is_empty()).count());
    if visible == Some(1) {
        return 0;
    }
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"].iter().find_map(|name| var(name)?.trim().parse().ok()).unwrap_or(rank)
}

/// The ranks this process trains with: MPI's world when an MPI launcher started it with more
/// than one rank, else [`Single`]. Launched with several ranks by a build without the `mpi`
/// feature is an error (each rank would train alone and write the same run directory).
/// MPI's ranks on CUDA GPUs of one node average their gradients with NCCL ([`node_gpus`]).
pub fn world(timeout: Duration, device: DeviceSpec) -> Result<Box<dyn Collective>> {
    match launched_world_size() {
        Some(size) if size > 1 => open_mpi(size, timeout, device),
        _ => Ok(Box::new(Single)),
    }
}

#[cfg(feature = "mpi")]
fn open_mpi(_size: usize, timeout: Duration, device: DeviceSpec) -> Result<Box<dyn Collective>> {
    Ok(Box::new(mpi::MpiWorld::init(timeout, device)?))
}

#[cfg(not(feature = "mpi"))]
fn open_mpi(size: usize, _timeout: Duration, _device: DeviceSpec) -> Result<Box<dyn Collective>> {
    anyhow::bail!("launched as one of {size} MPI ranks, but this llmfs was built without the `mpi` feature (cargo build --features mpi; scripts/setup-mpi.sh installs Open MPI)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_of_a_node_takes_its_own_gpu() {
        let env = |pairs: &'static [(&'static str, &'static str)]| move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
        assert_eq!(gpu_shift_from(1, 0, env(&[("OMPI_COMM_WORLD_LOCAL_RANK", "3")])), 0);
        assert_eq!(gpu_shift_from(8, 11, env(&[("OMPI_COMM_WORLD_LOCAL_RANK", "3")])), 3);
        assert_eq!(gpu_shift_from(8, 11, env(&[("MPI_LOCALRANKID", "2")])), 2);
        assert_eq!(gpu_shift_from(8, 11, env(&[("SLURM_LOCALID", "1")])), 1);
        // No node-local rank: one node, where the rank is the local one.
        assert_eq!(gpu_shift_from(4, 2, env(&[])), 2);
        // One GPU of its own per rank, seen as cuda:0; several visible: the local rank's.
        assert_eq!(gpu_shift_from(8, 11, env(&[("OMPI_COMM_WORLD_LOCAL_RANK", "3"), ("CUDA_VISIBLE_DEVICES", "5")])), 0);
        assert_eq!(gpu_shift_from(8, 11, env(&[("OMPI_COMM_WORLD_LOCAL_RANK", "3"), ("CUDA_VISIBLE_DEVICES", "0,1,2,3")])), 3);
    }

    #[test]
    fn one_process_is_a_world_of_one() {
        let single = Single;
        let mut mean = [0.0f32; 2];
        single.all_reduce_mean(&[1.0, 2.0], &mut mean).unwrap();
        assert_eq!((single.rank(), single.world_size(), mean), (0, 1, [1.0, 2.0]));
    }
}
