//! The bf16 panels of weights that no gradient changes, packed once and kept: every product
//! rounded and packed its weight again, a tenth of a classifier's frozen forward pass
//! (`llmfs bench finetune-cls --precision bf16-mixed`, 11 frozen GPT-2 blocks).
//!
//! An entry holds its weight's storage weakly and is found by that storage and the view of it.
//! It cannot go stale: Flex writes a tensor's values in place only through `Arc::make_mut` or
//! `Arc::get_mut`, which copy a shared storage, and on a storage no one else holds either refuse
//! (`get_mut`, with a weak reference out) or move it to a new allocation, leaving the weak
//! reference dead. A live entry's storage thus holds the values it was packed from; entries of
//! dropped or changed weights are dropped at the next lookup.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use burn::backend::flex::FlexTensor;

use super::super::gemm::Matrix;
use super::blocked::PackedB;

/// The most the entries hold together (half a model's f32 weights); past it, products pack their
/// weight every time as before.
const BUDGET_BYTES: usize = 1 << 30;

/// A view of a storage: its first value's address, shape and strides.
type View = (usize, usize, usize, isize, isize);

struct Entry {
    storage: Weak<dyn std::any::Any + Send + Sync>,
    view: View,
    packed: Arc<PackedB>,
}

impl Entry {
    fn holds(&self, storage: &Arc<dyn std::any::Any + Send + Sync>, view: View) -> bool {
        std::ptr::addr_eq(self.storage.as_ptr(), Arc::as_ptr(storage)) && self.view == view
    }
}

static ENTRIES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The panels of `b`, a view of `weight`, packed now or by an earlier product; `None` when
/// keeping them would pass the budget.
pub(super) fn packed(weight: &FlexTensor, b: Matrix) -> Option<Arc<PackedB>> {
    let storage: Arc<dyn std::any::Any + Send + Sync> = weight.data_arc();
    let view = (b.ptr as usize, b.rows, b.cols, b.row_stride, b.col_stride);
    let lookup = || {
        let mut entries = ENTRIES.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|entry| entry.storage.strong_count() > 0);
        let found = entries.iter().find(|entry| entry.holds(&storage, view)).map(|entry| entry.packed.clone());
        (found, entries.iter().map(|entry| entry.packed.bytes()).sum::<usize>())
    };
    let (found, held) = lookup();
    if found.is_some() {
        return found;
    }
    if held + PackedB::bytes_for(b.rows, b.cols) > BUDGET_BYTES {
        return None;
    }
    // Packed outside the lock: the packing runs on rayon's pool, whose threads may take other
    // products meanwhile.
    let packed = Arc::new(PackedB::pack(b));
    let mut entries = ENTRIES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(entry) = entries.iter().find(|entry| entry.holds(&storage, view)) {
        return Some(entry.packed.clone()); // packed by another thread meanwhile
    }
    entries.push(Entry { storage: Arc::downgrade(&storage), view, packed: packed.clone() });
    Some(packed)
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use super::super::super::tensor::flex_from;
    use super::super::blocked::{self, Rhs};
    use super::*;
    use crate::backend::AdamWStep;

    /// Whether an entry of `weight`'s storage (any view) is kept, after dropping dead ones.
    fn kept(storage: *const ()) -> bool {
        let mut entries = ENTRIES.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|entry| entry.storage.strong_count() > 0);
        entries.iter().any(|entry| std::ptr::addr_eq(entry.storage.as_ptr(), storage))
    }

    fn storage(weight: &FlexTensor) -> *const () {
        Arc::as_ptr(&weight.data_arc()).cast()
    }

    /// `x·W` through the kept panels of `weight`, and through a packing of its values now.
    fn products(x: &[f32], weight: &FlexTensor) -> (Vec<f32>, Vec<f32>) {
        let (k, n) = (weight.layout().shape()[0], weight.layout().shape()[1]);
        let (w, x) = (Matrix::of(weight), Matrix::rows_of(x, x.len() / k, k, k));
        let panels = packed(weight, w).expect("within the budget");
        let (mut kept, mut fresh) = (vec![0.0f32; x.rows * n], vec![0.0f32; x.rows * n]);
        // SAFETY: x.rows rows of n values; the views are inside their storage; the CPU was checked.
        unsafe {
            blocked::gemm(kept.as_mut_ptr(), n, x, Rhs::Packed(&panels), false, false);
            blocked::gemm(fresh.as_mut_ptr(), n, x, Rhs::View(w), false, false);
        }
        (kept, fresh)
    }

    fn values(n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * scale).collect()
    }

    /// A weight's panels are packed once while it lives unchanged, and never used once it has
    /// changed: in place (no one else holding it: AdamW's step), copied on write (a clone held
    /// elsewhere), or replaced through Burn's ops; an entry leaves with its weight.
    #[test]
    fn kept_panels_follow_their_weight() {
        if !super::super::avx512_bf16() {
            eprintln!("skipped: this CPU has no AVX512-BF16, the products stay f32");
            return;
        }
        let (k, n) = (70, 90);
        let x = values(5 * k, 0.01);
        let mut weight = flex_from(values(k * n, 0.1), vec![k, n]);
        let view = Matrix::of(&weight);
        let first = packed(&weight, view).expect("within the budget");
        assert!(Arc::ptr_eq(&first, &packed(&weight, view).unwrap()), "packed once");
        assert!(kept(storage(&weight)));
        drop(first);

        // In place: the storage is moved, the entry dies with the old allocation.
        let before = storage(&weight);
        weight.storage_mut::<f32>()[3] += 1.0;
        let (kept_product, fresh) = products(&x, &weight);
        assert_eq!(kept_product, fresh, "panels of the new values");
        assert!(!kept(before), "the changed storage's entry is dropped");

        // Copied on write: the clone gets new values and its own panels; the original keeps its.
        let mut copy = weight.clone();
        copy.storage_mut::<f32>()[0] = 5.0;
        let (kept_original, fresh_original) = products(&x, &weight);
        let (kept_copy, fresh_copy) = products(&x, &copy);
        assert_eq!((&kept_original, &kept_copy), (&fresh_original, &fresh_copy));
        assert_ne!(kept_original, kept_copy, "the copy's values differ");

        // AdamW's fused step, in place on the only holder, and Burn's ops.
        let step = AdamWStep { lr: 0.1, beta_1: 0.9, beta_2: 0.99, epsilon: 1e-8, weight_decay: 0.0, time: 1 };
        let param = Tensor::<2>::from_primitive::<burn::backend::Flex>(weight);
        let grad = Tensor::<2>::from_data(TensorData::new(values(k * n, 1.0), [k, n]), &Device::flex());
        let (param, _) = crate::backend::kernels::adamw_update(param, grad, None, step).unwrap_or_else(|_| panic!("fused"));
        let stepped = param.clone().try_into_primitive::<burn::backend::Flex>().unwrap();
        let (kept_product, fresh) = products(&x, &stepped);
        assert_eq!(kept_product, fresh, "panels of the stepped values");
        let scaled = param.mul_scalar(3.0).try_into_primitive::<burn::backend::Flex>().unwrap();
        let (kept_product, fresh) = products(&x, &scaled);
        assert_eq!(kept_product, fresh, "panels of the scaled values");

        // Dropped weights leave nothing behind.
        let gone = storage(&copy);
        drop(copy);
        assert!(!kept(gone));
    }
}
