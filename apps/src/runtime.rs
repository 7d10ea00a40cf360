//! Flags every model-running command shares: which device, how many CPU threads, which seed (the
//! inference commands' `--dtype` and `--quantize` are `pipelines::runs::WeightArgs`).

use anyhow::Result;
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
