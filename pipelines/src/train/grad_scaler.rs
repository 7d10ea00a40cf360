//! Dynamic loss scaling for `--precision f16-mixed`: `torch.amp.GradScaler`'s algorithm and
//! defaults. f16 holds nothing below 2⁻²⁴ (≈6e-8), where most of a language model's gradients
//! would fall, so the loss is multiplied by the scale (2¹⁶ to begin with) before backward; the
//! gradients are divided by it again (in f32) before clipping and the optimizer. A step whose
//! gradients hold an inf or a NaN (an f16 overflow) is skipped and the scale halved; after
//! `growth_interval` (2000) good steps in a row it doubles.

use std::cell::Cell;

use gpt::burn::module::{Module, ModuleVisitor, Param};
use gpt::burn::optim::GradientsParams;
use gpt::burn::prelude::*;
use gpt::burn::tensor::Gradients;
use serde::{Deserialize, Serialize};

/// torch.amp.GradScaler's `init_scale`, `growth_factor`, `backoff_factor` and `growth_interval`.
pub const INIT_SCALE: f32 = 65536.0;
pub const GROWTH_FACTOR: f64 = 2.0;
pub const BACKOFF_FACTOR: f64 = 0.5;
pub const GROWTH_INTERVAL: u32 = 2000;

#[derive(Debug, Clone, PartialEq)]
pub struct GradScaler {
    scale: f32,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: u32,
    /// Good steps since the scale last changed.
    growth_tracker: u32,
}

/// What a checkpoint keeps of a [`GradScaler`] (its factors come from the code).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradScalerState {
    pub scale: f32,
    pub growth_tracker: u32,
}

impl Default for GradScaler {
    fn default() -> Self {
        Self::new(INIT_SCALE, GROWTH_FACTOR, BACKOFF_FACTOR, GROWTH_INTERVAL)
    }
}

impl GradScaler {
    pub fn new(init_scale: f32, growth_factor: f64, backoff_factor: f64, growth_interval: u32) -> Self {
        Self { scale: init_scale, growth_factor, backoff_factor, growth_interval: growth_interval.max(1), growth_tracker: 0 }
    }

    /// What the loss is multiplied by before backward.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// `grads` divided by the scale, and whether every value was finite (`unscale_`'s
    /// `found_inf`, negated). Call it on the gradients every rank agrees on (after the all-reduce)
    /// so that every rank skips the same steps.
    pub fn unscale<M: Module>(&self, model: &M, mut grads: GradientsParams) -> (GradientsParams, bool) {
        // torch multiplies by the f32 reciprocal, computed in double.
        let inverse = (1.0 / self.scale as f64) as f32;
        struct Unscale<'a> {
            grads: &'a mut GradientsParams,
            inverse: f32,
            /// Σ 0·g over every gradient: 0·g is ±0 for a finite g and NaN for ±inf and NaN, and
            /// zeros cannot add up to an overflow, so the sum is NaN exactly when some g is not
            /// finite (one pass per gradient, one read in all).
            zeros: Option<Tensor<1>>,
        }
        impl ModuleVisitor for Unscale<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(g) = self.grads.remove::<D>(param.id) {
                    let zeros = g.clone().mul_scalar(0.0).sum();
                    self.zeros = Some(match self.zeros.take() {
                        Some(sum) => sum + zeros,
                        None => zeros,
                    });
                    self.grads.register(param.id, g.mul_scalar(self.inverse));
                }
            }
        }
        let mut visitor = Unscale { grads: &mut grads, inverse, zeros: None };
        model.visit(&mut visitor);
        let finite = visitor.zeros.is_none_or(|sum| sum.into_scalar::<f32>().is_finite());
        (grads, finite)
    }

    /// The scale after an optimizer step (`update()`; `_amp_update_scale_`): backed off and the
    /// count restarted when the step found an inf or a NaN; else one more good step, and grown
    /// (if the grown scale is still a finite f32) when they reach `growth_interval`.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale = (self.scale as f64 * self.backoff_factor) as f32;
            self.growth_tracker = 0;
            return;
        }
        self.growth_tracker += 1;
        if self.growth_tracker == self.growth_interval {
            let grown = (self.scale as f64 * self.growth_factor) as f32;
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        }
    }

    pub fn state(&self) -> GradScalerState {
        GradScalerState { scale: self.scale, growth_tracker: self.growth_tracker }
    }

    pub fn load_state(&mut self, state: GradScalerState) {
        self.scale = state.scale;
        self.growth_tracker = state.growth_tracker;
    }
}

thread_local! {
    /// The loss scale of the training step running on this thread ([`with_loss_scale`]).
    static LOSS_SCALE: Cell<f32> = const { Cell::new(1.0) };
}

/// Runs `step` (a training step: forward and [`scaled_backward`]) with its loss multiplied by
/// `scale` before backward. A thread-local, because Burn's `TrainStep::step(&self, batch)` has no
/// room for it and the step runs on the caller's thread.
pub fn with_loss_scale<R>(scale: f32, step: impl FnOnce() -> R) -> R {
    /// Puts the previous scale back, also when the step panics.
    struct Restore(f32);
    impl Drop for Restore {
        fn drop(&mut self) {
            LOSS_SCALE.set(self.0);
        }
    }
    let _restore = Restore(LOSS_SCALE.replace(scale));
    step()
}

/// The gradients of `loss` times the scale [`with_loss_scale`] set on this thread (outside it, or
/// at scale 1, of `loss` itself, with no extra op in the graph).
pub fn scaled_backward(loss: &Tensor<1>) -> Gradients {
    match LOSS_SCALE.get() {
        1.0 => loss.backward(),
        scale => loss.clone().mul_scalar(scale).backward(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scales torch.amp.GradScaler("cpu", init_scale=65536, growth_interval=3) goes through
    /// for this sequence of steps (true: the loss was made infinite), `scaler.get_scale()` and
    /// `scaler._growth_tracker` after each `update()`, as torch 2.15 printed them: back off at
    /// every inf (and restart the count), double after 3 good steps in a row.
    #[test]
    fn the_scale_follows_torchs_sequence() {
        let mut scaler = GradScaler::new(65536.0, 2.0, 0.5, 3);
        let steps = [false, false, true, true, false, false, false, false, false, false, true, false, false, false];
        let want = [
            65536.0, 65536.0, 32768.0, 16384.0, 16384.0, 16384.0, 32768.0, 32768.0, 32768.0, 65536.0, 32768.0, 32768.0, 32768.0,
            65536.0,
        ];
        let trackers = [1, 2, 0, 0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 0];
        for (i, &found_inf) in steps.iter().enumerate() {
            scaler.update(found_inf);
            assert_eq!(scaler.scale(), want[i], "after step {}", i + 1);
            assert_eq!(scaler.state().growth_tracker, trackers[i], "after step {}", i + 1);
        }
    }

    #[test]
    fn defaults_are_torchs() {
        let scaler = GradScaler::default();
        assert_eq!(scaler, GradScaler::new(65536.0, 2.0, 0.5, 2000));
        assert_eq!(scaler.scale(), 2f32.powi(16));
        let mut scaler = GradScaler::default();
        (0..1999).for_each(|_| scaler.update(false));
        assert_eq!((scaler.scale(), scaler.state().growth_tracker), (65536.0, 1999));
        scaler.update(false);
        assert_eq!((scaler.scale(), scaler.state().growth_tracker), (131072.0, 0));
    }

    /// A scale that would grow past f32's range stays (torch checks `isfinite(new_scale)`), and
    /// the count restarts all the same.
    #[test]
    fn the_scale_never_grows_to_infinity() {
        let mut scaler = GradScaler::new(2f32.powi(127), 2.0, 0.5, 1);
        scaler.update(false);
        assert_eq!((scaler.scale(), scaler.state().growth_tracker), (2f32.powi(127), 0));
    }

    #[test]
    fn the_state_round_trips_through_json_exactly() {
        let mut scaler = GradScaler::new(3.0e-3, 2.0, 0.5, 7);
        scaler.update(true);
        scaler.update(false);
        let json = serde_json::to_string(&scaler.state()).unwrap();
        let mut other = GradScaler::new(3.0e-3, 2.0, 0.5, 7);
        other.load_state(serde_json::from_str(&json).unwrap());
        assert_eq!(other, scaler);
    }

    #[derive(Module, Debug)]
    struct Two {
        a: Param<Tensor<2>>,
        b: Param<Tensor<1>>,
    }

    /// The gradients of `a·x + b` summed, for `a` and `b` of these values, times `loss_scale`.
    fn gradients(a: [[f32; 2]; 2], b: [f32; 2], x: [f32; 2], loss_scale: f32) -> (Two, GradientsParams) {
        let device = Device::flex().autodiff();
        let model = Two {
            a: Param::from_tensor(Tensor::<2>::from_data(a, &device).require_grad()),
            b: Param::from_tensor(Tensor::<1>::from_data(b, &device).require_grad()),
        };
        let y = model.a.val().matmul(Tensor::<2>::from_data([[x[0]], [x[1]]], &device)).reshape([2]) + model.b.val();
        let loss = y.sum();
        let grads = with_loss_scale(loss_scale, || scaled_backward(&loss));
        let grads = GradientsParams::from_grads(grads, &model);
        (model, grads)
    }

    #[test]
    fn the_loss_is_scaled_for_backward_and_the_gradients_unscaled_exactly() {
        let (model, grads) = gradients([[1.0, 2.0], [3.0, 4.0]], [0.5, -0.5], [0.25, 3.0], 1024.0);
        let a = grads.get::<2>(model.a.id).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a, [256.0, 3072.0, 256.0, 3072.0], "dL/da = x, times the scale");
        let (grads, finite) = GradScaler::new(1024.0, 2.0, 0.5, 10).unscale(&model, grads);
        assert!(finite);
        assert_eq!(grads.get::<2>(model.a.id).unwrap().into_data().try_to_vec::<f32>().unwrap(), [0.25, 3.0, 0.25, 3.0]);
        assert_eq!(grads.get::<1>(model.b.id).unwrap().into_data().try_to_vec::<f32>().unwrap(), [1.0, 1.0]);
        // Outside with_loss_scale the loss is not scaled.
        assert_eq!(LOSS_SCALE.get(), 1.0);
    }

    #[test]
    fn an_inf_or_a_nan_anywhere_is_found() {
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let (model, grads) = gradients([[1.0, 2.0], [3.0, 4.0]], [0.5, -0.5], [bad, 1.0], 1.0);
            let (_, finite) = GradScaler::default().unscale(&model, grads);
            assert!(!finite, "{bad}");
        }
        // Huge but finite gradients are finite (no sum of them can overflow the check).
        let (model, grads) = gradients([[1.0, 2.0], [3.0, 4.0]], [0.5, -0.5], [3e38, 3e38], 1.0);
        assert!(GradScaler::default().unscale(&model, grads).1);
    }
}
