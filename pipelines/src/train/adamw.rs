//! AdamW as one fused pass per parameter on the CPU (`gpt::backend::kernels::adamw_update`), and
//! Burn's own `AdamW` everywhere else. It keeps Burn's state type, so checkpoints are the same
//! either way.

use gpt::burn::optim::{AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use gpt::burn::prelude::*;
use gpt::backend::{AdamWStep, kernels::adamw_update};

#[derive(Clone)]
pub struct FusedAdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    /// For tensors the fused kernel does not take (GPU backends).
    burn: AdamW,
}

impl FusedAdamW {
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32) -> Self {
        let burn = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(weight_decay)
            .build();
        Self { beta_1, beta_2, epsilon, weight_decay, burn }
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // AMSGrad is off here, so a state never has a max_moment_2.
        let time = state.as_ref().map_or(0, |s| s.momentum.time) + 1;
        let step = AdamWStep {
            lr,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            time: time as i32,
        };
        let moments = state.map(|s| (s.momentum.moment_1, s.momentum.moment_2));
        match adamw_update(tensor, grad, moments, step) {
            Ok((tensor, (moment_1, moment_2))) => {
                (tensor, Some(AdamWState::new(AdaptiveMomentumState::new(time, moment_1, moment_2))))
            }
            Err((tensor, grad, moments)) => {
                let state = moments.map(|(m, v)| AdamWState::new(AdaptiveMomentumState::new(time - 1, m, v)));
                self.burn.step(lr, tensor, grad, state)
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <AdamW as Optimizer>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt::burn::module::Module;
    use gpt::burn::nn::{Linear, LinearConfig};
    use gpt::burn::optim::{GradientsParams, ModuleOptimizer};

    /// Three steps of the fused optimizer and of Burn's AdamW from the same start, on weights
    /// with and without decay (weights, bias).
    #[test]
    fn fused_adamw_follows_burns_adamw() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let start = LinearConfig::new(37, 29).init(&device);
        let run = |mut optimizer: ModuleOptimizer| {
            let mut layer: Linear = start.clone();
            for step in 0..3 {
                device.seed(10 + step);
                let x = Tensor::<2>::random([5, 37], gpt::burn::tensor::Distribution::Normal(0.0, 1.0), &device);
                let loss = layer.forward(x).powf_scalar(2.0).mean();
                let grads = GradientsParams::from_grads(loss.backward(), &layer);
                layer = optimizer.step(1e-2, layer, grads);
            }
            layer
        };
        let fused = run(ModuleOptimizer::from(FusedAdamW::new(0.9, 0.95, 1e-8, 0.1)));
        let burn = run(AdamWConfig::new().with_beta_2(0.95).with_epsilon(1e-8).with_weight_decay(0.1).init());
        let diff = |a: Tensor<2>, b: Tensor<2>| ((a.clone() - b).abs().max().into_scalar::<f32>(), a.abs().max().into_scalar::<f32>());
        let (d, scale) = diff(fused.weight.val(), burn.weight.val());
        assert!(d <= 1e-6 * scale, "weights differ by {d} (scale {scale})");
        let (d, scale) = diff(fused.bias.clone().map(|b| b.val().unsqueeze()).expect("bias"), burn.bias.map(|b| b.val().unsqueeze()).expect("bias"));
        assert!(d <= 1e-6 * scale, "biases differ by {d} (scale {scale})");
        assert!(fused.weight.val().into_data() != start.weight.val().into_data(), "the weights moved");
        let _ = fused.devices();
    }
}
