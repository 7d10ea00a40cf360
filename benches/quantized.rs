//! Products by quantized weights (`--quantize nf4|int8`, QLoRA's frozen base;
//! `gpt::backend::flex::{nf4,int8}_times_transposed`) against the same products by the f32
//! weight, in the same process (criterion): decoding (1 and 4 rows of x by a `[2048 → 8192]`
//! Linear weight: the f32 side is the streaming kernel generation uses) and a short prefill (64
//! rows: the quantized sides dequantize panels for the GEMM, the f32 side is the fused Linear
//! op). Beside them the same weight kept in bf16 (`--dtype bf16`, 32 MB), by the same kernels.
//! Throughput is weights per second; the f32 weight is 64 MB, the int8 one 16, the NF4 one 8.5
//! (8.1 double-quantized).
//!
//!     cargo bench --bench quantized                       # all cores
//!     RAYON_NUM_THREADS=1 cargo bench --bench quantized   # one thread

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmfs::gpt::backend::flex::test_values::values as random;
use llmfs::gpt::backend::flex::{int8_times_transposed, linear, nf4_times_transposed, streaming_linear};
use llmfs::gpt::burn::prelude::*;
use llmfs::gpt::burn::tensor::DType;
use llmfs::gpt::quant::{Int8Matrix, Nf4Matrix};

llmfs::gpt::use_mimalloc!();

const D_IN: usize = 2048;
const D_OUT: usize = 8192;


/// The f32 weight `[in, out]` holding `dequantized` (HF's `[out, in]`), contiguous.
fn f32_weight(dequantized: Vec<f32>, device: &Device) -> Tensor<2> {
    let w = Tensor::<2>::from_data(TensorData::new(dequantized, [D_OUT, D_IN]), device).transpose();
    Tensor::<2>::from_data(w.into_data(), device)
}

/// `x·W` by the f32 kernels llmfs runs: streaming for a few rows, the fused Linear op for more.
fn f32_product(x: &Tensor<2>, w: &Tensor<2>) -> Tensor<2> {
    match streaming_linear(x, w, None) {
        Some(y) => y,
        None => linear(x, w, None).expect("f32 on Flex"),
    }
}

fn products(c: &mut Criterion) {
    llmfs::gpt::backend::allocator::keep_freed_memory();
    let device = Device::flex();
    let w = random(D_IN * D_OUT, 1, 0.04); // Burn's [in, out]
    let int8 = Int8Matrix::from_linear_weight("w", &w, [D_IN, D_OUT]).expect("finite values");
    let nf4 = Nf4Matrix::from_linear_weight("w", &w, [D_IN, D_OUT]).expect("finite values");
    let nf4_double = nf4.clone().double_quantized();
    let w_f32 = Tensor::<2>::from_data(TensorData::new(w, [D_IN, D_OUT]), &device);
    let w_bf16 = w_f32.clone().cast(DType::BF16);
    // Each quantized product against the f32 product by its own dequantized values: the same
    // products, the sums in another order.
    let (int8_f32, nf4_f32) = (f32_weight(int8.dequantize(), &device), f32_weight(nf4.dequantize(), &device));
    for n in [1, 4, 64] {
        let x = random(n * D_IN, 2, 2.0);
        let x_tensor = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, D_IN]), &device);
        let checks: [(&str, Vec<f32>, &Tensor<2>); 2] =
            [("int8", int8_times_transposed(&x, n, &int8, None), &int8_f32), ("NF4", nf4_times_transposed(&x, n, &nf4, None), &nf4_f32)];
        for (scheme, ours, dequantized) in checks {
            let theirs = f32_product(&x_tensor, dequantized).into_data().try_to_vec::<f32>().expect("f32");
            let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-3, "{n} rows: {scheme} and f32 products differ by {worst}");
        }

        let mut group = c.benchmark_group(format!("x[{n}, {D_IN}] · W[{D_IN} → {D_OUT}]"));
        group.throughput(Throughput::Elements((D_IN * D_OUT) as u64));
        group.bench_function("f32", |b| b.iter(|| f32_product(&x_tensor, &w_f32)));
        group.bench_function("bf16", |b| b.iter(|| f32_product(&x_tensor, &w_bf16)));
        group.bench_function("int8", |b| b.iter(|| int8_times_transposed(&x, n, &int8, None)));
        group.bench_function("nf4", |b| b.iter(|| nf4_times_transposed(&x, n, &nf4, None)));
        group.bench_function("nf4 double-quant", |b| b.iter(|| nf4_times_transposed(&x, n, &nf4_double, None)));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = products
}
criterion_main!(benches);
