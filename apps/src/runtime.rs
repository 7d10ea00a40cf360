//! Flags every model-running command shares: which device, how many CPU threads, which seed; and
//! `--dtype`, which the commands that only run a model (no training) share.

use anyhow::Result;
use gpt::DeviceSpec;
use gpt::burn::prelude::Device;
use gpt::io::WeightDtype;

#[derive(clap::Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// auto, cpu, cuda, cuda:N, wgpu, vulkan or metal (a backend must be compiled in: see --help of cargo features)
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// CPU threads for the CPU backend (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed for sampling and for random (`random:<preset>`) models
    #[arg(long, default_value_t = 123)]
    pub seed: u64,
}

impl RuntimeArgs {
    /// Applies the thread count and returns the device (without autodiff: inference).
    pub fn device(&self) -> Result<Device> {
        gpt::backend::set_cpu_threads(self.threads)?;
        let device = self.device.resolve()?;
        device.seed(self.seed);
        Ok(device)
    }
}

/// `--dtype` of the inference commands (generate, chat, serve, logits, eval …).
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct DtypeArgs {
    /// Weight matrices in memory: f32, or bf16 (half the memory and half the bytes each decoded
    /// token reads; a bf16 checkpoint is kept as stored); activations, norms and biases stay f32
    #[arg(long, default_value = "f32")]
    pub dtype: WeightDtype,
}
