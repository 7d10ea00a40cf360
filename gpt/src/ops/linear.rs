//! The model's matrix products: Linear layers (with or without LoRA) and the output head tied to
//! the token embedding. Each takes the CPU kernels where they apply and Burn's ops elsewhere.

use burn::module::{LoraAdapter, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;

use super::matmul::{matmul, matmul_weight};
use crate::backend::{STREAMING_MAX_ROWS, kernels};
use crate::quant::{Int8Weight, Nf4Weight, QloraAdapter};

/// `x @ W + b` for a Linear layer (`x`: `[B, T, d_in]`), as one 2-D product over all `B·T` rows:
/// Burn's 3-D `Linear::forward` runs one product per batch row and packs the weight each time.
/// A few rows (decoding) take the streaming kernel, more the fused GEMM, on the CPU.
///
/// A LoRA weight (Burn's `LoraAdapter`, see `crate::lora`) is applied as `x·W + s·(x·A)·B`
/// rather than as `x·(W + s·A·B)`, which is what `Param::val` composes: the frozen `W` then needs
/// no gradient, where the composed weight's backward computes a full `[d_in, d_out]` gradient
/// only to project it onto A and B. On the CPU the whole layer is one fused op. An NF4 or int8
/// weight (`crate::quant::reparam`) takes its kernels.
pub fn linear(layer: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, t, d_in] = x.dims();
    let x = x.reshape([b * t, d_in]);
    let bias = layer.bias.as_ref().map(|b| b.val());
    if let Some(y) = quantized(&layer.weight, &x, bias.clone()) {
        let d_out = y.dims()[1];
        return y.reshape([b, t, d_out]);
    }
    let y = match lora_adapter(&layer.weight) {
        Some((base, adapter)) if b * t > STREAMING_MAX_ROWS => {
            let (a, b) = (adapter.a.val(), adapter.b.val());
            kernels::lora_linear(&x, &base, bias.as_ref(), &a, &b, adapter.scale)
                .unwrap_or_else(|| low_rank(x.clone(), a, b, adapter.scale) + dense(x, base, bias))
        }
        Some((base, adapter)) if base.dtype() != adapter.a.val().dtype() => {
            // A few rows by a base kept in bf16 (frozen, under bf16-mixed): the base's product by
            // the streaming kernel; composing `W + s·A·B` would widen all of W to f32.
            let delta = low_rank(x.clone(), adapter.a.val(), adapter.b.val(), adapter.scale);
            kernels::streaming_linear(&x, &base, bias.as_ref()).unwrap_or_else(|| dense(x, base, bias)) + delta
        }
        _ => {
            let weight = layer.weight.val();
            kernels::streaming_linear(&x, &weight, bias.as_ref()).unwrap_or_else(|| dense(x, weight, bias))
        }
    };
    let d_out = y.dims()[1];
    y.reshape([b, t, d_out])
}

/// An NF4 or int8 weight's layer (`crate::quant`: `--quantize nf4|int8`, QLoRA): on the CPU the
/// kernels read the quantized weight (no f32 copy of it); elsewhere (and int8 under autodiff)
/// the dequantized weight (QLoRA's adapter still applied as `s·(x·A)·B`). `None` for other
/// weights.
fn quantized(weight: &Param<Tensor<2>>, x: &Tensor<2>, bias: Option<Tensor<1>>) -> Option<Tensor<2>> {
    if let Some(adapter) = weight.reparameterization::<QloraAdapter>() {
        let (a, b) = (adapter.a.val(), adapter.b.val());
        return Some(kernels::qlora_linear(x, &adapter.base.0, bias.as_ref(), &a, &b, adapter.scale).unwrap_or_else(|| {
            low_rank(x.clone(), a, b, adapter.scale) + dense(x.clone(), adapter.base.dequantized(&x.device()), bias)
        }));
    }
    if let Some(int8) = weight.reparameterization::<Int8Weight>() {
        return Some(kernels::int8_linear(x, &int8.base.0, bias.as_ref()).unwrap_or_else(|| dense(x.clone(), int8.base.dequantized(&x.device()), bias)));
    }
    let nf4 = weight.reparameterization::<Nf4Weight>()?;
    Some(kernels::nf4_linear(x, &nf4.base.0, bias.as_ref()).unwrap_or_else(|| dense(x.clone(), nf4.base.dequantized(&x.device()), bias)))
}

/// LoRA's `s·(x·A)·B` by Burn's ops, where the fused layers do not apply.
fn low_rank(x: Tensor<2>, a: Tensor<2>, b: Tensor<2>, scale: f64) -> Tensor<2> {
    matmul(matmul(x, a).mul_scalar(scale), b)
}

/// `x·W + b` (`x`: `[N, d_in]`): the fused product on the CPU, Burn's ops elsewhere.
pub(crate) fn dense(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    kernels::linear(&x, &weight, bias.as_ref()).unwrap_or_else(|| {
        let y = matmul_weight(x, weight);
        match bias {
            Some(bias) => y + bias.unsqueeze(),
            None => y,
        }
    })
}

/// The frozen base weight and the adapter of a LoRA weight: f32 factors on a base of their dtype,
/// or on a bf16 base (other mixes take `Param::val`'s composition, which casts).
fn lora_adapter(weight: &Param<Tensor<2>>) -> Option<(Tensor<2>, &LoraAdapter)> {
    let adapter = weight.reparameterization::<LoraAdapter>()?;
    let base = weight.base();
    let factors = adapter.a.val().dtype();
    (base.dtype() == factors || (base.dtype() == DType::BF16 && factors == DType::F32)).then_some((base, adapter))
}

/// `x @ Eᵀ` for the output head tied to the embedding `E` (`x`: `[rows, C]`, `E`: `[V, C]`), as a
/// 2-D product: Burn's 3-D `linear` would broadcast the weight over the batch and copy all of it.
pub fn tied_head(x: Tensor<2>, embedding: Tensor<2>) -> Tensor<2> {
    kernels::streaming_times_transposed(&x, &embedding)
        .or_else(|| kernels::times_transposed(&x, &embedding))
        .unwrap_or_else(|| matmul_weight(x, embedding.transpose()))
}

#[cfg(all(test, feature = "flex"))]
pub(crate) mod tests {
    use burn::module::Param;

    use super::*;

    pub(crate) fn random(shape: [usize; 2], seed: u64) -> Tensor<2> {
        let device = Device::flex();
        device.seed(seed);
        Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device)
    }

    pub(crate) fn max_rel_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
        let (a, b): (Vec<f32>, Vec<f32>) = (a.into_data().try_into_vec().unwrap(), b.into_data().try_into_vec().unwrap());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
    }

    #[test]
    fn streaming_linear_matches_burn_for_every_row_count_and_odd_sizes() {
        for (d_in, d_out) in [(64, 192), (67, 300), (768, 3072), (3, 5)] {
            for rows in [1, 2, 3, 7, STREAMING_MAX_ROWS] {
                let layer = Linear {
                    weight: Param::from_tensor(random([d_in, d_out], 1)),
                    bias: Some(Param::from_tensor(random([1, d_out], 2).reshape([d_out]))),
                };
                let x = random([rows, d_in], 3);
                let fast = linear(&layer, x.clone().reshape([1, rows, d_in])).reshape([rows, d_out]);
                let reference = x.matmul(layer.weight.val()) + layer.bias.as_ref().unwrap().val().unsqueeze();
                let diff = max_rel_diff(fast, reference);
                assert!(diff < 1e-5, "{d_in}x{d_out}, {rows} rows: relative diff {diff}");
            }
        }
    }

    #[test]
    fn streaming_head_matches_burn() {
        for (c, vocab) in [(64, 50257), (13, 4099)] {
            for rows in [1, 2, 3, 7, STREAMING_MAX_ROWS] {
                let x = random([rows, c], 4);
                let e = random([vocab, c], 5);
                let diff = max_rel_diff(tied_head(x.clone(), e.clone()), x.matmul(e.transpose()));
                assert!(diff < 1e-5, "c {c}, vocab {vocab}, {rows} rows: relative diff {diff}");
            }
        }
    }

    /// bf16 weights (`--dtype bf16`): every path (streaming up to 16 rows, the slab-widening GEMM
    /// above, the tied head) gives the f32 product of the stored bf16 values, within f32
    /// summation-order differences.
    #[test]
    fn bf16_weights_give_the_f32_products_of_their_values() {
        use burn::tensor::DType;
        for (d_in, d_out) in [(64, 192), (67, 300), (3, 5), (768, 2304)] {
            for rows in [1, 3, STREAMING_MAX_ROWS, STREAMING_MAX_ROWS + 1, 40] {
                let weight = random([d_in, d_out], 1).cast(DType::BF16);
                let bias = random([1, d_out], 2).reshape([d_out]);
                let layer = Linear { weight: Param::from_tensor(weight.clone()), bias: Some(Param::from_tensor(bias.clone())) };
                let x = random([rows, d_in], 3);
                // The CPU kernels take them (not Burn's ops, which would widen the whole weight).
                let kernel = match rows <= STREAMING_MAX_ROWS {
                    true => kernels::streaming_linear(&x, &weight, Some(&bias)),
                    false => kernels::linear(&x, &weight, Some(&bias)),
                };
                assert!(kernel.is_some(), "{rows} rows: a kernel takes bf16 weights");
                let out = linear(&layer, x.clone().reshape([1, rows, d_in])).reshape([rows, d_out]);
                assert_eq!(out.dtype(), DType::F32);
                let reference = x.clone().matmul(weight.clone().cast(DType::F32)) + bias.clone().unsqueeze();
                let diff = max_rel_diff(out, reference);
                assert!(diff < 1e-5, "{d_in}x{d_out}, {rows} rows: relative diff {diff}");
                // The same matrix as a tied head `[V, C]`: x·Eᵀ with C = d_in.
                let table = random([d_out, d_in], 4).cast(DType::BF16);
                let kernel = match rows <= STREAMING_MAX_ROWS {
                    true => kernels::streaming_times_transposed(&x, &table),
                    false => kernels::times_transposed(&x, &table),
                };
                assert!(kernel.is_some(), "head, {rows} rows: a kernel takes bf16 weights");
                let head = tied_head(x.clone(), table.clone());
                let diff = max_rel_diff(head, x.matmul(table.cast(DType::F32).transpose()));
                assert!(diff < 1e-5, "head {d_out}x{d_in}, {rows} rows: relative diff {diff}");
            }
        }
    }

    /// A frozen bf16 weight under autodiff (LoRA's and QLoRA's base under bf16-mixed): the
    /// product, the input's gradient and the bias's are those of the f32 weight holding the same
    /// values (Burn's ops as the reference), for a Linear layer and the tied head; the weight
    /// gets none.
    #[test]
    fn frozen_bf16_weights_train_their_inputs_as_f32_weights_do() {
        use burn::tensor::DType;
        let ad = Device::flex().autodiff();
        let on_ad = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &ad);
        let rows = STREAMING_MAX_ROWS + 5;
        for (d_in, d_out) in [(64, 192), (67, 300)] {
            let weight_bf16 = on_ad(random([d_in, d_out], 1)).cast(DType::BF16);
            assert_eq!(weight_bf16.dtype(), DType::BF16);
            let weight_f32 = weight_bf16.clone().cast(DType::F32);
            let bias = Tensor::<1>::from_data(random([1, d_out], 2).reshape([d_out]).into_data(), &ad).require_grad();
            let x = on_ad(random([rows, d_in], 3)).require_grad();
            let upstream = on_ad(random([rows, d_out], 4));
            let layer = Linear { weight: Param::from_tensor(weight_bf16.clone()).set_require_grad(false), bias: Some(Param::from_tensor(bias.clone())) };
            let ours = linear(&layer, x.clone().reshape([1, rows, d_in])).reshape([rows, d_out]);
            assert!(kernels::linear(&x, &weight_bf16, Some(&bias)).is_some(), "the bf16 kernel takes it");
            let reference = x.clone().matmul(weight_f32.clone()) + bias.clone().unsqueeze();
            assert!(max_rel_diff(ours.clone().inner(), reference.clone().inner()) < 1e-5);
            let (grads, want) = ((ours * upstream.clone()).sum().backward(), (reference * upstream).sum().backward());
            assert!(max_rel_diff(x.grad(&grads).unwrap(), x.grad(&want).unwrap()) < 1e-5, "dx");
            let (db, want_db) = (bias.grad(&grads).unwrap(), bias.grad(&want).unwrap());
            assert!(max_rel_diff(db.unsqueeze(), want_db.unsqueeze()) < 1e-5, "dbias");
            assert!(weight_bf16.grad(&grads).is_none(), "the frozen weight has no gradient");

            // The same matrix as a tied head `[V, C]`: x·Eᵀ with C = d_out.
            let y = on_ad(random([rows, d_out], 5)).require_grad();
            let upstream = on_ad(random([rows, d_in], 6));
            let head = tied_head(y.clone(), weight_bf16.clone());
            let reference = y.clone().matmul(weight_f32.transpose());
            assert!(max_rel_diff(head.clone().inner(), reference.clone().inner()) < 1e-5, "head");
            let (grads, want) = ((head * upstream.clone()).sum().backward(), (reference * upstream).sum().backward());
            assert!(max_rel_diff(y.grad(&grads).unwrap(), y.grad(&want).unwrap()) < 1e-5, "head dx");
        }
    }

    #[test]
    fn large_batches_and_autodiff_tensors_take_burns_path() {
        let layer = Linear { weight: Param::from_tensor(random([8, 4], 1)), bias: None };
        let x = random([STREAMING_MAX_ROWS + 1, 8], 2);
        let out = linear(&layer, x.clone().reshape([1, STREAMING_MAX_ROWS + 1, 8])).reshape([STREAMING_MAX_ROWS + 1, 4]);
        assert!(max_rel_diff(out, x.clone().matmul(layer.weight.val())) < 1e-6);
        let ad = Device::flex().autodiff();
        let xa = Tensor::<3>::from_data(x.slice(s![0..2, ..]).reshape([1, 2, 8]).into_data(), &ad).require_grad();
        let layer_ad = Linear { weight: Param::from_tensor(random([8, 4], 1).autodiff()), bias: None };
        let grads = linear(&layer_ad, xa.clone()).sum().backward();
        assert!(xa.grad(&grads).is_some(), "the autodiff path keeps gradients");
    }
}
