//! Gradients averaged by the backend between devices (NCCL between CUDA GPUs, `--devices
//! cuda:0,cuda:1`) against the same gradients averaged through host memory, on the device
//! `LLMFS_TEST_DEVICE` names: `scripts/gpu-check.sh` runs it on CUDA, with two ranks where the
//! machine has two GPUs and one (NCCL over one rank) where it has one. Other devices have no such
//! transport, and the check is that they say so.

use crate::gpt_common::{device_spec, fixture_dir, input_ids};
use gpt::backend::DeviceSpec;
use gpt::backend::collective::device_group;
use gpt::burn::module::{Module, ModuleVisitor, Param};
use gpt::burn::optim::GradientsParams;
use gpt::burn::prelude::*;
use pipelines::distributed::{GradientBuffers, average_gradients, current, run_ranks, run_ranks_on_device_group};
use std::time::Duration;

/// Every gradient of `model` in `grads`, in parameter order, one after the other.
fn flat(model: &gpt::Gpt, grads: &GradientsParams) -> Vec<f32> {
    struct Gather<'a>(&'a GradientsParams, Vec<f32>);
    impl ModuleVisitor for Gather<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                self.1.extend(g.into_data().iter::<f32>());
            }
        }
    }
    let mut gather = Gather(grads, Vec::new());
    model.visit(&mut gather);
    gather.1
}

/// Rank `rank`'s averaged gradients: the tiny model on `spec`'s device, its own row of the
/// fixture's input (so the ranks' gradients differ), averaged in the world this thread is in.
fn averaged_on_rank(spec: DeviceSpec, rank: usize) -> anyhow::Result<Vec<f32>> {
    let device = spec.resolve()?.autodiff();
    let model = gpt::hf::load_model_dir(&fixture_dir(), &device)?;
    let ids = input_ids();
    let rows = ids.dims()[0];
    let ids = Tensor::<2, Int>::from_data(ids.into_data(), &device).slice(s![rank % rows..rank % rows + 1, ..]);
    let grads = GradientsParams::from_grads(model.forward(ids).powf_scalar(2.0).mean().backward(), &model);
    let averaged = average_gradients(&model, grads, current().as_ref(), &mut GradientBuffers::default())?;
    Ok(flat(&model, &averaged))
}

#[test]
fn gradients_averaged_on_the_devices_equal_those_averaged_through_host_memory() {
    let spec = device_spec();
    let DeviceSpec::Cuda(first) = spec else {
        let why = device_group(&[spec, spec]).unwrap_err();
        assert!(why.contains("only CUDA devices"), "{why}");
        println!("{spec}: no transport between devices ({why})");
        return;
    };
    // Two GPUs where there are two (NCCL takes each GPU once per group), else one.
    let second = DeviceSpec::Cuda(first + 1);
    let specs = if spec.resolve_on_gpu(1).is_ok() { vec![spec, second] } else { vec![spec] };
    let devices = device_group(&specs).unwrap_or_else(|why| panic!("{specs:?}: no NCCL: {why}"));
    let timeout = Duration::from_secs(120);
    let on_devices = run_ranks_on_device_group(devices, timeout, |rank| averaged_on_rank(specs[rank], rank)).unwrap();
    let through_host = run_ranks(specs.len(), timeout, |rank| averaged_on_rank(specs[rank], rank)).unwrap();
    assert_eq!(on_devices.len(), through_host.len());
    assert!(!on_devices.is_empty());
    let scale = through_host.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = on_devices.iter().zip(&through_host).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("{} rank(s) on {specs:?}: {} gradient values, largest difference {worst:e} (largest value {scale:e})", specs.len(), on_devices.len());
    // The same sums in f32 (two ranks: a + b either way), from backward passes that may order
    // their own sums differently from one run to the next on a GPU.
    assert!(worst <= 1e-5 * scale.max(1e-6), "NCCL's means differ from the host's by {worst:e}");
}
