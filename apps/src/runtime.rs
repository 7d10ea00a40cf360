//! Flags every model-running command shares: which device, how many CPU threads, which seed (the
//! inference commands' `--dtype` and `--quantize` are `pipelines::runs::WeightArgs`).

use std::time::Duration;

use anyhow::{Result, bail};
use gpt::DeviceSpec;
use gpt::burn::prelude::Device;

#[derive(clap::Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// auto, cpu, cuda, cuda:N, wgpu, vulkan, metal, tch-cpu, tch-cuda[:N] or tch-mps (a backend must be compiled in: see --help of cargo features); under mpirun, rank r of a node takes cuda:N+r
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// CPU threads for the CPU backends, Flex and LibTorch (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed for sampling and for random (`random:<preset>`) models
    #[arg(long, default_value_t = 123)]
    pub seed: u64,
}

impl RuntimeArgs {
    /// Applies the thread count and returns the device (without autodiff: inference). In a
    /// data-parallel run each rank of a node takes its own GPU (`pipelines::distributed::gpu_shift`).
    pub fn device(&self) -> Result<Device> {
        gpt::backend::set_cpu_threads(self.threads)?;
        let shift = pipelines::distributed::gpu_shift();
        let device = self.device.resolve_on_gpu(shift)?;
        let moved = self.device.on_gpu(shift);
        if moved != self.device {
            eprintln!("rank {}: device {moved}", pipelines::distributed::current().rank());
        }
        device.seed(self.seed);
        Ok(device)
    }
}

/// Runs a training command on its data-parallel ranks: with `--devices`, one thread per device in
/// this process; under `mpirun`, MPI's ranks; else one process. `train` gets the runtime flags of
/// its rank (its device).
pub fn train_on_ranks(devices: &[DeviceSpec], collective_timeout_s: u64, runtime: &RuntimeArgs, train: impl Fn(RuntimeArgs) -> Result<()> + Sync) -> Result<()> {
    let timeout = Duration::from_secs(collective_timeout_s);
    if devices.is_empty() {
        // Under `mpirun -np N`: the ranks of a data-parallel run (else one process).
        let world = pipelines::distributed::init(timeout, runtime.device)?;
        return world.finish(train(runtime.clone()));
    }
    if let Some(size) = pipelines::distributed::launched_world_size().filter(|&size| size > 1) {
        bail!("--devices runs its ranks as threads of one process, but mpirun started {size}: under mpirun give each rank --device (rank r of a node takes cuda:N+r)");
    }
    if devices.contains(&DeviceSpec::Auto) {
        bail!("--devices names each rank's device (cuda:0,cuda:1, …): `auto` would put every rank on the same one");
    }
    for (i, device) in devices.iter().enumerate() {
        if !matches!(device, DeviceSpec::Cpu | DeviceSpec::TchCpu) && devices[..i].contains(device) {
            eprintln!("warning: --devices names {device} more than once: those ranks share its memory and its time");
        }
    }
    // The ranks split the CPU threads, each on a pool of its own: on one shared pool each rank's
    // products queued behind the other's (GPT-2 124M on two CPU ranks: 0.85× one process's speed).
    let threads = runtime.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let per_rank = (threads / devices.len()).max(1);
    let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
    eprintln!("{} data-parallel ranks in this process, on {}, {per_rank} CPU thread(s) each", devices.len(), names.join(", "));
    let rank_main = |rank: usize| {
        let world = pipelines::distributed::current();
        let rank_runtime = RuntimeArgs { device: devices[rank], threads: None, seed: runtime.seed };
        gpt::backend::on_own_cpu_threads(per_rank, &format!("rank {rank}"), || pipelines::distributed::in_world(world, || train(rank_runtime)))?
    };
    // CUDA GPUs average their gradients between themselves (NCCL); the others through host memory.
    match gpt::backend::collective::device_group(devices) {
        Ok(group) => {
            eprintln!("gradients averaged on the GPUs by NCCL");
            pipelines::distributed::run_ranks_on_device_group(group, timeout, rank_main)
        }
        Err(why) => {
            if devices.iter().any(|d| d.is_gpu()) {
                eprintln!("gradients averaged through host memory: {why}");
            }
            pipelines::distributed::run_ranks(devices.len(), timeout, rank_main)
        }
    }
}
