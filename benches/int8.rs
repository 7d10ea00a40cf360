//! Products by an int8 weight (`--quantize int8`, `gpt::backend::flex::int8_times_transposed`)
//! against the same products by the f32 weight and by an NF4 one, in the same process
//! (criterion): decoding (1 and 4 rows of x by a `[2048 → 8192]` Linear weight: the f32 side is
//! the streaming kernel generation uses) and a short prefill (64 rows: the quantized sides
//! dequantize panels for the GEMM, the f32 side is the fused Linear op). Throughput is weights
//! per second; the f32 weight is 64 MB, the int8 one 16, the NF4 one 8.5.
//!
//!     cargo bench --bench int8                       # all cores
//!     RAYON_NUM_THREADS=1 cargo bench --bench int8   # one thread

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmfs::gpt::backend::flex::{int8_times_transposed, linear, nf4_times_transposed, streaming_linear};
use llmfs::gpt::burn::prelude::*;
use llmfs::gpt::quant::{Int8Matrix, Nf4Matrix};

llmfs::gpt::use_mimalloc!();

const D_IN: usize = 2048;
const D_OUT: usize = 8192;

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

fn products(c: &mut Criterion) {
    llmfs::gpt::backend::allocator::keep_freed_memory();
    let device = Device::flex();
    let w = random(D_IN * D_OUT, 1, 0.04); // Burn's [in, out]
    let int8 = Int8Matrix::from_linear_weight("w", &w, [D_IN, D_OUT]).expect("finite values");
    let nf4 = Nf4Matrix::from_linear_weight("w", &w, [D_IN, D_OUT]).expect("finite values");
    // The f32 side multiplies by the int8 weight's dequantized values: the same products.
    let w_f32 = Tensor::<2>::from_data(TensorData::new(int8.dequantize(), [D_OUT, D_IN]), &device).transpose();
    let w_f32 = Tensor::<2>::from_data(w_f32.into_data(), &device); // contiguous [in, out]
    for n in [1, 4, 64] {
        let x = random(n * D_IN, 2, 2.0);
        let x_tensor = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, D_IN]), &device);
        let f32_product = || match streaming_linear(&x_tensor, &w_f32, None) {
            Some(y) => y,
            None => linear(&x_tensor, &w_f32, None).expect("f32 on Flex"),
        };
        let (ours, theirs) = (int8_times_transposed(&x, n, &int8, None), f32_product().into_data().try_to_vec::<f32>().expect("f32"));
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "{n} rows: int8 and f32 products differ by {worst}");

        let mut group = c.benchmark_group(format!("x[{n}, {D_IN}] · W[{D_IN} → {D_OUT}]"));
        group.throughput(Throughput::Elements((D_IN * D_OUT) as u64));
        group.bench_function("f32", |b| b.iter(f32_product));
        group.bench_function("int8", |b| b.iter(|| int8_times_transposed(&x, n, &int8, None)));
        group.bench_function("nf4", |b| b.iter(|| nf4_times_transposed(&x, n, &nf4, None)));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = products
}
criterion_main!(benches);
