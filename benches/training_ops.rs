//! The fused CPU training ops of `gpt::backend::flex` (criterion), each against the Burn ops it
//! replaces, in the same process, forward + backward, at the GPT-2 124M shapes of a B4×T256 step:
//! causal attention of one block (`[4, 256, 2304]` q/k/v → `[4, 256, 768]`), the MLP's first
//! Linear layer (`[1024, 768] · [768, 3072] + b`) and the cross-entropy over the logits
//! (`[1024, 50257]`). Each pair is checked to agree before it is timed.
//!
//!     cargo bench --bench training_ops                       # all cores
//!     RAYON_NUM_THREADS=1 cargo bench --bench training_ops   # one thread
//!
//! `scripts/bench-train.sh` measures the whole step against PyTorch.

use criterion::{Criterion, criterion_group, criterion_main};
use llmfs::gpt::burn::prelude::*;
use llmfs::gpt::burn::tensor::Distribution;
use llmfs::gpt::burn::tensor::activation::log_softmax;
use llmfs::gpt::backend::flex::{causal_attention, causal_attention_by_burn_ops, cross_entropy_rows, linear};

llmfs::gpt::use_mimalloc!();

fn device() -> Device {
    llmfs::gpt::backend::allocator::keep_freed_memory();
    let device = Device::flex().autodiff();
    device.seed(0);
    device
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn attention(c: &mut Criterion) {
    let device = device();
    let qkv = Tensor::<3>::random([4, 256, 3 * 768], Distribution::Normal(0.0, 1.0), &device);
    let fused = |qkv: &Tensor<3>| {
        let qkv = qkv.clone().require_grad();
        let out = causal_attention(&qkv, 12, None).expect("f32 on Flex");
        let grad = qkv.grad(&out.clone().sum().backward()).expect("gradient");
        (out, grad)
    };
    let burn = |qkv: &Tensor<3>| {
        let qkv = qkv.clone().require_grad();
        let out = causal_attention_by_burn_ops(qkv.clone(), 12, None);
        let grad = qkv.grad(&out.clone().sum().backward()).expect("gradient");
        (out, grad)
    };
    let ((out_a, grad_a), (out_b, grad_b)) = (fused(&qkv), burn(&qkv));
    assert!(max_abs_diff(out_a, out_b) < 1e-4 && max_abs_diff(grad_a, grad_b) < 1e-3, "attention: the two disagree");

    let mut group = c.benchmark_group("attention B4xT256 12 heads, fwd+bwd");
    group.sample_size(10);
    group.bench_function("llmfs fused", |b| b.iter(|| fused(&qkv)));
    group.bench_function("burn ops", |b| b.iter(|| burn(&qkv)));
    group.finish();
}

fn linear_layer(c: &mut Criterion) {
    let device = device();
    let x = Tensor::<2>::random([1024, 768], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<2>::random([768, 3072], Distribution::Normal(0.0, 0.02), &device);
    let bias = Tensor::<1>::random([3072], Distribution::Normal(0.0, 0.02), &device);
    let run = |fused: bool| {
        let (x, w, bias) = (x.clone().require_grad(), w.clone().require_grad(), bias.clone().require_grad());
        let out = if fused {
            linear(&x, &w, Some(&bias)).expect("f32 on Flex")
        } else {
            x.clone().matmul(w.clone()) + bias.clone().unsqueeze()
        };
        let grads = out.clone().sum().backward();
        (out, x.grad(&grads).expect("dx"), w.grad(&grads).expect("dW"))
    };
    let ((out_a, dx_a, dw_a), (out_b, dx_b, dw_b)) = (run(true), run(false));
    assert!(max_abs_diff(out_a, out_b) < 1e-4 && max_abs_diff(dx_a, dx_b) < 1e-3 && max_abs_diff(dw_a, dw_b) < 1e-2, "linear: the two disagree");

    let mut group = c.benchmark_group("linear 1024x768 -> 3072, fwd+bwd");
    group.sample_size(10);
    group.bench_function("llmfs fused", |b| b.iter(|| run(true)));
    group.bench_function("burn ops", |b| b.iter(|| run(false)));
    group.finish();
}

fn cross_entropy(c: &mut Criterion) {
    let device = device();
    let (n, vocab) = (1024, 50257);
    let logits = Tensor::<2>::random([n, vocab], Distribution::Normal(0.0, 2.0), &device);
    let targets = Tensor::<1, Int>::random([n], Distribution::Uniform(0.0, vocab as f64), &device);
    let run = |fused: bool| {
        let logits = logits.clone().require_grad();
        let losses = if fused {
            cross_entropy_rows(logits.clone(), targets.clone(), -100).unwrap_or_else(|_| panic!("f32 on Flex"))
        } else {
            log_softmax(logits.clone(), 1).gather(1, targets.clone().unsqueeze_dim(1)).neg().squeeze_dim(1)
        };
        let loss = losses.mean();
        let grad = logits.grad(&loss.clone().backward()).expect("gradient");
        (loss, grad)
    };
    let ((loss_a, grad_a), (loss_b, grad_b)) = (run(true), run(false));
    assert!(max_abs_diff(loss_a, loss_b) < 1e-4 && max_abs_diff(grad_a, grad_b) < 1e-6, "cross-entropy: the two disagree");

    let mut group = c.benchmark_group("cross-entropy 1024x50257, fwd+bwd");
    group.sample_size(10);
    group.bench_function("llmfs fused", |b| b.iter(|| run(true)));
    group.bench_function("burn ops", |b| b.iter(|| run(false)));
    group.finish();
}

criterion_group!(benches, attention, linear_layer, cross_entropy);
criterion_main!(benches);
