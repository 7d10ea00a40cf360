//! The masked cross-entropy and an AdamW run against the fixture's PyTorch numbers.

use crate::gpt_common::{device, expected_f32, expected_i64, fixture_dir, tolerance, tolerance_scale};
use gpt::burn::module::Module;
use gpt::burn::optim::{AdamWConfig, GradientsParams};
use gpt::burn::prelude::*;
use pipelines::train::{OptimConfig, cross_entropy_masked, cross_entropy_per_token};

/// An expected float tensor's values as f64.
fn expected(name: &str) -> Vec<f64> {
    expected_f32(name).1.into_iter().map(f64::from).collect()
}

fn int_tensor(name: &str, device: &Device) -> Tensor<2, Int> {
    let (shape, values) = expected_i64(name);
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Logits for the first 7 positions (those that have a next-token target).
fn shifted_logits(model: &gpt::Gpt, device: &Device) -> Tensor<3> {
    model.forward(int_tensor("input_ids", device)).slice(s![.., 0..7, ..])
}

fn assert_rel(got: f64, want: f64, rel: f64, what: &str) {
    let err = (got - want).abs() / want.abs();
    println!("{what}: {got:.8} vs {want:.8} (rel err {err:.2e})");
    assert!(err <= rel, "{what}: {got} vs {want}, relative error {err:.2e} > {rel:.0e}");
}

#[test]
fn cross_entropy_matches_pytorch_with_and_without_ignored_targets() {
    let device = device();
    let model = gpt::hf::load_model_dir(&fixture_dir(), &device).unwrap();
    let logits = shifted_logits(&model, &device);
    let rel = tolerance("loss_and_loss_masked", "rel");

    let loss = cross_entropy_masked(logits.clone(), int_tensor("targets", &device)).into_scalar::<f32>() as f64;
    assert_rel(loss, expected("loss")[0], rel, "loss");

    let masked = cross_entropy_masked(logits.clone(), int_tensor("targets_masked", &device)).into_scalar::<f32>() as f64;
    assert_rel(masked, expected("loss_masked")[0], rel, "loss_masked");

    let per_token = cross_entropy_per_token(logits.clone(), int_tensor("targets_masked", &device));
    let per_token: Vec<f32> = per_token.into_data().try_into_vec().unwrap();
    let want = expected("loss_per_token_masked");
    for (i, (g, w)) in per_token.iter().zip(&want).enumerate() {
        assert!((*g as f64 - w).abs() <= 1e-4 * tolerance_scale(), "position {i}: {g} vs {w}");
    }
    assert_eq!(per_token[7..11], [0.0; 4], "ignored positions contribute nothing");

    // All targets ignored: zero, not NaN.
    let none = Tensor::<2, Int>::full([2, 7], -100, &device);
    assert_eq!(cross_entropy_masked(logits, none).into_scalar::<f32>(), 0.0);
}

/// The global L2 norm of all gradients (each parameter once).
fn global_grad_norm(model: &gpt::Gpt, grads: &GradientsParams) -> f64 {
    struct SumSquares<'a>(&'a GradientsParams, f64);
    impl gpt::burn::module::ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &gpt::burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                self.1 += g.square().sum().into_scalar::<f32>() as f64;
            }
        }
    }
    let mut visitor = SumSquares(grads, 0.0);
    model.visit(&mut visitor);
    visitor.1.sqrt()
}

#[test]
fn three_adamw_steps_match_pytorch() {
    // torch.optim.AdamW(lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.1 on every
    // parameter), dropout 0, no clipping; the tied wte/head is one parameter.
    let device = device().autodiff();
    let mut model = gpt::hf::load_model_dir(&fixture_dir(), &device).unwrap().with_dropout(0.0);
    // The optimizer every llmfs task trains with (fused on the CPU), and Burn's AdamW beside it.
    let mut optimizer = OptimConfig { weight_decay: 0.1, decay_all: true, ..OptimConfig::default() }.optimizer();
    let mut burns = AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(0.1).init();
    let mut burns_model = model.clone();
    let targets = int_tensor("targets", &device);
    let want_losses = expected("adamw_losses");
    let want_norms = expected("adamw_grad_global_l2");
    let loss_rel = tolerance("adamw_losses", "rel");
    let norm_rel = tolerance("adamw_grad_global_l2", "rel");
    for step in 0..4 {
        let loss = cross_entropy_masked(shifted_logits(&model, &device), targets.clone());
        assert_rel(loss.clone().into_scalar::<f32>() as f64, want_losses[step], loss_rel, &format!("adamw loss {step}"));
        if step == 3 {
            break;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        assert_rel(global_grad_norm(&model, &grads), want_norms[step], norm_rel, &format!("grad norm {step}"));
        model = optimizer.step(1e-3, model, grads);
        let burns_loss = cross_entropy_masked(shifted_logits(&burns_model, &device), targets.clone());
        burns_model = burns.step(1e-3, burns_model.clone(), GradientsParams::from_grads(burns_loss.backward(), &burns_model));
        let (ours, theirs) = (model.valid().wte.weight.val(), burns_model.valid().wte.weight.val());
        let diff = (ours.clone() - theirs).abs().max().into_scalar::<f32>();
        assert!(diff <= 1e-6, "step {step}: llmfs's AdamW and Burn's differ by {diff} on wte");
        if step == 0 {
            let abs = tolerance("adamw_ln_f_weight_after_step1_and_adamw_wte_rows_after_step1", "abs");
            let ln_f: Vec<f32> = model.ln_f.gamma.val().into_data().try_into_vec().unwrap();
            let want = expected("adamw_ln_f_weight_after_step1");
            for (g, w) in ln_f.iter().zip(&want) {
                assert!((*g as f64 - w).abs() <= abs, "ln_f.weight after step 1: {g} vs {w}");
            }
            let wte = model.valid().wte.weight.val();
            let want = expected("adamw_wte_rows_after_step1");
            for (r, row) in [6109usize, 50256].into_iter().enumerate() {
                let got: Vec<f32> = wte.clone().slice(s![row..row + 1, ..]).into_data().try_into_vec().unwrap();
                for (g, w) in got.iter().zip(&want[r * 64..(r + 1) * 64]) {
                    assert!((*g as f64 - w).abs() <= abs, "wte row {row} after step 1: {g} vs {w}");
                }
            }
        }
    }
}
