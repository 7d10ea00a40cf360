//! Matrix views over f32 memory and the one call into the `gemm` crate (the GEMM Flex itself
//! uses) that the fused products and attention make.

use burn::backend::flex::FlexTensor;
use burn::tensor::DType;

/// A matrix in memory: element `(i, j)` at `ptr + i·row_stride + j·col_stride`; of f32 values,
/// or of bf16 ones (a frozen bf16 weight, which the bf16 products pack as stored).
#[derive(Debug, Clone, Copy)]
pub(super) struct Matrix<T = f32> {
    pub ptr: *const T,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl<T: Copy> Matrix<T> {
    /// `rows × cols` values from `values[0]` on, rows `row_stride` apart, columns adjacent.
    pub fn rows_of(values: &[T], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self { ptr: values.as_ptr(), rows, cols, row_stride: row_stride as isize, col_stride: 1 }
    }

    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    pub fn at(&self, i: usize, j: usize) -> T {
        // SAFETY: (i, j) is inside the view, which is inside its storage.
        unsafe { *self.ptr.offset(i as isize * self.row_stride + j as isize * self.col_stride) }
    }
}

impl Matrix {
    /// A 2-D Flex f32 tensor in any layout, strided views included (the GEMM reads them as they are).
    pub fn of(flex: &FlexTensor) -> Self {
        let layout = flex.layout();
        let (shape, strides) = (layout.shape(), layout.strides());
        assert!(shape.num_dims() == 2 && flex.dtype() == DType::F32, "a 2-D f32 tensor");
        let storage = flex.storage::<f32>();
        // SAFETY: the offset is inside the storage (Flex's layout invariant).
        let ptr = unsafe { storage.as_ptr().add(layout.start_offset()) };
        Self { ptr, rows: shape[0], cols: shape[1], row_stride: strides[0], col_stride: strides[1] }
    }
}

/// `dst = a·b` (`dst += a·b` when `accumulate`), at the products' precision
/// ([`crate::backend::set_matmul_precision`]): `a.rows × b.cols` values written at `dst`, rows
/// `dst_row` apart. `threads`: let the GEMM split a large product over rayon's pool (below ~7 M
/// multiply-adds a thread hop costs more than it saves: Flex's own threshold).
///
/// # Safety
/// `dst` has room for those rows; without `accumulate` they need not be initialised (the GEMM
/// writes every value without reading it). `a` and `b` lie inside live buffers.
pub(super) unsafe fn gemm_into(dst: *mut f32, dst_row: usize, a: Matrix, b: Matrix, accumulate: bool, threads: bool) {
    if super::bf16::enabled() {
        // SAFETY: as the caller promises; `enabled` checked the CPU.
        return unsafe { super::bf16::gemm_into(dst, dst_row, a, b, accumulate, threads) };
    }
    if super::f16::enabled() {
        // SAFETY: as the caller promises.
        return unsafe { super::f16::gemm_into(dst, dst_row, a, b, accumulate, threads) };
    }
    // SAFETY: as the caller promises.
    unsafe { gemm_f32(dst, dst_row, a, b, accumulate, threads) }
}

/// [`gemm_into`] in f32, whatever the products' precision (the bf16 tests' reference, and the
/// f16 emulation's GEMM).
///
/// # Safety
/// As [`gemm_into`].
pub(super) unsafe fn gemm_f32(dst: *mut f32, dst_row: usize, a: Matrix, b: Matrix, accumulate: bool, threads: bool) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    debug_assert_eq!(k, b.rows);
    let parallelism = if threads && m * n * k >= 192 * 192 * 192 && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: as the caller promises.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row as isize,
            accumulate,
            a.ptr,
            a.col_stride,
            a.row_stride,
            b.ptr,
            b.col_stride,
            b.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `out = a·b` through [`gemm_into`], at the products' precision, on rayon's pool for a large
/// product: for benchmarks of the products outside this crate. `a` holds `[m, k]` row-major, or
/// `[k, m]` when `a_transposed` (the product then reads it as a transposed view, as backward
/// does); `b` likewise `[k, n]` or `[n, k]`; `out` `[m, n]`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(out: &mut [f32], a: &[f32], a_transposed: bool, b: &[f32], b_transposed: bool, m: usize, k: usize, n: usize) {
    assert!(out.len() == m * n && a.len() == m * k && b.len() == k * n, "matmul: lengths do not match [{m}, {k}]·[{k}, {n}]");
    let a = if a_transposed { Matrix::rows_of(a, k, m, m).t() } else { Matrix::rows_of(a, m, k, k) };
    let b = if b_transposed { Matrix::rows_of(b, n, k, k).t() } else { Matrix::rows_of(b, k, n, n) };
    // SAFETY: `out` holds m·n values; the views are inside `a` and `b` (lengths asserted).
    unsafe { gemm_into(out.as_mut_ptr(), n, a, b, false, true) }
}
