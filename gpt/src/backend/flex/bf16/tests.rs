//! The bf16 products against an f64 reference on the rounded inputs (they differ only in the
//! order of the f32 additions) and against the f32 GEMM (they differ by the rounding of the
//! inputs), over odd shapes, every layout the products take, accumulation and threads; on each
//! micro-kernel, AMX's emulated where the CPU lacks it ([`super::amx_emulator`]).

use super::super::gemm::{Matrix, gemm_f32};
use super::blocked::{self, Kernel, PackedB, Rhs, forcing};
use super::pack::{MR, NR, Packer, STRIP_ROWS, pack_a, pack_b, pack_strip, panel_pairs};
use super::{amx, amx_emulator, avx512_bf16, from_bf16, gemm_into, to_bf16};

/// Whether the tests of the kernels can run here; says so when they cannot.
fn runs_here() -> bool {
    let runs = avx512_bf16();
    if !runs {
        eprintln!("skipped: this CPU has no AVX512-BF16, the products stay f32");
    }
    runs
}

/// The micro-kernels to test here: AVX512-BF16's, and AMX's, on the CPU where it has AMX, else
/// emulated. A CPU with AMX that Linux (or `LLMFS_AMX=0`) keeps from it skips it: its tile
/// configuration would load natively and its tile data fault into the emulator.
fn kernels() -> Vec<Kernel> {
    match amx::state() {
        amx::State::Used => vec![Kernel::Avx512, Kernel::Amx],
        amx::State::Absent => {
            amx_emulator::install();
            vec![Kernel::Avx512, Kernel::Amx]
        }
        refused => {
            eprintln!("note: this CPU has AMX but the products may not use it here ({refused:?}): the AMX kernel is not tested");
            vec![Kernel::Avx512]
        }
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    super::super::test_values::values(n, seed, 1.0)
}

/// How a matrix lies in memory.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Rows of `cols + 5` values: columns adjacent (a Linear layer's input, a weight).
    Rows,
    /// The transpose of a row-major matrix: rows adjacent (the views backward multiplies).
    Transposed,
    /// Neither axis adjacent: the scalar packing.
    Strided,
}

const LAYOUTS: [Layout; 3] = [Layout::Rows, Layout::Transposed, Layout::Strided];

/// A `rows × cols` matrix of random values in `layout`, and the storage it points into.
fn matrix(rows: usize, cols: usize, layout: Layout, seed: u64) -> (Vec<f32>, Matrix) {
    let (len, row_stride, col_stride) = match layout {
        Layout::Rows => (rows * (cols + 5), cols + 5, 1),
        Layout::Transposed => (cols * (rows + 3), 1, rows + 3),
        Layout::Strided => (rows * (2 * cols + 1), 2 * cols + 1, 2),
    };
    let values = random(len.max(1), seed);
    let m = Matrix { ptr: values.as_ptr(), rows, cols, row_stride: row_stride as isize, col_stride: col_stride as isize };
    (values, m)
}

fn rounded(x: f32) -> f64 {
    from_bf16(to_bf16(x)) as f64
}

/// The destination: rows `n + 2` apart, the gaps holding a sentinel that must survive;
/// `initial` in the product's values (NaN where the product must not read them).
fn destination(m: usize, n: usize, initial: &dyn Fn(usize) -> f32) -> (Vec<f32>, usize) {
    let ldc = n + 2;
    let dst = (0..m * ldc).map(|x| if x % ldc < n { initial(x) } else { 7777.0 }).collect();
    (dst, ldc)
}

/// Runs `product` on `dst` and checks every value against `reference(i, j) → (value, scale)`:
/// within `tolerance · scale`; the gaps between rows untouched.
fn check(what: &str, dst: &[f32], ldc: usize, m: usize, n: usize, tolerance: f64, reference: impl Fn(usize, usize) -> (f64, f64)) {
    for i in 0..m {
        for j in 0..ldc {
            let got = dst[i * ldc + j];
            if j >= n {
                assert_eq!(got, 7777.0, "{what}: wrote past row {i}'s end");
                continue;
            }
            let (want, scale) = reference(i, j);
            assert!((got as f64 - want).abs() <= tolerance * scale + 1e-30, "{what}: ({i}, {j}) = {got}, want {want} (scale {scale})");
        }
    }
}

/// Σₖ a·b and Σₖ |a·b| in f64, over the bf16-rounded inputs or the f32 ones.
fn dot(a: Matrix, b: Matrix, i: usize, j: usize, round: bool) -> (f64, f64) {
    let value = |x: f32| if round { rounded(x) } else { x as f64 };
    (0..a.cols).fold((0.0, 0.0), |(sum, abs), k| {
        let p = value(a.at(i, k)) * value(b.at(k, j));
        (sum + p, abs + p.abs())
    })
}

fn shapes() -> Vec<(usize, usize, usize)> {
    let dims = [1, 3, 17, 33, 100];
    let mut shapes = Vec::new();
    for m in dims {
        for n in dims {
            shapes.extend(dims.map(|k| (m, n, k)));
        }
    }
    shapes.extend([(257, 100, 33), (33, 257, 100), (100, 33, 257), (1, 257, 257), (257, 1, 257), (13, 40, 0)]);
    shapes
}

/// Every shape, layout and accumulate against f64 on the rounded inputs: only the order of the
/// f32 additions differs, so within 1e-5 of Σ|a·b| (plus |c| when accumulating).
#[test]
fn matches_f64_on_rounded_inputs() {
    if !runs_here() {
        return;
    }
    let mut seed = 1;
    for kernel in kernels() {
        for (m, n, k) in shapes() {
            for a_layout in LAYOUTS {
                for b_layout in LAYOUTS {
                    for accumulate in [false, true] {
                        seed += 1;
                        let ((_a_values, a), (_b_values, b)) = (matrix(m, k, a_layout, seed), matrix(k, n, b_layout, seed + 1000));
                        let initial = random(m * (n + 2), seed + 2000);
                        let (mut dst, ldc) = destination(m, n, &|x| if accumulate { initial[x] } else { f32::NAN });
                        // SAFETY: dst holds m rows of ldc ≥ n values; the views are inside their storage.
                        forcing(kernel, || unsafe { gemm_into(dst.as_mut_ptr(), ldc, a, b, accumulate, false) });
                        let what = format!("{kernel:?} {m}x{n}x{k} {a_layout:?}·{b_layout:?} accumulate {accumulate}");
                        check(&what, &dst, ldc, m, n, 1e-5, |i, j| {
                            let (sum, abs) = dot(a, b, i, j, true);
                            let c = if accumulate { initial[i * ldc + j] as f64 } else { 0.0 };
                            (sum + c, abs + c.abs())
                        });
                    }
                }
            }
        }
    }
}

/// Against the f32 GEMM on the unrounded inputs: rounding to bf16 (8 significant bits) moves
/// each input by at most 2⁻⁸ of itself, so each product by at most (2⁻⁷ + 2⁻¹⁶) of itself, and
/// the sums differ by at most that times Σ|a·b|, plus both sides' f32 additions (1e-5·Σ|a·b|).
#[test]
fn matches_f32_within_bf16_rounding() {
    if !runs_here() {
        return;
    }
    let tolerance = 2f64.powi(-7) + 2f64.powi(-16) + 1e-5;
    let mut seed = 10_000;
    // Blocks of m, n and k beyond the cache blocks' sizes (192 rows, 4096 columns, 256 of k).
    let mut shapes = shapes();
    shapes.push((200, 4130, 300));
    for kernel in kernels() {
        for &(m, n, k) in &shapes {
            let big = m * n * k > 1 << 24;
            // Emulated tiles take ~1 µs a multiply-add pair: the largest shape on the Rows layouts only.
            let emulated = kernel == Kernel::Amx && amx::state() != amx::State::Used;
            for a_layout in LAYOUTS {
                for b_layout in LAYOUTS {
                    if big && (matches!(a_layout, Layout::Strided) || matches!(b_layout, Layout::Strided)) {
                        continue;
                    }
                    if big && emulated && !(matches!(a_layout, Layout::Rows) && matches!(b_layout, Layout::Rows)) {
                        continue;
                    }
                    for accumulate in [false, true] {
                        seed += 1;
                        let ((_a_values, a), (_b_values, b)) = (matrix(m, k, a_layout, seed), matrix(k, n, b_layout, seed + 1000));
                        let initial = random(m * (n + 2), seed + 2000);
                        let start = |x: usize| if accumulate { initial[x] } else { f32::NAN };
                        let ((mut ours, ldc), (mut f32s, _)) = (destination(m, n, &start), destination(m, n, &start));
                        // SAFETY: as above.
                        unsafe {
                            forcing(kernel, || gemm_into(ours.as_mut_ptr(), ldc, a, b, accumulate, false));
                            gemm_f32(f32s.as_mut_ptr(), ldc, a, b, accumulate, false);
                        }
                        let what = format!("{kernel:?} {m}x{n}x{k} {a_layout:?}·{b_layout:?} accumulate {accumulate}");
                        check(&what, &ours, ldc, m, n, tolerance, |i, j| {
                            let abs = (0..k).map(|l| (a.at(i, l) as f64 * b.at(l, j) as f64).abs()).sum::<f64>();
                            let c = if accumulate { initial[i * ldc + j] as f64 } else { 0.0 };
                            (f32s[i * ldc + j] as f64, abs + c.abs() * 1e-5 / tolerance)
                        });
                    }
                }
            }
        }
    }
}

/// Views (and the operands made of them) for a thread pool's closure.
#[derive(Clone, Copy)]
struct Sent<T>(T);
// SAFETY: the storage outlives the product and is only read.
unsafe impl<T> Send for Sent<T> {}
unsafe impl<T> Sync for Sent<T> {}

impl<T> Sent<T> {
    // A method: a closure then captures the whole (Sync) value.
    fn get(self) -> T {
        self.0
    }
}

fn same_bits(x: &[f32], y: &[f32]) -> bool {
    x.len() == y.len() && x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// `initial (+)= a·b` with `b` given two ways (`operands`), each on `kernel` in `pool`: the two
/// results, `m × n` row-major.
#[allow(clippy::too_many_arguments)]
fn products_of_both(pool: &rayon::ThreadPool, kernel: Kernel, a: Matrix, operands: [Rhs; 2], n: usize, initial: &[f32], accumulate: bool, threads: bool) -> [Vec<f32>; 2] {
    let inputs = Sent((a, operands));
    let mut results = [initial.to_vec(), initial.to_vec()];
    pool.install(|| {
        let (a, operands) = inputs.get();
        for (result, b) in results.iter_mut().zip(operands) {
            // SAFETY: `initial` holds a.rows rows of n values; the views are inside their storage.
            forcing(kernel, || unsafe { blocked::gemm(result.as_mut_ptr(), n, a, b, accumulate, threads) });
        }
    });
    results
}

/// The AMX kernel runs its tiles: a 70 × 100 × 200 product is 3 strips of 32 rows, 4 calls of 32
/// columns (a panel of 64, then 36 in two calls), and 7 tiles of 16 pairs (k's blocks of 192 and
/// 8, the last padded), each four `tdpbf16ps`; counted by the emulator where the CPU lacks AMX.
#[test]
fn the_amx_kernel_multiplies_tiles() {
    if !runs_here() || !kernels().contains(&Kernel::Amx) || amx::state() == amx::State::Used {
        return;
    }
    let ((_a_values, a), (_b_values, b)) = (matrix(70, 200, Layout::Rows, 5), matrix(200, 100, Layout::Transposed, 6));
    let mut dst = vec![0.0f32; 70 * 100];
    let before = amx_emulator::products();
    // SAFETY: 70 rows of 100 values; the views are inside their storage.
    forcing(Kernel::Amx, || unsafe { gemm_into(dst.as_mut_ptr(), 100, a, b, false, false) });
    assert_eq!(amx_emulator::products() - before, 3 * 4 * 7 * 4);
    let (sum, _) = dot(a, b, 69, 99, true);
    assert!((dst[69 * 100 + 99] as f64 - sum).abs() < 1e-4, "{} vs {sum}", dst[69 * 100 + 99]);
}

/// The check an AMX CPU runs before the kernel's first product passes (here on the emulator, or
/// on the CPU's AMX), and runs the AMX kernel.
#[test]
fn the_amx_check_passes() {
    if !runs_here() || !kernels().contains(&Kernel::Amx) {
        return;
    }
    let before = amx_emulator::products();
    // SAFETY: the CPU has AMX (`kernels` says so) or the emulator is installed.
    assert!(unsafe { blocked::amx_agrees() });
    assert!(amx::state() == amx::State::Used || amx_emulator::products() - before == 3 * 4 * 7 * 4);
}

/// The check runs in a child process: AMX is used where it passes there, not where it returns
/// false or faults (the process goes on, on AVX512-BF16), and never where AMX is not `Used`.
#[test]
fn the_amx_check_decides_in_a_child_process() {
    if !runs_here() || !kernels().contains(&Kernel::Amx) {
        return;
    }
    // SAFETY: the CPU has AMX (`kernels` says so) or the emulator is installed.
    assert_eq!(blocked::checked(amx::State::Used, || unsafe { blocked::amx_agrees() }), amx::State::Used);
    assert_eq!(blocked::checked(amx::State::Used, || false), amx::State::FailedCheck);
    let null = std::hint::black_box(std::ptr::null_mut::<u64>());
    let faults = || {
        // SAFETY: the write faults in the child, which it ends.
        unsafe { null.write_volatile(1) };
        true
    };
    assert_eq!(blocked::checked(amx::State::Used, faults), amx::State::FailedCheck);
    assert_eq!(blocked::checked(amx::State::Refused, || unreachable!()), amx::State::Refused);
}

/// Split over threads, by rows and (few row blocks) by columns too, a product gives the same
/// bits as on one: every value is summed in the same order.
#[test]
fn threads_change_nothing() {
    if !runs_here() {
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("a thread pool");
    for kernel in kernels() {
        for (m, n, k, layout) in [(300, 520, 600, Layout::Rows), (64, 3000, 200, Layout::Rows), (600, 300, 513, Layout::Transposed)] {
            for accumulate in [false, true] {
                let ((_a_values, a), (_b_values, b)) = (matrix(m, k, layout, 1), matrix(k, n, Layout::Transposed, 2));
                let initial = random(m * n, 3);
                let (mut one, mut many) = (initial.clone(), initial.clone());
                // SAFETY: m rows of n values; the views are inside their storage.
                forcing(kernel, || unsafe { gemm_into(one.as_mut_ptr(), n, a, b, accumulate, false) });
                let views = Sent((a, b));
                pool.install(|| {
                    let (a, b) = views.get();
                    // SAFETY: as above.
                    forcing(kernel, || unsafe { gemm_into(many.as_mut_ptr(), n, a, b, accumulate, true) })
                });
                assert!(same_bits(&one, &many), "{kernel:?} {m}x{n}x{k} accumulate {accumulate}");
            }
        }
    }
}

/// A right operand packed once ([`PackedB`], a frozen weight's) gives the bits of the product
/// that packs it block by block, for every layout, blocks of k and of columns past the first
/// (odd last ones included), accumulation and threads.
#[test]
fn packed_operands_give_the_same_bits() {
    if !runs_here() {
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("a thread pool");
    let shapes = [(1, 1, 1), (7, 100, 33), (200, 70, 385), (50, 4130, 200), (300, 260, 600)];
    for_each_right_operand_case(&shapes, 20_000, |case| {
        let Case { kernel, m, n, k, b_layout, accumulate, threads, seed } = case;
        let ((_a_values, a), (_b_values, b)) = (matrix(m, k, Layout::Rows, seed), matrix(k, n, b_layout, seed + 1000));
        let initial = random(m * n, seed + 2000);
        let b_view = Sent(b);
        let panels = pool.install(|| PackedB::pack(b_view.get()));
        let [by_block, packed] = products_of_both(&pool, kernel, a, [Rhs::View(b), Rhs::Packed(&panels)], n, &initial, accumulate, threads);
        assert!(same_bits(&by_block, &packed), "{case:?}");
    });
}

/// One case of the tests that compare two right operands: a kernel, a shape, B's layout,
/// accumulation and threads, and the case's seed.
#[derive(Debug, Clone, Copy)]
struct Case {
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    b_layout: Layout,
    accumulate: bool,
    threads: bool,
    seed: u64,
}

/// `check` on every kernel, shape, B layout, and (accumulate, threads) of (false, false) and
/// (true, true); seeds count up from `seed`.
fn for_each_right_operand_case(shapes: &[(usize, usize, usize)], mut seed: u64, mut check: impl FnMut(Case)) {
    for kernel in kernels() {
        for &(m, n, k) in shapes {
            for b_layout in LAYOUTS {
                for (accumulate, threads) in [(false, false), (true, true)] {
                    seed += 1;
                    check(Case { kernel, m, n, k, b_layout, accumulate, threads, seed });
                }
            }
        }
    }
}

/// A matrix of bf16 values in some layout, and the same values widened to f32 in the same layout.
struct Bf16Operand {
    _stored: Vec<half::bf16>,
    view: Matrix<half::bf16>,
    _widened: Vec<f32>,
    widened_view: Matrix,
}

fn bf16_matrix(rows: usize, cols: usize, layout: Layout, seed: u64) -> Bf16Operand {
    let (values, m) = matrix(rows, cols, layout, seed);
    let stored: Vec<half::bf16> = values.iter().map(|&v| half::bf16::from_bits(to_bf16(v))).collect();
    let widened: Vec<f32> = stored.iter().map(|v| v.to_f32()).collect();
    let view = Matrix { ptr: stored.as_ptr(), rows: m.rows, cols: m.cols, row_stride: m.row_stride, col_stride: m.col_stride };
    let widened_view = Matrix { ptr: widened.as_ptr(), ..m };
    Bf16Operand { _stored: stored, view, _widened: widened, widened_view }
}

/// A right operand of bf16 values (a frozen bf16 weight, `W` or `Wᵀ`) packed as stored gives the
/// bits of the product of its f32 widening, on each kernel, every layout, blocks of k and columns
/// past the first (odd last ones included), accumulation and threads.
#[test]
fn bf16_operands_give_the_bits_of_their_widening() {
    if !runs_here() {
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("a thread pool");
    let shapes = [(1, 1, 1), (7, 100, 33), (200, 70, 385), (40, 4130, 65)];
    for_each_right_operand_case(&shapes, 30_000, |case| {
        let Case { kernel, m, n, k, b_layout, accumulate, threads, seed } = case;
        let (_a_values, a) = matrix(m, k, Layout::Rows, seed);
        let operand = bf16_matrix(k, n, b_layout, seed + 1000);
        let initial = random(m * n, seed + 2000);
        let operands = [Rhs::Bf16(operand.view), Rhs::View(operand.widened_view)];
        let [from_bf16, from_f32] = products_of_both(&pool, kernel, a, operands, n, &initial, accumulate, threads);
        assert!(same_bits(&from_bf16, &from_f32), "{case:?}");
    });
}

/// `vcvtne2ps2bf16` rounds as [`to_bf16`] does: ties, overflow, NaN, infinities, subnormals, and
/// random bit patterns.
#[test]
fn the_instruction_rounds_as_to_bf16() {
    if !runs_here() {
        return;
    }
    let special: [u32; 20] = [
        0x3f80_0000, 0x3f80_8000, 0x3f81_8000, 0x3f80_8001, 0x3f80_7fff, 0x7f7f_ffff, 0xff7f_ffff, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000,
        0x7f80_0001, 0xffa0_0000, 0x0000_0000, 0x8000_0000, 0x0040_0000, 0x8000_0001, 0x0080_0000, 0x0080_8000, 0x0000_8000, 0x7fff_ffff,
    ];
    let mut values: Vec<f32> = special.iter().map(|&b| f32::from_bits(b)).collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    values.extend((0..32 * 1000).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        f32::from_bits(state as u32)
    }));
    for chunk in values.chunks(32) {
        let mut block = [0.0f32; 32];
        block[..chunk.len()].copy_from_slice(chunk);
        let by_instruction = super::avx512::round_by_the_instruction(&block);
        for (x, got) in block.iter().zip(by_instruction) {
            assert_eq!(got, to_bf16(*x), "{:#010x}", x.to_bits());
        }
    }
}

/// The vector packing writes what the scalar packing writes, for every layout, edge and odd k.
#[test]
fn vector_packing_equals_scalar_packing() {
    if !runs_here() {
        return;
    }
    for layout in LAYOUTS {
        for (rows, cols) in [(1, 1), (5, 7), (13, 33), (40, 70), (9, 97)] {
            let (_values, x) = matrix(rows, cols, layout, 7);
            for (k0, kc) in [(0, cols), (1, cols - 1), (cols / 2, cols - cols / 2)] {
                if kc == 0 {
                    continue;
                }
                let pairs = kc.div_ceil(2);
                for i0 in (0..rows).step_by(MR) {
                    let count = MR.min(rows - i0);
                    let (mut simd, mut scalar) = (vec![1u32; pairs * MR], vec![2u32; pairs * MR]);
                    pack_a(x, i0, count, k0, kc, &mut simd, Packer::Avx512);
                    pack_a(x, i0, count, k0, kc, &mut scalar, Packer::Scalar);
                    assert_eq!(simd, scalar, "A {layout:?} {rows}x{cols} rows {i0}+{count} k {k0}+{kc}");
                }
                let padded = panel_pairs(kc);
                for i0 in (0..rows).step_by(STRIP_ROWS) {
                    let count = STRIP_ROWS.min(rows - i0);
                    let (mut simd, mut scalar) = (vec![1u32; padded * STRIP_ROWS], vec![2u32; padded * STRIP_ROWS]);
                    pack_strip(x, i0, count, k0, kc, &mut simd, Packer::Avx512);
                    pack_strip(x, i0, count, k0, kc, &mut scalar, Packer::Scalar);
                    assert_eq!(simd, scalar, "strip {layout:?} {rows}x{cols} rows {i0}+{count} k {k0}+{kc}");
                }
                let operand = bf16_matrix(rows, cols, layout, 8);
                let (x_bf16, x_f32) = (operand.view, operand.widened_view);
                for j0 in (0..rows).step_by(NR) {
                    let count = NR.min(rows - j0);
                    let (mut simd, mut scalar, mut widened) = (vec![1u32; pairs * NR], vec![2u32; pairs * NR], vec![3u32; pairs * NR]);
                    pack_b(x_bf16.t(), k0, kc, j0, count, &mut simd, Packer::Avx512);
                    pack_b(x_bf16.t(), k0, kc, j0, count, &mut scalar, Packer::Scalar);
                    pack_b(x_f32.t(), k0, kc, j0, count, &mut widened, Packer::Scalar);
                    assert_eq!(simd, scalar, "bf16 B {layout:?} {cols}x{rows} columns {j0}+{count} k {k0}+{kc}");
                    assert_eq!(scalar, widened, "bf16 B {layout:?} {cols}x{rows} columns {j0}+{count} k {k0}+{kc}");
                }
                let xt = x.t(); // cols × rows: k runs over x's columns
                for j0 in (0..rows).step_by(NR) {
                    let count = NR.min(rows - j0);
                    let (mut simd, mut scalar) = (vec![1u32; pairs * NR], vec![2u32; pairs * NR]);
                    pack_b(xt, k0, kc, j0, count, &mut simd, Packer::Avx512);
                    pack_b(xt, k0, kc, j0, count, &mut scalar, Packer::Scalar);
                    assert_eq!(simd, scalar, "B {layout:?} {cols}x{rows} columns {j0}+{count} k {k0}+{kc}");
                }
            }
        }
    }
}
