//! The forward pass against transformers' outputs for the fixture model (tolerances from
//! expected.json), and greedy decoding with and without the KV cache.

use crate::common::*;
use gpt::generate::{GenerateConfig, generate};

#[test]
fn logits_match_transformers() {
    let model = tiny_model();
    let logits = model.forward(input_ids());
    assert_eq!(logits.dims(), [2, 8, 50257]);
    let (shape, expected) = expected_f32("logits");
    assert_eq!(shape, [2, 8, 50257]);
    let diff = max_abs_diff(&to_vec(logits), &expected);
    let tol = tolerance("logits", "abs");
    println!("logits max abs diff vs transformers: {diff:.3e} (tolerance {tol:.0e})");
    assert!(diff <= tol, "logits differ by {diff}");
}

#[test]
fn hidden_states_and_block_outputs_match_transformers() {
    let model = tiny_model();
    let states = model.hidden_states(input_ids());
    assert_eq!(states.len(), 4, "embeddings, 2 block outputs, ln_f");
    let tol = tolerance("hidden_states_and_block_outputs", "abs");
    let names = ["hidden_states_0", "block_output_0", "block_output_1", "hidden_states_2"];
    for (state, name) in states.iter().zip(names) {
        let (shape, expected) = expected_f32(name);
        assert_eq!(state.dims().to_vec(), shape, "{name}");
        let diff = max_abs_diff(&to_vec(state.clone()), &expected);
        println!("{name}: max abs diff {diff:.3e}");
        assert!(diff <= tol, "{name} differs by {diff}");
    }
    // `hidden` is the same final state the head uses.
    let diff = max_abs_diff(&to_vec(model.hidden(input_ids())), &expected_f32("hidden_states_2").1);
    assert!(diff <= tol);
}

fn greedy_tokens(use_cache: bool) -> Vec<i64> {
    let model = tiny_model();
    let (_, prompt) = expected_i64("greedy_prompt_ids");
    let prompt: Vec<u32> = prompt.iter().map(|&t| t as u32).collect();
    // The fixture's greedy run does not stop at <|endoftext|>.
    let config = GenerateConfig { eos_tokens: vec![], use_cache, ..GenerateConfig::greedy(20) };
    let out = generate(&model, &[prompt.clone()], &config).unwrap();
    assert_eq!(out[0].prompt_ids, prompt);
    out[0].token_ids.iter().map(|&t| t as i64).collect()
}

#[test]
fn greedy_tokens_match_transformers_with_and_without_cache() {
    let (_, expected) = expected_i64("greedy_ids");
    assert_eq!(greedy_tokens(true), expected, "KV-cache path");
    assert_eq!(greedy_tokens(false), expected, "recompute path");
}

#[test]
fn cached_step_logits_match_the_reference_values() {
    // The winning logit and the top1-top2 margin at each greedy step check the cache on values,
    // not just on argmaxes.
    let model = tiny_model();
    let (_, prompt) = expected_i64("greedy_prompt_ids");
    let (_, top1) = expected_f32("greedy_step_top1_logit");
    let (_, margin) = expected_f32("greedy_step_margin");
    let mut tokens: Vec<u32> = prompt.iter().map(|&t| t as u32).collect();
    let mut cache = model.new_cache(1);
    let mut input = tokens.clone();
    for step in 0..20 {
        let hidden = model.forward_cached(&input, &vec![false; input.len()], &mut cache).unwrap();
        let t = input.len();
        let logits = model.head(hidden.slice(gpt::burn::prelude::s![.., t - 1.., ..]));
        let mut row = to_vec(logits);
        let best = gpt::generate::sampling::argmax(&row) as usize;
        let first = row[best];
        row[best] = f32::NEG_INFINITY;
        let second = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let tol = 1e-4 * tolerance_scale() as f32;
        assert!((first - top1[step]).abs() <= tol, "step {step}: top1 {first} vs {}", top1[step]);
        assert!((first - second - margin[step]).abs() <= tol, "step {step}: margin");
        tokens.push(best as u32);
        input = vec![best as u32];
    }
}

#[test]
fn training_mode_applies_dropout_and_eval_mode_matches_transformers() {
    use gpt::burn::prelude::*;
    let train_device = device().autodiff();
    // The fixture's config keeps GPT-2's dropout of 0.1.
    let model = gpt::hf::load_model_dir(&fixture_dir(), &train_device).unwrap();
    let ids = || Tensor::<2, Int>::from_data(input_ids().into_data(), &train_device);
    let (_, expected) = expected_f32("logits");
    let a = to_vec(model.forward(ids()).inner());
    let b = to_vec(model.forward(ids()).inner());
    assert_ne!(a, b, "two training passes draw different dropout masks");
    assert!(max_abs_diff(&a, &expected) > 1e-2, "dropout changes the logits");

    let eval = model.valid();
    let diff = max_abs_diff(&to_vec(eval.forward(input_ids())), &expected);
    assert!(diff <= tolerance("logits", "abs"), "eval mode: {diff}");
}

#[test]
fn the_attention_path_with_dropout_computes_the_same_attention() {
    // Attention dropout needs the attention weights materialised (Burn's fused kernel has no
    // dropout). With a vanishing probability that path must reproduce transformers' logits.
    let train_device = device().autodiff();
    let mut model = gpt::hf::load_model_dir(&fixture_dir(), &train_device).unwrap().with_dropout(0.0);
    for block in &mut model.h {
        block.attn.attn_dropout.prob = 1e-12;
    }
    let ids = gpt::burn::prelude::Tensor::<2, gpt::burn::prelude::Int>::from_data(input_ids().into_data(), &train_device);
    let logits = to_vec(model.forward(ids).inner());
    let diff = max_abs_diff(&logits, &expected_f32("logits").1);
    assert!(diff <= tolerance("logits", "abs"), "materialised attention: {diff}");
}
