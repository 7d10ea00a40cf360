//! The MPI transport (feature `mpi`, the `mpi` crate over Open MPI or MPICH): `mpirun -np N`
//! starts the ranks and MPI's world communicator carries every collective, except the gradients of
//! ranks on CUDA GPUs of one node, which NCCL averages on the GPUs (`node_gpus`). Sums run in f32 for
//! gradients (as NCCL and PyTorch's DDP do) and in f64 for metrics.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use gpt::DeviceSpec;
use gpt::burn::prelude::Device;

use super::{Collective, Watchdog};

pub struct MpiWorld {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    watchdog: Watchdog,
    /// Every rank's GPU, where they average their gradients with NCCL (CUDA GPUs of one node).
    device_group: Option<Vec<Device>>,
    /// MPI is finalised when this drops, after the communicator.
    _universe: Universe,
}

// SAFETY: MPI is initialised with `MPI_THREAD_MULTIPLE` (checked in `init`), so its handles may be
// used from any thread; llmfs calls the collectives from the training thread, one at a time.
unsafe impl Send for MpiWorld {}
unsafe impl Sync for MpiWorld {}

impl MpiWorld {
    /// Joins the ranks `mpirun` started, which train on `device` (each rank's `--device`).
    /// `timeout`: the longest a collective may wait for the others.
    pub fn init(timeout: Duration, device: DeviceSpec) -> Result<Self> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Multiple).context("MPI was already initialised in this process")?;
        ensure!(threading == mpi::Threading::Multiple, "this MPI library gives {threading:?} threading, llmfs needs Multiple (its watchdog may abort from another thread)");
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let aborting = universe.world();
        // SAFETY (Send): the watchdog's communicator is only used to abort, which MPI_THREAD_MULTIPLE allows from any thread.
        let aborting = SendCommunicator(aborting);
        let watchdog = Watchdog::start(rank, timeout, move |message| {
            eprintln!("error: {message}");
            aborting.abort();
        });
        let mut world = Self { world, rank, size, watchdog, device_group: None, _universe: universe };
        let node = mpi::environment::processor_name().unwrap_or_default();
        world.device_group = super::node_gpus::nccl_between_processes(&world, device, &node)?;
        Ok(world)
    }
}

struct SendCommunicator(SimpleCommunicator);
// SAFETY: see the use above.
unsafe impl Send for SendCommunicator {}

impl SendCommunicator {
    fn abort(&self) -> ! {
        self.0.abort(1)
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn device_group(&self) -> Option<&[Device]> {
        self.device_group.as_deref()
    }

    fn wait_timed(&self, what: &'static str, wait: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        self.watchdog.time(what, wait)
    }

    fn all_reduce_mean(&self, sent: &[f32], mean: &mut [f32]) -> Result<()> {
        ensure!(sent.len() == mean.len(), "an all-reduce of {} values into {}", sent.len(), mean.len());
        self.watchdog.time("an all-reduce of gradients", || self.world.all_reduce_into(sent, mean, SystemOperation::sum()));
        let scale = 1.0 / self.size as f32;
        mean.iter_mut().for_each(|v| *v *= scale);
        Ok(())
    }

    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()> {
        let sent = values.to_vec();
        self.watchdog.time("an all-reduce of metrics", || self.world.all_reduce_into(&sent[..], values, SystemOperation::sum()));
        Ok(())
    }

    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()> {
        ensure!(root < self.size, "no rank {root} among {}", self.size);
        self.watchdog.time("a broadcast of weights", || self.world.process_at_rank(root as i32).broadcast_into(values));
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.watchdog.time("a barrier", || self.world.barrier());
        Ok(())
    }

    fn abort(&self) -> ! {
        self.world.abort(1)
    }
}
