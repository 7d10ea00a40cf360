//! Gradients averaged by the backend between the devices of one process, without a trip through
//! host memory: Burn's `all_reduce`, which is NCCL on CUDA (CubeCL loads `libnccl.so` at run
//! time). The CPU backends and LibTorch have no such transport: ranks on them exchange gradients
//! through host memory (`pipelines::distributed`).

use burn::prelude::*;
use burn::tensor::distributed::{ReduceOperation, all_reduce};

use super::DeviceSpec;

/// What turns the devices' own all-reduce off (`LLMFS_NCCL=0`): the gradients then go through
/// host memory, as on the CPU. To compare the two, or to get round an NCCL that misbehaves.
pub const NCCL_ENV: &str = "LLMFS_NCCL";

/// The devices of `specs`, in order, where the backend averages tensors between them itself:
/// every one a CUDA device (CubeCL's), NCCL's library found, and [`NCCL_ENV`] not `0`. Else why
/// not, for the run's log.
pub fn device_group(specs: &[DeviceSpec]) -> Result<Vec<Device>, String> {
    if !specs.iter().all(|spec| matches!(spec, DeviceSpec::Cuda(_))) {
        return Err("only CUDA devices (not LibTorch's) average between themselves".into());
    }
    if std::env::var(NCCL_ENV).is_ok_and(|value| value.trim() == "0") {
        return Err(format!("{NCCL_ENV}=0"));
    }
    nccl_found()?;
    specs.iter().map(|spec| spec.resolve().map_err(|e| e.to_string())).collect()
}

/// Whether CubeCL will find NCCL: it asks cudarc this same question when it opens a CUDA device
/// and refuses collectives without it, panicking in the rank that asks.
#[cfg(feature = "cuda")]
fn nccl_found() -> Result<(), String> {
    // SAFETY: only tries to dlopen each of cudarc's candidate names for the library.
    if unsafe { cudarc::nccl::sys::is_culib_present() } {
        Ok(())
    } else {
        Err("NCCL's library (libnccl.so) was not found: install NCCL (Debian/Ubuntu: libnccl-dev), or put a directory with libnccl.so on LD_LIBRARY_PATH".into())
    }
}

#[cfg(not(feature = "cuda"))]
fn nccl_found() -> Result<(), String> {
    Err("this llmfs was built without the `cuda` feature".into())
}

/// The number of the CUDA device (CubeCL's) that `spec` moved on by `by` trains on, as a rank
/// of an `mpirun` world moves it by its node-local rank: `cuda:N` gives N + `by`, `auto` gives
/// `by` where it picks `cuda:by`. None for every other device.
pub fn cuda_number(spec: DeviceSpec, by: usize) -> Option<usize> {
    match spec.on_gpu(by) {
        DeviceSpec::Cuda(number) => Some(number),
        DeviceSpec::Auto => auto_picks_cuda(by),
        _ => None,
    }
}

#[cfg(feature = "cuda")]
fn auto_picks_cuda(number: usize) -> Option<usize> {
    let device = DeviceSpec::Auto.resolve_on_gpu(number).ok()?;
    (device == Device::cuda(number)).then_some(number)
}

#[cfg(not(feature = "cuda"))]
fn auto_picks_cuda(_number: usize) -> Option<usize> {
    None
}

/// Where the processes of one run meet to form NCCL's group: NCCL's first rank listens at this
/// address and every process makes its group's id from it. Burn mints an NCCL id in each process
/// and has no way to hand one over, so without this each process would form a group of its own.
pub const NCCL_COMM_ID_ENV: &str = "NCCL_COMM_ID";

/// Makes the processes of this node meet on `port` of the loopback interface when they form
/// their NCCL group (see [`NCCL_COMM_ID_ENV`]); every process must be given the same port.
///
/// # Safety
/// No other thread may read or write the environment meanwhile (`std::env::set_var`): call it
/// before the run's device and worker threads start.
pub unsafe fn meet_on_port(port: u16) {
    // SAFETY: the caller's promise.
    unsafe { std::env::set_var(NCCL_COMM_ID_ENV, format!("127.0.0.1:{port}")) }
}

/// `tensor`'s element-wise mean over `devices`: every rank passes its own tensor (on its own device,
/// one of `devices`) and the same `devices`, and the ranks call it for the same tensors in the
/// same order; each gets the mean on its device. NCCL's average: a sum in f32 over the ranks,
/// then divided by their number, the same values on every rank.
pub fn all_reduce_mean<const D: usize>(tensor: Tensor<D>, devices: &[Device]) -> Tensor<D> {
    all_reduce(tensor, ReduceOperation::Mean, devices.to_vec()).resolve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cuda_devices_average_between_themselves() {
        let why = device_group(&[DeviceSpec::Cpu, DeviceSpec::Cpu]).unwrap_err();
        assert!(why.contains("only CUDA devices"), "{why}");
        let why = device_group(&[DeviceSpec::TchCuda(0), DeviceSpec::TchCuda(1)]).unwrap_err();
        assert!(why.contains("only CUDA devices"), "{why}");
        #[cfg(not(feature = "cuda"))]
        assert!(device_group(&[DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]).unwrap_err().contains("without the `cuda` feature"));
    }

    #[test]
    fn a_ranks_cuda_number_moves_with_its_node_local_rank() {
        assert_eq!(cuda_number(DeviceSpec::Cuda(0), 3), Some(3));
        assert_eq!(cuda_number(DeviceSpec::Cuda(2), 1), Some(3));
        for spec in [DeviceSpec::Cpu, DeviceSpec::TchCuda(0), DeviceSpec::Wgpu] {
            assert_eq!(cuda_number(spec, 1), None, "{spec}");
        }
        #[cfg(not(feature = "cuda"))]
        assert_eq!(cuda_number(DeviceSpec::Auto, 1), None);
    }
}
