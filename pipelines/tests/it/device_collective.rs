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

/// Which GPU a child process of [`processes_on_their_gpus_average_with_nccl`] trains on, and
/// how many processes there are: `first,number,count`.
const CHILD_ENV: &str = "LLMFS_NCCL_PROCESS";

/// NCCL between processes as `mpirun`'s ranks of one node form it (`pipelines::distributed`'s
/// `node_gpus`): each process on its own GPU, every process naming the group's GPUs, all meeting at
/// the address in `NCCL_COMM_ID`. Child processes of this test binary (one per GPU, two where the
/// machine has two) each average a tensor of their own; each must get the mean of all of them.
/// With one GPU, NCCL's group of one still has to form at that address and hand the tensor back.
#[test]
fn processes_on_their_gpus_average_with_nccl() {
    if let Ok(child) = std::env::var(CHILD_ENV) {
        return average_in_child(&child);
    }
    let spec = device_spec();
    let DeviceSpec::Cuda(first) = spec else {
        println!("{spec}: no NCCL between processes");
        return;
    };
    if let Err(why) = device_group(&[spec]) {
        panic!("{spec}: no NCCL: {why}");
    }
    let count = if spec.resolve_on_gpu(1).is_ok() { 2 } else { 1 };
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap().port();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<std::process::Child> = (0..count)
        .map(|rank| {
            std::process::Command::new(&exe)
                .args(["--exact", "device_collective::processes_on_their_gpus_average_with_nccl", "--nocapture", "--test-threads", "1"])
                .env(CHILD_ENV, format!("{first},{},{count}", first + rank))
                .env(gpt::backend::collective::NCCL_COMM_ID_ENV, format!("127.0.0.1:{port}"))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // A group that never forms waits inside NCCL for ever: give it two minutes.
    let started = std::time::Instant::now();
    let mut children = children;
    while children.iter_mut().any(|child| child.try_wait().unwrap().is_none()) {
        if started.elapsed() > Duration::from_secs(120) {
            for child in &mut children {
                let _ = child.kill();
            }
            panic!("the {count} process(es) did not finish in 120 s: NCCL's group did not form");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let outputs: Vec<_> = children.into_iter().map(|child| child.wait_with_output().unwrap()).collect();
    // Rank r sends (r + 1) · [1, 2, 3, 4]: the mean over `count` ranks is (count + 1) / 2 · [1, 2, 3, 4].
    let expected: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|v| v * (count as f32 + 1.0) / 2.0).collect();
    for (rank, output) in outputs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "process {rank} failed: {}\n{stdout}", output.status);
        let line = stdout.lines().find_map(|l| l.strip_prefix("mean: ")).unwrap_or_else(|| panic!("process {rank} printed no mean:\n{stdout}"));
        let mean: Vec<f32> = line.split(',').map(|v| v.trim().parse().unwrap()).collect();
        println!("process {rank} of {count} on cuda:{}: mean {mean:?}", first + rank);
        assert_eq!(mean, expected, "process {rank}");
    }
}

/// One process of the test above: `first,number,count`.
fn average_in_child(child: &str) {
    let [first, number, count]: [usize; 3] = child.split(',').map(|v| v.parse().unwrap()).collect::<Vec<_>>().try_into().unwrap();
    let devices: Vec<Device> = (first..first + count).map(|n| DeviceSpec::Cuda(n).resolve().unwrap()).collect();
    let own = &devices[number - first];
    let rank = (number - first) as f32;
    let tensor = Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0], own) * (rank + 1.0);
    let mean = gpt::backend::collective::all_reduce_mean(tensor, &devices);
    let values: Vec<String> = mean.into_data().iter::<f32>().map(|v| v.to_string()).collect();
    println!("mean: {}", values.join(","));
}
