//! Cross-entropy, the tanh GELU, SwiGLU and the AdamW update on Flex, each one pass forward and one
//! backward, with a vectorised `exp`.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::tensor::{FlexInput, contiguous, flex_from, record, slice, values_mut};
use crate::backend::{AdamWStep, Moments};

/// Runs `f(row_index, row)` over the rows of `out` (`width` values each) on rayon's threads.
fn for_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let rows_per_task = (1 << 15) / width.max(1) + 1;
    out.par_chunks_mut(rows_per_task * width).enumerate().for_each(|(task, chunk)| {
        for (i, row) in chunk.chunks_mut(width).enumerate() {
            f(task * rows_per_task + i, row);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy

/// `e^x` to ~1 ulp (Cephes' `expf`: Cody-Waite range reduction and a degree-6 polynomial), in
/// plain arithmetic (rounding by the 1.5·2²³ trick, the power of two built from bits) so that
/// loops over it vectorise on every target. Inputs are clamped to [-87, 88].
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5.000_000_1e-1;
    let e_r = p * r * r + r + 1.0;
    // k as an integer from the bits of `shifted` (its low mantissa bits hold k): `k as i32`
    // saturates, which compiles to a scalar conversion per lane and kept GELU from vectorising.
    let k_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    e_r * f32::from_bits(k_int.wrapping_add(127) << 23)
}

/// The negative log-likelihood of each row of `logits` (`[N, V]`) at its target (`targets`, N
/// values), 0 where the target is `ignore`: `log Σ exp(x) − x[target]`, as Burn's
/// `log_softmax` + `gather` compute it but in one pass (plus one pass backward:
/// `softmax(x) − onehot(target)`, times the incoming gradient). `Err(logits)` when the logits are
/// not an f32 Flex tensor or a target is out of range.
pub fn cross_entropy_rows(logits: Tensor<2>, targets: Tensor<1, Int>, ignore: i64) -> Result<Tensor<1>, Tensor<2>> {
    let [n, vocab] = logits.dims();
    // The targets are read on the host only once the logits are known to be on the CPU.
    let Some((input, targets)) = FlexInput::of(&logits)
        .and_then(|input| Some((input, targets.into_data().convert::<i64>().try_into_vec::<i64>().ok()?)))
        .filter(|(_, targets)| targets.len() == n && targets.iter().all(|&t| t == ignore || (0..vocab as i64).contains(&t)))
    else {
        return Err(logits);
    };
    let values = input.values();
    let x = slice(&values);
    // Per row: the maximum and 1 / Σ exp(x − max), which is all the backward needs besides x.
    let stats: Vec<(f32, f32)> = x.par_chunks(vocab).map(|row| max_and_inverse_sum(row, 1.0)).collect();
    let losses: Vec<f32> = (0..n)
        .map(|i| {
            let target = targets[i];
            if target == ignore {
                return 0.0;
            }
            let (max, inv_sum) = stats[i];
            -(x[i * vocab + target as usize] - max) - inv_sum.ln()
        })
        .collect();
    let out = flex_from(losses, vec![n]);
    drop(logits);
    match input {
        FlexInput::Plain(_) => Ok(Tensor::from_primitive::<Flex>(out)),
        FlexInput::Tracked(tracked) => {
            let state = CrossEntropyState { logits: values, stats: Arc::new(stats), targets: Arc::new(targets), ignore };
            Ok(Tensor::from_primitive::<Autodiff<Flex>>(record(CrossEntropyBackward, [tracked.node()], state, out)))
        }
    }
}

#[derive(Debug)]
struct CrossEntropyBackward;

#[derive(Debug, Clone)]
struct CrossEntropyState {
    logits: FlexTensor,
    stats: Arc<Vec<(f32, f32)>>,
    targets: Arc<Vec<i64>>,
    ignore: i64,
}

impl Backward<Flex, 1> for CrossEntropyBackward {
    type State = CrossEntropyState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let CrossEntropyState { logits, stats, targets, ignore } = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let grad = contiguous(grad);
            let upstream = slice(&grad);
            let vocab = logits.layout().shape()[1];
            // The gradient overwrites the logits, which nothing else holds by now (else
            // `values_mut` copies them): no second 200 MB buffer for a 124M step.
            let mut logits = logits;
            for_rows(values_mut(&mut logits), vocab, |i, row| {
                let target = targets[i];
                if target == ignore || upstream[i] == 0.0 {
                    row.fill(0.0);
                    return;
                }
                let (max, inv_sum) = stats[i];
                softmax_times_in_place(row, max, inv_sum * upstream[i]);
                row[target as usize] -= upstream[i];
            });
            logits
        });
    }
}

/// Defines `fn $name(args)` that runs the `#[inline(always)]` function `$portable` compiled for
/// AVX2 + FMA where the CPU has them (a run-time check std caches), and as it is elsewhere: the
/// portable loops are written so that the compiler vectorises them at either width.
macro_rules! with_avx2 {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $portable:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}
const LANES: usize = 16;

with_avx2! {
    /// `(max(scale·x), 1 / Σ exp(scale·x − max))` of one row (`scale` > 0).
    pub(super) fn max_and_inverse_sum(row: &[f32], scale: f32) -> (f32, f32) => max_and_inverse_sum_portable
}

/// Sixteen independent lanes so that the loops vectorise (a single running max or sum is a chain
/// the compiler may not reorder).
#[inline(always)]
fn max_and_inverse_sum_portable(row: &[f32], scale: f32) -> (f32, f32) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for k in 0..LANES {
            lanes[k] = if chunk[k] > lanes[k] { chunk[k] } else { lanes[k] };
        }
    }
    let max = scale * tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    let mut sums = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for k in 0..LANES {
            sums[k] += exp_approx(scale * chunk[k] - max);
        }
    }
    let sum = sums.iter().sum::<f32>() + tail.iter().map(|&v| exp_approx(scale * v - max)).sum::<f32>();
    (max, 1.0 / sum)
}

with_avx2! {
    /// `out = exp(scale·x − max) · times`.
    pub(super) fn softmax_times(x: &[f32], scale: f32, max: f32, times: f32, out: &mut [f32]) => softmax_times_portable
}

#[inline(always)]
fn softmax_times_portable(x: &[f32], scale: f32, max: f32, times: f32, out: &mut [f32]) {
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = exp_approx(scale * v - max) * times);
}

with_avx2! {
    /// `x ← exp(x − max) · times`.
    fn softmax_times_in_place(x: &mut [f32], max: f32, times: f32) => softmax_times_in_place_portable
}

#[inline(always)]
fn softmax_times_in_place_portable(x: &mut [f32], max: f32, times: f32) {
    x.iter_mut().for_each(|v| *v = exp_approx(*v - max) * times);
}

with_avx2! {
    /// The backward of a softmax row `y` (of `scale·x`): `out = scale · y · (dy − Σ dy·y)`.
    pub(super) fn softmax_backward(y: &[f32], dy: &[f32], scale: f32, out: &mut [f32]) => softmax_backward_portable
}

#[inline(always)]
fn softmax_backward_portable(y: &[f32], dy: &[f32], scale: f32, out: &mut [f32]) {
    let mut lanes = [0.0f32; LANES];
    let (y_chunks, dy_chunks) = (y.chunks_exact(LANES), dy.chunks_exact(LANES));
    let tail: f32 = y_chunks.remainder().iter().zip(dy_chunks.remainder()).map(|(a, b)| a * b).sum();
    for (y, dy) in y_chunks.zip(dy_chunks) {
        for k in 0..LANES {
            lanes[k] += y[k] * dy[k];
        }
    }
    let dot = lanes.iter().sum::<f32>() + tail;
    out.iter_mut().zip(y.iter().zip(dy)).for_each(|(o, (&y, &dy))| *o = scale * y * (dy - dot));
}

// ---------------------------------------------------------------------------------------------
// GELU

const SQRT_2_OVER_PI: f32 = 0.797_884_56;
const GELU_CUBIC: f32 = 0.044715;

/// GPT-2's `gelu_new`, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, in one pass (Burn composes
/// it from seven tensor ops, each a pass and an allocation); when autodiff tracks `x`, with a
/// one-pass backward too (`gelu_by_sigmoid`'s seven ops have seven backwards). `Err(x)` when `x`
/// is not an f32 Flex tensor.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    let Some(input) = FlexInput::of(&x) else {
        return Err(x);
    };
    let values = input.values();
    let mut out = vec![0.0f32; slice(&values).len()];
    map_chunks(&mut out, slice(&values), gelu_forward);
    let out = flex_from(out, values.layout().shape().to_vec());
    drop(x);
    let tracked = match input {
        FlexInput::Plain(_) => return Ok(Tensor::from_primitive::<Flex>(out)),
        FlexInput::Tracked(tracked) => tracked,
    };
    Ok(Tensor::from_primitive::<Autodiff<Flex>>(record(GeluBackward, [tracked.node()], values, out)))
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let input = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let mut grad = contiguous(grad);
            map_chunks(values_mut(&mut grad), slice(&input), gelu_backward);
            grad
        });
    }
}

/// `f(out_chunk, in_chunk)` over matching chunks of `out` and `input`, on rayon's threads from
/// 64 Ki elements on (below that, handing the work to a sleeping worker and back costs more than
/// it saves: a decoding step's GELU is 3,072 values a row).
fn map_chunks(out: &mut [f32], input: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync + Send) {
    const CHUNK: usize = 1 << 14;
    if input.len() >= 4 * CHUNK && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(CHUNK).zip(input.par_chunks(CHUNK)).for_each(|(o, i)| f(o, i));
    } else {
        f(out, input);
    }
}

with_avx2! {
    fn gelu_forward(out: &mut [f32], x: &[f32]) => gelu_forward_portable
}

/// `0.5·x·(1 + tanh(u)) = x·σ(2u)`, `u = √(2/π)·(x + 0.044715·x³)`.
#[inline(always)]
fn gelu_forward_portable(out: &mut [f32], x: &[f32]) {
    out.iter_mut().zip(x).for_each(|(o, &v)| {
        let two_u = 2.0 * SQRT_2_OVER_PI * (v + GELU_CUBIC * v * v * v);
        *o = v / (1.0 + exp_approx(-two_u));
    });
}

with_avx2! {
    /// `grad ← grad · d/dx [x·σ(2u)] = grad · (σ + x·σ·(1 − σ)·2√(2/π)·(1 + 3·0.044715·x²))`.
    fn gelu_backward(grad: &mut [f32], x: &[f32]) => gelu_backward_portable
}

#[inline(always)]
fn gelu_backward_portable(grad: &mut [f32], x: &[f32]) {
    grad.iter_mut().zip(x).for_each(|(g, &v)| {
        let two_u = 2.0 * SQRT_2_OVER_PI * (v + GELU_CUBIC * v * v * v);
        let s = 1.0 / (1.0 + exp_approx(-two_u));
        let d_two_u = 2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * v * v);
        *g *= s + v * s * (1.0 - s) * d_two_u;
    });
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// The Llama family's gated activation `silu(gate)·up = gate·σ(gate)·up` in one pass (Burn
/// composes it from a sigmoid, two products and their backwards, each a pass and an
/// allocation, and runs them on one thread); when autodiff tracks an input, with a one-pass
/// backward too. `Err` with the inputs when they are not f32 Flex tensors of one shape.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Result<Tensor<D>, (Tensor<D>, Tensor<D>)> {
    let (Some(g_in), Some(u_in)) = (FlexInput::of(&gate), FlexInput::of(&up)) else {
        return Err((gate, up));
    };
    if gate.dims() != up.dims() {
        return Err((gate, up));
    }
    let (g, u) = (g_in.values(), u_in.values());
    let mut out = vec![0.0f32; slice(&g).len()];
    map_pairs(&mut out, slice(&g), slice(&u), swiglu_forward);
    let out = flex_from(out, g.layout().shape().to_vec());
    let (FlexInput::Tracked(g_t), FlexInput::Tracked(u_t)) = (g_in, u_in) else {
        return Ok(Tensor::from_primitive::<Flex>(out));
    };
    Ok(Tensor::from_primitive::<Autodiff<Flex>>(record(SwigluBackward, [g_t.node(), u_t.node()], (g, u), out)))
}

#[derive(Debug)]
struct SwigluBackward;

/// Parents `[gate, up]`.
impl Backward<Flex, 2> for SwigluBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (gate, up) = ops.state;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let [g_node, u_node] = [0, 1].map(|i| ops.parents.get(i).cloned().flatten());
        let shape = grad.layout().shape().to_vec();
        if let Some(node) = u_node {
            // d up = grad · silu(gate)
            let mut d_up = vec![0.0f32; slice(&grad).len()];
            map_pairs(&mut d_up, slice(&grad), slice(&gate), swiglu_up_grad);
            grads.register::<Flex>(node.id, flex_from(d_up, shape.clone()));
        }
        if let Some(node) = g_node {
            // d gate = grad · up · σ(gate)·(1 + gate·(1 − σ(gate)))
            let mut d_gate = vec![0.0f32; slice(&grad).len()];
            map_triples(&mut d_gate, slice(&grad), slice(&gate), slice(&up), swiglu_gate_grad);
            grads.register::<Flex>(node.id, flex_from(d_gate, shape));
        }
    }
}

/// `f(out_chunk, a_chunk, b_chunk)` over matching chunks, on rayon's threads from 64 Ki elements on.
fn map_pairs(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync + Send) {
    const CHUNK: usize = 1 << 14;
    if a.len() >= 4 * CHUNK && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((o, a), b)| f(o, a, b));
    } else {
        f(out, a, b);
    }
}

/// [`map_pairs`] with a third input.
fn map_triples(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], f: impl Fn(&mut [f32], &[f32], &[f32], &[f32]) + Sync + Send) {
    const CHUNK: usize = 1 << 14;
    if a.len() >= 4 * CHUNK && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .zip(c.par_chunks(CHUNK))
            .for_each(|(((o, a), b), c)| f(o, a, b, c));
    } else {
        f(out, a, b, c);
    }
}

with_avx2! {
    fn swiglu_forward(out: &mut [f32], gate: &[f32], up: &[f32]) => swiglu_forward_portable
}

#[inline(always)]
fn swiglu_forward_portable(out: &mut [f32], gate: &[f32], up: &[f32]) {
    out.iter_mut().zip(gate).zip(up).for_each(|((o, &g), &u)| *o = g / (1.0 + exp_approx(-g)) * u);
}

with_avx2! {
    fn swiglu_up_grad(out: &mut [f32], grad: &[f32], gate: &[f32]) => swiglu_up_grad_portable
}

#[inline(always)]
fn swiglu_up_grad_portable(out: &mut [f32], grad: &[f32], gate: &[f32]) {
    out.iter_mut().zip(grad).zip(gate).for_each(|((o, &d), &g)| *o = d * g / (1.0 + exp_approx(-g)));
}

with_avx2! {
    fn swiglu_gate_grad(out: &mut [f32], grad: &[f32], gate: &[f32], up: &[f32]) => swiglu_gate_grad_portable
}

#[inline(always)]
fn swiglu_gate_grad_portable(out: &mut [f32], grad: &[f32], gate: &[f32], up: &[f32]) {
    out.iter_mut().zip(grad).zip(gate).zip(up).for_each(|(((o, &d), &g), &u)| {
        let s = 1.0 / (1.0 + exp_approx(-g));
        *o = d * u * s * (1.0 + g * (1.0 - s));
    });
}

// ---------------------------------------------------------------------------------------------
// AdamW

type Unfused<const D: usize> = (Tensor<D>, Tensor<D>, Option<Moments<D>>);

/// One AdamW step of `param` in a single pass over parameter, gradient and moments, updating
/// them in place where nothing else holds them: the arithmetic of `burn::optim::AdamW` (first
/// and second moments, bias correction, `p·(1 − lr·wd) − lr·m̂ / (√v̂ + ε)`), which spends
/// fifteen tensor ops (passes over 500 MB for GPT-2 124M) on it. `moments` is `None` on the
/// first step. Returns the new parameter and moments, or `Err` with the inputs when they are not
/// plain f32 Flex tensors of one shape.
pub fn adamw_update<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<Moments<D>>,
    step: AdamWStep,
) -> Result<(Tensor<D>, Moments<D>), Unfused<D>> {
    let plain = |t: &Tensor<D>| t.dtype() == DType::F32 && !t.device().is_autodiff() && t.device() == Device::flex();
    let shape = param.dims();
    let fits = plain(&param)
        && plain(&grad)
        && grad.dims() == shape
        && moments.as_ref().is_none_or(|(m, v)| plain(m) && plain(v) && m.dims() == shape && v.dims() == shape);
    if !fits {
        return Err((param, grad, moments));
    }
    let into_flex = |t: Tensor<D>| {
        let flex = t.try_into_primitive::<Flex>().expect("checked: a plain f32 Flex tensor");
        if flex.layout().contiguous_offsets() == Some((0, flex.layout().shape().num_elements())) { flex } else { flex.to_contiguous() }
    };
    let elements = shape.iter().product::<usize>();
    let grad = into_flex(grad);
    let zeros = || FlexTensor::zeros(grad.layout().shape().clone(), DType::F32);
    let (mut m, mut v) = match moments {
        Some((m, v)) => (into_flex(m), into_flex(v)),
        None => (zeros(), zeros()),
    };
    let mut param = into_flex(param);
    let g = &slice(&grad)[..elements];

    let lr = step.lr as f32;
    let decay = (1.0 - step.lr * step.weight_decay as f64) as f32; // as Burn rounds it
    let scalars = AdamWScalars {
        beta_1: step.beta_1,
        beta_2: step.beta_2,
        factor_1: 1.0 - step.beta_1,
        factor_2: 1.0 - step.beta_2,
        correction_1: 1.0 - step.beta_1.powi(step.time),
        correction_2: 1.0 - step.beta_2.powi(step.time),
        epsilon: step.epsilon,
        lr,
        decay: if step.weight_decay == 0.0 || step.lr == 0.0 { None } else { Some(decay) },
    };
    const CHUNK: usize = 1 << 14;
    let m_values = m.storage_mut::<f32>(); // unique: moved out of the optimizer state (or new)
    let v_values = v.storage_mut::<f32>();
    let p_values = param.storage_mut::<f32>(); // copies only if the model still shares it
    p_values[..elements]
        .par_chunks_mut(CHUNK)
        .zip(m_values[..elements].par_chunks_mut(CHUNK))
        .zip(v_values[..elements].par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| adamw_apply(scalars, p, m, v, g));
    let wrap = |flex: FlexTensor| Tensor::<D>::from_primitive::<Flex>(flex);
    Ok((wrap(param), (wrap(m), wrap(v))))
}

#[derive(Debug, Clone, Copy)]
struct AdamWScalars {
    beta_1: f32,
    beta_2: f32,
    factor_1: f32,
    factor_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    lr: f32,
    decay: Option<f32>,
}

with_avx2! {
    /// One AdamW step of the chunks `p`, `m`, `v` (in place) with gradient `g`.
    fn adamw_apply(s: AdamWScalars, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) => adamw_apply_portable
}

/// Operation for operation what Burn's AdamW computes (same roundings, in the same order).
#[inline(always)]
fn adamw_apply_portable(s: AdamWScalars, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        *m = *m * s.beta_1 + g * s.factor_1;
        *v = *v * s.beta_2 + (g * g) * s.factor_2;
        let delta = (*m / s.correction_1) / ((*v / s.correction_2).sqrt() + s.epsilon);
        let decayed = match s.decay {
            Some(decay) => *p * decay,
            None => *p,
        };
        *p = decayed - delta * s.lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::log_softmax;

    fn random(shape: [usize; 2], seed: u64, device: &Device) -> Tensor<2> {
        device.seed(seed);
        Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 3.0), device)
    }

    fn composed(logits: Tensor<2>, targets: &[i64], ignore: i64) -> Tensor<1> {
        let n = targets.len();
        let ignored: Vec<bool> = targets.iter().map(|&t| t == ignore).collect();
        let safe: Vec<i64> = targets.iter().map(|&t| if t == ignore { 0 } else { t }).collect();
        let device = logits.device();
        let idx = Tensor::<2, Int>::from_data(TensorData::new(safe, [n, 1]), &device);
        let mask = Tensor::<1, Bool>::from_data(TensorData::new(ignored, [n]), &device);
        log_softmax(logits, 1).gather(1, idx).reshape([n]).neg().mask_fill(mask, 0.0)
    }

    fn ids(values: &[i64], device: &Device) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
    }

    fn max_abs(a: Tensor<2>, b: Tensor<2>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn fused_cross_entropy_matches_burn_forward_and_backward() {
        let device = Device::flex().autodiff();
        // Odd width (tail lanes), an ignored row, an upstream gradient that is not all ones.
        let (n, vocab) = (7, 1003);
        let targets = [3i64, -100, 1002, 0, 517, 77, 999];
        let weights = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0, -0.5, 0.25, 3.0, 1.0, 0.0], [n]), &device);
        let x = random([n, vocab], 5, &device).require_grad();
        let ours = cross_entropy_rows(x.clone(), ids(&targets, &device), -100).unwrap_or_else(|_| panic!("not fused"));
        let reference = composed(x.clone(), &targets, -100);
        let diff = (ours.clone() - reference.clone()).abs().max().into_scalar::<f32>();
        assert!(diff < 2e-5, "loss differs by {diff}");
        assert_eq!(ours.clone().slice(s![1..2]).into_scalar::<f32>(), 0.0, "ignored row");
        let g_ours = x.grad(&(ours * weights.clone()).sum().backward()).expect("gradient");
        let g_ref = x.grad(&(reference * weights).sum().backward()).expect("gradient");
        let diff = max_abs(g_ours, g_ref);
        assert!(diff < 1e-6, "gradient differs by {diff}");
    }


    #[test]
    fn fused_adamw_keeps_going_from_its_state_and_hands_back_what_it_cannot_take() {
        let device = Device::flex();
        let p0 = random([4, 5], 1, &device);
        let g = random([4, 5], 2, &device);
        let step = |time| AdamWStep { lr: 0.1, beta_1: 0.9, beta_2: 0.99, epsilon: 1e-8, weight_decay: 0.5, time };
        let (p1, moments) = adamw_update(p0.clone(), g.clone(), None, step(1)).unwrap_or_else(|_| panic!("not fused"));
        // By hand: m = 0.1·g, v = 0.01·g², m̂ = g, v̂ = g², so p1 = p0·(1 − 0.05) − 0.1·g/(|g| + ε).
        let expected = p0.clone().mul_scalar(0.95) - g.clone().div(g.clone().abs().add_scalar(1e-8)).mul_scalar(0.1);
        assert!(max_abs(p1.clone(), expected) < 1e-6);
        let (p2, _) = adamw_update(p1.clone(), g.clone(), Some(moments), step(2)).unwrap_or_else(|_| panic!("not fused"));
        // The same gradient twice: m̂ = g and v̂ = g² again.
        let expected = p1.mul_scalar(0.95) - g.clone().div(g.clone().abs().add_scalar(1e-8)).mul_scalar(0.1);
        assert!(max_abs(p2, expected) < 1e-6);
        let tracked = p0.clone().into_data();
        let tracked = Tensor::<2>::from_data(tracked, &device.clone().autodiff());
        assert!(adamw_update(tracked, g, None, step(1)).is_err(), "autodiff tensors go to Burn's AdamW");
    }

    #[test]
    fn plain_tensors_get_the_forward_and_bad_targets_fall_back() {
        let device = Device::flex();
        let x = random([3, 40], 9, &device);
        let targets = [1i64, 39, 0];
        let ours = cross_entropy_rows(x.clone(), ids(&targets, &device), -100).unwrap_or_else(|_| panic!("not fused"));
        let diff = (ours - composed(x.clone(), &targets, -100)).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{diff}");
        assert!(cross_entropy_rows(x.clone(), ids(&[1, 40, 0], &device), -100).is_err(), "target 40 is out of range");
        assert!(cross_entropy_rows(x, ids(&[1, 2], &device), -100).is_err(), "one target per row");
    }

    #[test]
    fn exp_approx_is_accurate_to_a_few_ulp() {
        let mut worst = 0.0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp_approx(x) as f64 - exact) / exact).abs());
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(exp_approx(-1000.0), exp_approx(-87.0));
        assert!(exp_approx(1000.0).is_finite());
        assert!(exp_approx(f32::NAN).is_nan());
    }
}
