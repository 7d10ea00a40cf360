//! Flex tensors as the kernels see them: raw f32 values, with or without an autodiff handle, and
//! the one way a kernel's output joins the autodiff graph.

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, NodeGuard, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::DType;

/// A tensor of `Autodiff<Flex>`: the values and their place in the graph.
pub(super) type TrackedTensor = <Autodiff<Flex> as burn::backend::BackendTypes>::FloatTensorPrimitive;

/// A Flex f32 tensor on either a plain or an autodiff device: the raw values, and the autodiff
/// handle when there is one.
pub(super) enum FlexInput {
    Plain(FlexTensor),
    Tracked(TrackedTensor),
}

impl FlexInput {
    pub(super) fn of<const D: usize>(tensor: &Tensor<D>) -> Option<Self> {
        if tensor.dtype() != DType::F32 || tensor.device().without_autodiff() != Device::flex() {
            return None;
        }
        if tensor.device().is_autodiff() {
            tensor.clone().try_into_primitive::<Autodiff<Flex>>().ok().map(Self::Tracked)
        } else {
            tensor.clone().try_into_primitive::<Flex>().ok().map(Self::Plain)
        }
    }

    /// The values, made contiguous when they are a strided view.
    pub(super) fn values(&self) -> FlexTensor {
        contiguous(self.raw())
    }

    /// The autodiff handle, `None` for a plain tensor.
    pub(super) fn tracked(self) -> Option<TrackedTensor> {
        match self {
            Self::Tracked(tracked) => Some(tracked),
            Self::Plain(_) => None,
        }
    }

    /// The values as they are laid out.
    pub(super) fn raw(&self) -> FlexTensor {
        match self {
            Self::Plain(flex) => flex.clone(),
            Self::Tracked(tracked) => tracked.primitive().clone(),
        }
    }
}

/// `flex`, or a contiguous copy when it is a strided view.
pub(super) fn contiguous(flex: FlexTensor) -> FlexTensor {
    if flex.layout().contiguous_offsets().is_some() { flex } else { flex.to_contiguous() }
}

/// The values of a contiguous tensor.
pub(super) fn slice(flex: &FlexTensor) -> &[f32] {
    let (start, end) = flex.layout().contiguous_offsets().expect("made contiguous");
    &flex.storage::<f32>()[start..end]
}

/// The values of a contiguous bf16 tensor (weights under `--dtype bf16`).
pub(super) fn slice_bf16(flex: &FlexTensor) -> &[half::bf16] {
    let (start, end) = flex.layout().contiguous_offsets().expect("made contiguous");
    &flex.storage::<half::bf16>()[start..end]
}

/// The values of a contiguous tensor, to overwrite: in place when nothing else holds its storage,
/// in a private copy otherwise (Flex's copy-on-write).
pub(super) fn values_mut(flex: &mut FlexTensor) -> &mut [f32] {
    let (start, end) = flex.layout().contiguous_offsets().expect("made contiguous");
    &mut flex.storage_mut::<f32>()[start..end]
}

pub(super) fn flex_from(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// `out` as the output of `op` applied to the tensors of `parents`, keeping `state` for the
/// backward when autodiff tracks any of them.
pub(super) fn record<O: Backward<Flex, N>, const N: usize>(op: O, parents: [NodeGuard; N], state: O::State, out: FlexTensor) -> TrackedTensor {
    match op.prepare::<NoCheckpointing>(parents).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
