//! The matrix products of a GPT-2 124M B4×T256 training step (1024 rows) through the CPU
//! kernels' GEMM (`gpt::backend::flex::matmul`), f32 against bf16 with f32 accumulation
//! (`set_matmul_precision`), run alternately in the same process: GFLOP/s of each and their
//! ratio. Forward products read row-major inputs; backward ones read the transposed views the
//! fused Linear op passes (`ᵀ`).
//!
//!     cargo bench --bench gemm_bf16 -- [--threads N] [--reps R] [--f16]
//!
//! Where the CPU has no AVX512-BF16 the bf16 column runs the f32 path (the header says which);
//! where it has AMX the bf16 column runs the AMX kernel, and `LLMFS_AMX=0` measures the
//! AVX512-BF16 one instead.
//! `--f16` compares f32 with the f16 products instead (emulated: inputs rounded to f16, the f32
//! GEMM), to see what the rounding passes cost.

use std::time::Instant;

use llmfs::gpt::backend::MatmulPrecision;
use llmfs::gpt::backend::flex::{matmul, matmul_path};
use llmfs::gpt::backend::set_matmul_precision;

llmfs::gpt::use_mimalloc!();

/// `[m, k]·[k, n]`, with `a` stored as `[k, m]` / `b` as `[n, k]` when transposed.
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    a_transposed: bool,
    b_transposed: bool,
}

const fn shape(name: &'static str, m: usize, k: usize, n: usize, a_transposed: bool, b_transposed: bool) -> Shape {
    Shape { name, m, k, n, a_transposed, b_transposed }
}

const SHAPES: [Shape; 17] = [
    shape("qkv      x·W", 1024, 768, 2304, false, false),
    shape("attn out x·W", 1024, 768, 768, false, false),
    shape("fc       x·W", 1024, 768, 3072, false, false),
    shape("proj     x·W", 1024, 3072, 768, false, false),
    shape("head     x·Eᵀ", 1024, 768, 50257, false, true),
    shape("qkv  dx  g·Wᵀ", 1024, 2304, 768, false, true),
    shape("qkv  dW  xᵀ·g", 768, 1024, 2304, true, false),
    shape("fc   dx  g·Wᵀ", 1024, 3072, 768, false, true),
    shape("fc   dW  xᵀ·g", 768, 1024, 3072, true, false),
    shape("proj dx  g·Wᵀ", 1024, 768, 3072, false, true),
    shape("proj dW  xᵀ·g", 3072, 1024, 768, true, false),
    shape("head dx  g·E", 1024, 50257, 768, false, false),
    shape("head dE  gᵀ·x", 50257, 1024, 768, true, false),
    // One head's row block of the fused attention (64 rows, head size 64, 256 keys): single-threaded.
    shape("attn q·kᵀ", 64, 64, 256, false, true),
    shape("attn p·v", 64, 256, 64, false, false),
    shape("attn dk sᵀ·q", 64, 256, 64, true, false),
    shape("attn dp g·vᵀ", 64, 64, 256, false, true),
];

fn random(n: usize, seed: u64) -> Vec<f32> {
    llmfs::gpt::backend::flex::test_values::values(n, seed, 1.0)
}

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    Some(args.get(at + 1)?.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
}

/// The CPU's model name and the flags that decide the path.
fn cpu() -> (String, String) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']).to_string()).unwrap_or_else(|| "unknown".into());
    let flags = info.lines().find_map(|l| l.strip_prefix("flags")).unwrap_or_default();
    let wanted = ["avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile"];
    let present: Vec<&str> = wanted.into_iter().filter(|w| flags.split_whitespace().any(|f| f == *w)).collect();
    (model, present.join(" "))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    // As every llmfs binary: freed memory is kept, not handed back and faulted in again.
    llmfs::gpt::backend::allocator::keep_freed_memory();
    let threads = arg("--threads");
    llmfs::gpt::backend::set_cpu_threads(threads).expect("the thread pool");
    // Rayon's global pool: as many threads as cores unless told.
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let reps = arg("--reps").unwrap_or(5).max(1);
    let (model, flags) = cpu();
    let (lower, label) = if std::env::args().any(|a| a == "--f16") { (MatmulPrecision::F16, "f16") } else { (MatmulPrecision::Bf16, "bf16") };
    set_matmul_precision(lower);
    println!("CPU: {model} ({flags}); threads: {threads}; {label} path: {}; median of {reps} runs each, alternating", matmul_path());
    println!("{:<16} {:>6} {:>6} {:>6} {:>9} {:>9} {:>6} {:>10}", "product", "m", "k", "n", "f32 GF/s", format!("{label} GF/s"), "ratio", "rel. diff");
    let (mut total_f32, mut total_bf16, mut flops_all) = (0.0, 0.0, 0.0);
    for (i, s) in SHAPES.iter().enumerate() {
        let (a, b) = (random(s.m * s.k, 2 * i as u64 + 1), random(s.k * s.n, 2 * i as u64 + 2));
        let (mut out_f32, mut out_bf16) = (vec![0.0f32; s.m * s.n], vec![0.0f32; s.m * s.n]);
        let flops = 2.0 * (s.m * s.k * s.n) as f64;
        // Small products repeated to ~0.2 GFLOP a run, timed per product.
        let repeat = (2e8 / flops).ceil() as usize;
        let run = |precision: MatmulPrecision, out: &mut [f32]| {
            set_matmul_precision(precision);
            let start = Instant::now();
            for _ in 0..repeat {
                matmul(out, &a, s.a_transposed, &b, s.b_transposed, s.m, s.k, s.n);
            }
            start.elapsed().as_secs_f64() / repeat as f64
        };
        let (mut t_f32, mut t_bf16) = (Vec::new(), Vec::new());
        for rep in 0..reps + 1 {
            let (x, y) = (run(MatmulPrecision::F32, &mut out_f32), run(lower, &mut out_bf16));
            if rep > 0 {
                t_f32.push(x);
                t_bf16.push(y);
            }
        }
        // ‖bf16 − f32‖ / ‖f32‖ over the whole output: the inputs' rounding, about 2⁻⁹ here (f16: 2⁻¹²).
        let (diff, norm) = out_f32.iter().zip(&out_bf16).fold((0.0f64, 0.0f64), |(d, n), (&x, &y)| (d + ((x - y) as f64).powi(2), n + (x as f64).powi(2)));
        let (f, h) = (median(t_f32), median(t_bf16));
        (total_f32, total_bf16, flops_all) = (total_f32 + f, total_bf16 + h, flops_all + flops);
        println!("{:<16} {:>6} {:>6} {:>6} {:>9.1} {:>9.1} {:>5.2}x {:>10.2e}", s.name, s.m, s.k, s.n, flops / f / 1e9, flops / h / 1e9, f / h, (diff / norm).sqrt());
    }
    println!(
        "{:<16} {:>20} {:>9.1} {:>9.1} {:>5.2}x   (all products: {:.3} s f32, {:.3} s {label})",
        "all",
        "",
        flops_all / total_f32 / 1e9,
        flops_all / total_bf16 / 1e9,
        total_f32 / total_bf16,
        total_f32,
        total_bf16
    );
}
