//! Run-time backend choice: `--device auto|cpu|cuda[:N]|wgpu|vulkan|metal|tch-cpu|tch-cuda[:N]|tch-mps`.
//!
//! Burn 0.22 picks the backend from a `Device` value, so one build can hold several backends;
//! which ones exist is decided by cargo features. Asking for one that was not compiled in is an
//! error that names the feature to enable.
//!
//! The `tch-*` devices are LibTorch through burn-tch (feature `tch`, PyTorch 2.9.0 from
//! scripts/setup-tch.sh). Burn 0.22 deprecates the crate and its `Device::libtorch*()`
//! constructors; the devices are made as `Device::new(LibTorchDevice::…)`, which names the same
//! backend without the deprecated constructors.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

use crate::error::{GptError, Result};

/// A device as the user names it on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The best compiled-in device that initialises: CUDA (CubeCL, then LibTorch's), Metal,
    /// LibTorch's MPS, Vulkan, a wgpu GPU, then the CPU (Flex; LibTorch's CPU only in a build
    /// without Flex).
    #[default]
    Auto,
    /// Burn's Flex backend (pure-Rust CPU).
    Cpu,
    Cuda(usize),
    Wgpu,
    Vulkan,
    Metal,
    /// LibTorch on the CPU (feature `tch`).
    TchCpu,
    /// LibTorch on CUDA GPU `N` (feature `tch`, a CUDA build of PyTorch).
    TchCuda(usize),
    /// LibTorch on Apple's Metal Performance Shaders (feature `tch`, macOS).
    TchMps,
}

impl FromStr for DeviceSpec {
    type Err = GptError;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        Ok(match lower.as_str() {
            "auto" => Self::Auto,
            "cpu" | "flex" => Self::Cpu,
            "cuda" => Self::Cuda(0),
            "wgpu" => Self::Wgpu,
            "vulkan" => Self::Vulkan,
            "metal" => Self::Metal,
            "tch-cpu" => Self::TchCpu,
            "tch-cuda" => Self::TchCuda(0),
            "tch-mps" => Self::TchMps,
            other => {
                let index = |prefix: &str| other.strip_prefix(prefix).and_then(|i| i.parse::<usize>().ok());
                match (index("cuda:"), index("tch-cuda:")) {
                    (Some(i), _) => Self::Cuda(i),
                    (_, Some(i)) => Self::TchCuda(i),
                    _ => {
                        return Err(GptError::Device(format!(
                            "unknown device {s:?}: expected auto, cpu, cuda, cuda:N, wgpu, vulkan, metal, \
                             tch-cpu, tch-cuda, tch-cuda:N or tch-mps"
                        )));
                    }
                }
            }
        })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
            Self::Wgpu => write!(f, "wgpu"),
            Self::Vulkan => write!(f, "vulkan"),
            Self::Metal => write!(f, "metal"),
            Self::TchCpu => write!(f, "tch-cpu"),
            Self::TchCuda(i) => write!(f, "tch-cuda:{i}"),
            Self::TchMps => write!(f, "tch-mps"),
        }
    }
}

fn not_compiled(spec: DeviceSpec, feature: &str) -> GptError {
    GptError::Device(format!(
        "device `{spec}` is not compiled into this build; rebuild with `--features {feature}` \
         (e.g. `cargo build --release --features {feature}`)"
    ))
}

/// The cargo features this build was compiled with, e.g. `["flex", "wgpu"]`.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg!(feature = "flex") {
        out.push("flex");
    }
    if cfg!(feature = "cuda") {
        out.push("cuda");
    }
    if cfg!(feature = "metal") {
        out.push("metal");
    }
    if cfg!(feature = "vulkan") {
        out.push("vulkan");
    }
    if cfg!(feature = "wgpu") {
        out.push("wgpu");
    }
    if cfg!(feature = "tch") {
        out.push("tch");
    }
    out
}

impl DeviceSpec {
    /// The device named by the environment variable `var` (any `--device` name), the CPU when it is
    /// unset or empty. The test suites read `LLMFS_TEST_DEVICE` through this, so every compiled
    /// backend runs the same parity tests: `LLMFS_TEST_DEVICE=cuda cargo test --features cuda`.
    pub fn from_env(var: &str) -> Result<Self> {
        match std::env::var(var) {
            Ok(name) if !name.trim().is_empty() => {
                name.parse().map_err(|e: GptError| GptError::Device(format!("${var}: {e}")))
            }
            _ => Ok(Self::Cpu),
        }
    }

    /// Whether this names a GPU backend (`Auto` does not: it may end on the CPU). GPU f32 matmuls
    /// run in TF32 on tensor cores where the hardware has them (cubek-matmul picks it for f32
    /// inputs), ~1e-3 relative error per product instead of ~1e-7 on the CPU: numerical
    /// comparisons need wider tolerances there.
    pub fn is_gpu(self) -> bool {
        matches!(self, Self::Cuda(_) | Self::Wgpu | Self::Vulkan | Self::Metal | Self::TchCuda(_) | Self::TchMps)
    }

    /// Whether this names a LibTorch device (`tch-*`).
    pub fn is_tch(self) -> bool {
        matches!(self, Self::TchCpu | Self::TchCuda(_) | Self::TchMps)
    }

    /// The Burn device for this spec (without autodiff). `Auto` probes the GPUs it was built with.
    pub fn resolve(self) -> Result<Device> {
        self.resolve_on_gpu(0)
    }

    /// This spec with its CUDA device numbers moved on by `by`: rank r of a node's data-parallel
    /// ranks trains on `cuda:N+r` (as `torchrun`'s `LOCAL_RANK` picks a GPU). Other devices have
    /// no number to move: the ranks share them.
    pub fn on_gpu(self, by: usize) -> Self {
        match self {
            Self::Cuda(i) => Self::Cuda(i + by),
            Self::TchCuda(i) => Self::TchCuda(i + by),
            other => other,
        }
    }

    /// [`resolve`](Self::resolve) for the ranks of a node: [`on_gpu`](Self::on_gpu)`(by)`, and
    /// `Auto`'s CUDA candidates moved on by `by` too. A moved CUDA device must initialise (an
    /// error names it, not a panic at its first use: a node with fewer GPUs than ranks).
    pub fn resolve_on_gpu(self, by: usize) -> Result<Device> {
        crate::backend::allocator::keep_freed_memory();
        let spec = self.on_gpu(by);
        if by > 0 && spec != self {
            let device = spec.resolve_on_gpu(0)?;
            if !initialises(&device) {
                return Err(GptError::Device(format!(
                    "device `{spec}` (`{self}` moved on by this node's rank {by}) does not initialise: \
                     does this node have fewer GPUs than ranks?"
                )));
            }
            return Ok(device);
        }
        match self {
            Self::Auto => auto_device(by),
            Self::Cpu => {
                #[cfg(feature = "flex")]
                return Ok(Device::flex());
                #[cfg(not(feature = "flex"))]
                return Err(not_compiled(self, "flex"));
            }
            Self::Cuda(_index) => {
                #[cfg(feature = "cuda")]
                return Ok(Device::cuda(_index));
                #[cfg(not(feature = "cuda"))]
                return Err(not_compiled(self, "cuda"));
            }
            Self::Wgpu => {
                #[cfg(feature = "wgpu")]
                return Ok(Device::wgpu(DeviceKind::DefaultDevice));
                #[cfg(not(feature = "wgpu"))]
                return Err(not_compiled(self, "wgpu"));
            }
            Self::Vulkan => {
                #[cfg(feature = "vulkan")]
                return Ok(Device::vulkan(DeviceKind::DefaultDevice));
                #[cfg(not(feature = "vulkan"))]
                return Err(not_compiled(self, "vulkan"));
            }
            Self::Metal => {
                #[cfg(feature = "metal")]
                return Ok(Device::metal(DeviceKind::DefaultDevice));
                #[cfg(not(feature = "metal"))]
                return Err(not_compiled(self, "metal"));
            }
            Self::TchCpu | Self::TchCuda(_) | Self::TchMps => {
                #[cfg(feature = "tch")]
                return tch::device(self);
                #[cfg(not(feature = "tch"))]
                return Err(not_compiled(self, "tch"));
            }
        }
    }
}

/// LibTorch (burn-tch). Burn 0.22 deprecates burn-tch and its `Device::libtorch()`,
/// `libtorch_cuda(n)`, `libtorch_mps()` constructors ("use a CubeCL backend"); a `Device` is made
/// from the backend's own device type with `Device::new`, as for any backend, which still works.
#[cfg(feature = "tch")]
#[allow(deprecated)]
mod tch {
    use burn::backend::{DispatchDevice, LibTorchDevice};
    use burn::prelude::Device;

    use super::DeviceSpec;
    use crate::error::{GptError, Result};

    pub(super) fn libtorch_device(spec: DeviceSpec) -> Option<LibTorchDevice> {
        match spec {
            DeviceSpec::TchCpu => Some(LibTorchDevice::Cpu),
            DeviceSpec::TchCuda(index) => Some(LibTorchDevice::Cuda(index)),
            DeviceSpec::TchMps => Some(LibTorchDevice::Mps),
            _ => None,
        }
    }

    /// The device; a GPU one only if LibTorch can reach it (tch panics on first use otherwise,
    /// deep inside a model load).
    pub(super) fn device(spec: DeviceSpec) -> Result<Device> {
        let device = libtorch_device(spec).ok_or_else(|| GptError::Device(format!("{spec} is not a LibTorch device")))?;
        let device = Device::new(device);
        if spec != DeviceSpec::TchCpu && !super::initialises(&device) {
            let why = match spec {
                DeviceSpec::TchMps => "LibTorch has no MPS device here (macOS on Apple silicon only)",
                _ => "LibTorch finds no such CUDA device (no GPU or driver, or a CPU-only PyTorch)",
            };
            return Err(GptError::Device(format!("device `{spec}`: {why}")));
        }
        Ok(device)
    }

    /// Whether `device` is a LibTorch device, with or without autodiff.
    pub(super) fn is_libtorch(device: &Device) -> bool {
        matches!(device.clone().without_autodiff().as_dispatch(), DispatchDevice::LibTorch(_))
    }

    /// LibTorch's intra-op threads (its own pool, not rayon's).
    pub(super) fn set_threads(threads: usize) {
        let threads = i32::try_from(threads).unwrap_or(i32::MAX);
        // SAFETY: a plain setter of ATen's thread count, called before any LibTorch work.
        unsafe { torch_sys::at_set_num_threads(threads) };
    }
}

/// Whether a device can run a tiny computation. GPU runtimes panic when no driver or adapter is
/// present, so the probe catches the panic (and keeps its message off the terminal).
fn initialises(device: &Device) -> bool {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(|| {
        let x = Tensor::<1>::from_floats([1.0, 2.0], device);
        x.sum().into_scalar::<f32>() == 3.0
    })
    .unwrap_or(false);
    std::panic::set_hook(previous);
    ok
}

/// The first compiled-in device that initialises, CUDA's numbered `gpu` (a node's rank `gpu`).
/// A rank past the node's GPUs is an error, not a fall back to the next backend (the CPU).
fn auto_device(gpu: usize) -> Result<Device> {
    #[allow(unused_mut)]
    let mut candidates: Vec<Device> = Vec::new();
    // CUDA first; probed here, once, so that a rank past the node's GPUs is told apart.
    #[cfg(feature = "cuda")]
    {
        let cuda = Device::cuda(gpu);
        if initialises(&cuda) {
            return Ok(cuda);
        }
        if gpu > 0 && initialises(&Device::cuda(0)) {
            return Err(GptError::Device(format!(
                "device `cuda:{gpu}` (`auto` moved on by this node's rank {gpu}) does not initialise, though `cuda:0` does: \
                 does this node have fewer GPUs than ranks?"
            )));
        }
    }
    #[cfg(feature = "tch")]
    if cfg!(not(target_os = "macos")) {
        candidates.extend(tch::libtorch_device(DeviceSpec::TchCuda(gpu)).map(Device::new));
    }
    let _ = gpu;
    #[cfg(feature = "metal")]
    candidates.push(Device::metal(DeviceKind::DefaultDevice));
    #[cfg(feature = "tch")]
    if cfg!(target_os = "macos") {
        candidates.extend(tch::libtorch_device(DeviceSpec::TchMps).map(Device::new));
    }
    // Only real GPUs: a CPU adapter (e.g. Mesa's lavapipe) is slower than the Flex backend.
    #[cfg(feature = "vulkan")]
    candidates.push(Device::vulkan(DeviceKind::DiscreteGpu(0)));
    #[cfg(feature = "wgpu")]
    candidates.push(Device::wgpu(DeviceKind::DiscreteGpu(0)));
    for device in candidates {
        if initialises(&device) {
            return Ok(device);
        }
    }
    #[cfg(feature = "flex")]
    return Ok(Device::flex());
    #[cfg(all(not(feature = "flex"), feature = "tch"))]
    return tch::device(DeviceSpec::TchCpu);
    #[cfg(not(any(feature = "flex", feature = "tch")))]
    return Err(GptError::Device(
        "no compiled-in device initialised (and the CPU backend is not compiled: enable feature `flex`)".into(),
    ));
}

/// Whether `device` is a LibTorch (`tch-*`) device, with or without autodiff (always false when
/// feature `tch` is not compiled in).
pub fn is_libtorch(device: &Device) -> bool {
    #[cfg(feature = "tch")]
    {
        tch::is_libtorch(device)
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = device;
        false
    }
}

/// Whether `device` is the CPU (Flex) backend, with or without autodiff (always false when Flex
/// is not compiled in).
pub fn is_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        device.clone().without_autodiff() == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Runs `f` on one of rayon's workers when `device` is Flex with more than one CPU thread, else
/// here. The CPU kernels split each product over rayon's pool: from a worker, the product keeps
/// half and hands half to a sibling; from any other thread, all of it goes through rayon's queue
/// while the caller sleeps, and the ~50 products of a decoded token each pay that round trip (a
/// decoded token ran 5-10 % faster on a worker, GPT-2 124M, 2 threads).
pub fn on_cpu_workers<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if is_flex(device) && rayon::current_thread_index().is_none() && rayon::current_num_threads() > 1 {
        rayon::scope(|_| f())
    } else {
        f()
    }
}

/// Runs `f` on a rayon pool of its own, of `threads` threads named `name N`: the CPU kernels
/// called inside split their work over it alone. One rank of several in one process gets its
/// share of the cores this way, as an MPI rank gets its own `--threads`.
pub fn on_own_cpu_threads<R: Send>(threads: usize, name: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
    let name = name.to_string();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(move |i| format!("{name} {i}"))
        // The caller's work runs on a worker: give it a main thread's room, not a worker's 2 MiB.
        .stack_size(64 << 20)
        .build()
        .map_err(|e| GptError::Device(format!("cannot start {threads} CPU threads: {e}")))?;
    Ok(pool.install(f))
}

/// Applies `--threads` when given (Flex and its matmuls use rayon's global pool, LibTorch its own
/// intra-op pool: both are set; all cores otherwise). Call once, early.
pub fn set_cpu_threads(threads: Option<usize>) -> Result<()> {
    let Some(threads) = threads else { return Ok(()) };
    if threads == 0 {
        return Err(GptError::Device("--threads must be at least 1".into()));
    }
    #[cfg(feature = "tch")]
    tch::set_threads(threads);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| GptError::Device(format!("cannot set {threads} CPU threads: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("metal".parse::<DeviceSpec>().unwrap().to_string(), "metal");
        let err = "tpu".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(err.contains("unknown device \"tpu\""), "{err}");
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn parses_and_prints_the_libtorch_devices() {
        assert_eq!("tch-cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::TchCpu);
        assert_eq!("TCH-CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::TchCuda(0));
        assert_eq!("tch-cuda:2".parse::<DeviceSpec>().unwrap(), DeviceSpec::TchCuda(2));
        assert_eq!("tch-mps".parse::<DeviceSpec>().unwrap(), DeviceSpec::TchMps);
        for spec in [DeviceSpec::TchCpu, DeviceSpec::TchCuda(3), DeviceSpec::TchMps, DeviceSpec::Cuda(1)] {
            assert_eq!(spec.to_string().parse::<DeviceSpec>().unwrap(), spec, "{spec}");
        }
        assert_eq!(DeviceSpec::TchCuda(0).to_string(), "tch-cuda:0");
        for bad in ["tch", "tch-cuda:", "tch-cuda:x", "tch-cpu:0", "tch-vulkan"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("tch-cpu, tch-cuda, tch-cuda:N or tch-mps"), "{bad}: {err}");
        }
        assert!(DeviceSpec::TchCuda(0).is_gpu() && DeviceSpec::TchMps.is_gpu() && !DeviceSpec::TchCpu.is_gpu());
        assert!(DeviceSpec::TchCpu.is_tch() && DeviceSpec::TchMps.is_tch() && !DeviceSpec::Cuda(0).is_tch());
        assert_eq!(compiled_backends().contains(&"tch"), cfg!(feature = "tch"));
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn libtorch_without_the_feature_names_it() {
        for spec in [DeviceSpec::TchCpu, DeviceSpec::TchCuda(1), DeviceSpec::TchMps] {
            let err = spec.resolve().unwrap_err().to_string();
            assert!(err.contains(&format!("device `{spec}` is not compiled")) && err.contains("--features tch"), "{err}");
        }
    }

    #[cfg(feature = "tch")]
    #[test]
    fn libtorch_cpu_resolves_and_is_told_apart() {
        let device = DeviceSpec::TchCpu.resolve().unwrap();
        assert!(is_libtorch(&device) && is_libtorch(&device.clone().autodiff()) && !is_flex(&device));
        assert!(initialises(&device));
        #[cfg(feature = "flex")]
        assert!(!is_libtorch(&Device::flex()));
    }

    #[test]
    fn reads_the_device_from_the_environment() {
        // Variables only this test uses: no other test sees them change.
        // SAFETY: set before any thread of this test reads the environment.
        unsafe {
            std::env::set_var("LLMFS_UNIT_DEVICE_A", "cuda:1");
            std::env::set_var("LLMFS_UNIT_DEVICE_B", "tpu");
            std::env::set_var("LLMFS_UNIT_DEVICE_C", " ");
        }
        assert_eq!(DeviceSpec::from_env("LLMFS_UNIT_DEVICE_A").unwrap(), DeviceSpec::Cuda(1));
        let err = DeviceSpec::from_env("LLMFS_UNIT_DEVICE_B").unwrap_err().to_string();
        assert!(err.contains("$LLMFS_UNIT_DEVICE_B") && err.contains("tpu"), "{err}");
        assert_eq!(DeviceSpec::from_env("LLMFS_UNIT_DEVICE_C").unwrap(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::from_env("LLMFS_UNIT_DEVICE_UNSET").unwrap(), DeviceSpec::Cpu);
        assert!(DeviceSpec::Cuda(0).is_gpu() && DeviceSpec::Wgpu.is_gpu());
        assert!(!DeviceSpec::Cpu.is_gpu() && !DeviceSpec::Auto.is_gpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_names_the_feature() {
        let err = DeviceSpec::Cuda(0).resolve().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[cfg(feature = "flex")]
    #[test]
    fn cpu_and_auto_resolve_without_a_gpu() {
        assert!(DeviceSpec::Cpu.resolve().is_ok());
        assert!(DeviceSpec::Auto.resolve().is_ok());
    }

    #[test]
    fn a_nodes_ranks_move_on_the_cuda_numbers_only() {
        assert_eq!(DeviceSpec::Cuda(0).on_gpu(3), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(2).on_gpu(1), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::TchCuda(1).on_gpu(2), DeviceSpec::TchCuda(3));
        for shared in [DeviceSpec::Cpu, DeviceSpec::Auto, DeviceSpec::Metal, DeviceSpec::Wgpu, DeviceSpec::TchCpu] {
            assert_eq!(shared.on_gpu(5), shared);
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn ranks_share_the_cpu_and_auto_falls_back_to_it() {
        assert_eq!(DeviceSpec::Cpu.resolve_on_gpu(3).unwrap(), Device::flex());
        if !cfg!(any(feature = "cuda", feature = "tch", feature = "metal", feature = "vulkan", feature = "wgpu")) {
            assert_eq!(DeviceSpec::Auto.resolve_on_gpu(3).unwrap(), Device::flex());
        }
    }
}
