//! NF4 weights (`--quantize nf4`, QLoRA) and int8 weights (`--quantize int8`) on the GPT-2 and
//! Llama fixtures: the quantized model's logits equal those of the f32 model holding the
//! dequantized weights (so the kernels add no error of their own) and its greedy ids equal that
//! model's; int8 is much closer to the f32 model than NF4; QLoRA at init is the quantized model;
//! merged = unmerged; the adapters load through the LoRA path on an unquantized base; parameter
//! counts and saving are honest about the quantized weights.

use gpt::burn::module::Module;
use gpt::burn::prelude::*;
use gpt::generate::{GenerateConfig, Padding, generate};
use gpt::hf::{load_language_model_dir, load_language_model_quantized, save_language_model_dir};
use gpt::io::{WeightDtype, fill_params_matching, named_params, parameter_counts};
use gpt::lora::{AdapterConfig, AdapterInit, AdapterTask, every_projection, quantize_model, quantize_model_as, save_adapter_dir};
use gpt::models::{CausalLm, LanguageModel};
use gpt::quant::{Nf4Options, Quantization, Quantized, is_quantized};
use gpt::{LoraConfig, Tokenizer};

use crate::common::{device, family_fixture_dir, max_abs_diff, tolerance_scale};

const FIXTURES: [&str; 2] = ["gpt2-tiny", "llama-tiny"];

fn load(name: &str, device: &Device) -> LanguageModel {
    load_language_model_dir(&family_fixture_dir(name), device).unwrap()
}

/// Deterministic token ids `[rows, len]` spread over the vocabulary.
fn token_ids(model: &dyn CausalLm, rows: usize, len: usize) -> Tensor<2, Int> {
    let vocab = model.vocab_size() as i64;
    let ids: Vec<i64> = (0..rows * len).map(|i| (i as i64 * 7919 + 13) % vocab).collect();
    Tensor::from_data(TensorData::new(ids, [rows, len]), &device())
}

fn logits(model: &dyn CausalLm, ids: Tensor<2, Int>) -> Vec<f32> {
    model.logits(ids).into_data().try_into_vec_as::<f32>().unwrap()
}

fn scale_of(values: &[f32]) -> f64 {
    values.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64)).max(1.0)
}

/// Block projections per layer: GPT-2's 4, the Llama family's 7.
fn projections(name: &str, model: &LanguageModel) -> usize {
    let layers = model.config_json()["n_layer"].as_u64().or(model.config_json()["num_hidden_layers"].as_u64()).unwrap() as usize;
    layers * if name == "gpt2-tiny" { 4 } else { 7 }
}

fn lora(name: &str) -> LoraConfig {
    let targets = if name == "gpt2-tiny" { "c_attn,attn.c_proj,c_fc,mlp.c_proj" } else { "all" };
    LoraConfig::new(4, 8.0, targets.parse().unwrap()).unwrap()
}

#[test]
fn quantized_logits_equal_the_f32_model_of_the_dequantized_weights() {
    for name in FIXTURES {
        for double_quant in [false, true] {
            let full = load(name, &device());
            let quantized = quantize_model(load(name, &device()), Nf4Options { double_quant }).unwrap();
            assert!(is_quantized(&quantized));
            // Every block projection holds an empty placeholder; counts still include its weights.
            let placeholders = named_params(&quantized).iter().filter(|(_, data)| data.num_elements() == 0).count();
            assert_eq!(placeholders, projections(name, &full), "{name}: every block projection is quantized");
            assert_eq!(parameter_counts(&quantized), parameter_counts(&full), "{name}: quantized weights count as parameters");
            let dequantized = quantized.clone().materialize();
            assert!(!is_quantized(&dequantized));
            // 6 positions per row take the streaming NF4 kernel, 40 the dequantized panels + GEMM.
            for len in [6, 40] {
                let ids = token_ids(&full, 2, len);
                let (got, same_values, f32_logits) = (logits(&quantized, ids.clone()), logits(&dequantized, ids.clone()), logits(&full, ids));
                let scale = scale_of(&f32_logits);
                let kernel_error = max_abs_diff(&got, &same_values);
                let quantization_error = max_abs_diff(&got, &f32_logits);
                eprintln!("{name}, double {double_quant}, T={len}: |logits| ≤ {scale:.3}; vs the dequantized f32 model {kernel_error:e}; vs f32 {quantization_error:e}");
                assert!(kernel_error <= 1e-5 * scale * tolerance_scale(), "{name}, T={len}: NF4 products differ by {kernel_error}");
                assert!(quantization_error > 0.0, "{name}: quantization changes the model");
            }
        }
    }
}

#[test]
fn greedy_ids_of_a_quantized_model_equal_the_dequantized_models() {
    for name in FIXTURES {
        let dir = family_fixture_dir(name);
        let full = load(name, &device());
        let quantized = quantize_model(load(name, &device()), Nf4Options::default()).unwrap();
        let dequantized = quantized.clone().materialize();
        let tokenizer = if name == "gpt2-tiny" { Tokenizer::gpt2() } else { Tokenizer::from_model_dir(&dir).unwrap() };
        let texts = ["Every effort moves you", "Hi", "The library opens at nine every morning, except on"];
        let prompts: Vec<Vec<u32>> = texts.iter().map(|text| tokenizer.try_encode(text).unwrap()).collect();
        let config = GenerateConfig { eos_tokens: vec![], ..GenerateConfig::greedy(16).with_tokenizer(&tokenizer) };
        let ids = |model: &LanguageModel, padding| {
            let out = generate(model, &prompts, &GenerateConfig { padding, ..config.clone() }).unwrap();
            out.into_iter().map(|c| c.token_ids).collect::<Vec<_>>()
        };
        let want = ids(&dequantized, Padding::Left);
        for padding in [Padding::Left, Padding::Right] {
            assert_eq!(ids(&quantized, padding), want, "{name}, {padding:?} padding");
        }
        let f32_ids = ids(&full, Padding::Left);
        let total: usize = f32_ids.iter().map(Vec::len).sum();
        let agree: usize = f32_ids.iter().zip(&want).map(|(a, b)| a.iter().zip(b).take_while(|(x, y)| x == y).count()).sum();
        eprintln!("{name}: NF4 greedy ids agree with f32 on {agree} of {total} tokens (up to each row's first difference)");
    }
}

/// int8 weights: the logits of the int8 model equal those of the f32 model holding its
/// dequantized weights (6 positions take the streaming int8 kernel, 40 the dequantized panels +
/// GEMM), and its error against the f32 model is a fraction of NF4's (8 bits a value with a
/// per-row scale against 4 bits with a per-64 one).
#[test]
fn int8_logits_equal_the_f32_model_of_the_dequantized_weights_and_beat_nf4() {
    for name in FIXTURES {
        let full = load(name, &device());
        let int8 = quantize_model_as(load(name, &device()), Quantization::Int8).unwrap();
        let nf4 = quantize_model(load(name, &device()), Nf4Options::default()).unwrap();
        assert!(is_quantized(&int8));
        let placeholders = named_params(&int8).iter().filter(|(_, data)| data.num_elements() == 0).count();
        assert_eq!(placeholders, projections(name, &full), "{name}: every block projection is quantized");
        assert_eq!(parameter_counts(&int8), parameter_counts(&full), "{name}: quantized weights count as parameters");
        let dequantized = int8.clone().materialize();
        assert!(!is_quantized(&dequantized));
        for len in [6, 40] {
            let ids = token_ids(&full, 2, len);
            let (got, same_values, f32_logits, nf4_logits) = (logits(&int8, ids.clone()), logits(&dequantized, ids.clone()), logits(&full, ids.clone()), logits(&nf4, ids));
            let scale = scale_of(&f32_logits);
            let kernel_error = max_abs_diff(&got, &same_values);
            let (int8_error, nf4_error) = (max_abs_diff(&got, &f32_logits), max_abs_diff(&nf4_logits, &f32_logits));
            eprintln!("{name}, T={len}: |logits| ≤ {scale:.3}; int8 vs its dequantized f32 model {kernel_error:e}; vs f32: int8 {int8_error:e}, NF4 {nf4_error:e}");
            assert!(kernel_error <= 1e-5 * scale * tolerance_scale(), "{name}, T={len}: int8 products differ by {kernel_error}");
            assert!(int8_error > 0.0, "{name}: quantization changes the model");
            assert!(int8_error * 8.0 < nf4_error, "{name}, T={len}: int8's error {int8_error} is not well below NF4's {nf4_error}");
        }
    }
}

#[test]
fn greedy_ids_of_an_int8_model_equal_the_dequantized_models() {
    for name in FIXTURES {
        let dir = family_fixture_dir(name);
        let full = load(name, &device());
        let int8 = quantize_model_as(load(name, &device()), Quantization::Int8).unwrap();
        let dequantized = int8.clone().materialize();
        let tokenizer = if name == "gpt2-tiny" { Tokenizer::gpt2() } else { Tokenizer::from_model_dir(&dir).unwrap() };
        let texts = ["Every effort moves you", "Hi", "The library opens at nine every morning, except on"];
        let prompts: Vec<Vec<u32>> = texts.iter().map(|text| tokenizer.try_encode(text).unwrap()).collect();
        let config = GenerateConfig { eos_tokens: vec![], ..GenerateConfig::greedy(16).with_tokenizer(&tokenizer) };
        let ids = |model: &LanguageModel, padding| {
            let out = generate(model, &prompts, &GenerateConfig { padding, ..config.clone() }).unwrap();
            out.into_iter().map(|c| c.token_ids).collect::<Vec<_>>()
        };
        let want = ids(&dequantized, Padding::Left);
        for padding in [Padding::Left, Padding::Right] {
            assert_eq!(ids(&int8, padding), want, "{name}, {padding:?} padding");
        }
        let f32_ids = ids(&full, Padding::Left);
        let total: usize = f32_ids.iter().map(Vec::len).sum();
        let agree: usize = f32_ids.iter().zip(&want).map(|(a, b)| a.iter().zip(b).take_while(|(x, y)| x == y).count()).sum();
        eprintln!("{name}: int8 greedy ids agree with f32 on {agree} of {total} tokens (up to each row's first difference)");
    }
}

/// Quantizing while loading (one f32 matrix at a time) gives the model that quantizing the loaded
/// f32 or bf16 model gives, bit for bit: from a checkpoint and from a random preset's draws, for
/// inference (NF4, NF4 double-quantized, int8) and under QLoRA's adapters.
#[test]
fn quantizing_at_load_equals_quantizing_the_loaded_model() {
    let schemes = [Quantization::Nf4(Nf4Options::default()), Quantization::Nf4(Nf4Options { double_quant: true }), Quantization::Int8];
    let sources = FIXTURES.map(|name| family_fixture_dir(name).to_string_lossy().into_owned()).into_iter().chain(["random:tiny".to_string(), "random:llama-tiny".to_string()]);
    for spec in sources {
        for dtype in [WeightDtype::F32, WeightDtype::Bf16] {
            let loaded = || gpt::hf::load_language_model_as(&spec, &device(), 7, dtype).unwrap();
            for scheme in schemes {
                let at_load = load_language_model_quantized(&spec, &device(), 7, dtype, Some(&every_projection(scheme))).unwrap();
                assert!(at_load.is_quantized() && !is_quantized(at_load.model()), "{spec}: matrices wait beside the model");
                let at_load = at_load.attach().unwrap();
                let after = quantize_model_as(loaded(), scheme).unwrap();
                let ids = token_ids(&after, 2, 9);
                assert_eq!(logits(&at_load, ids.clone()), logits(&after, ids), "{spec}, {dtype}, {scheme:?}");
                assert_eq!(parameter_counts(&at_load), parameter_counts(&after), "{spec}");
            }
            // QLoRA: the adapters' targets quantized at load, the same model as quantized after.
            let lora = LoraConfig::new(4, 8.0, "attn".parse().unwrap()).unwrap();
            let nf4 = Nf4Options::default();
            let at_load = load_language_model_quantized(&spec, &device(), 7, dtype, Some(&lora.quantize_at_load(nf4))).unwrap();
            let qlora = lora.apply_quantized_to(at_load, 3, nf4).unwrap();
            let after = lora.apply_quantized_to(Quantized::plain(loaded()), 3, nf4).unwrap();
            let fill = |m: LanguageModel| fill_params_matching(m, &mut AdapterInit { seed: 5, std: 0.05 }, |n| n.contains(".lora.")).unwrap();
            let (qlora, after) = (fill(qlora), fill(after));
            let ids = token_ids(&after, 2, 9);
            assert_eq!(logits(&qlora, ids.clone()), logits(&after, ids), "{spec}, {dtype}: QLoRA");
            assert_eq!(parameter_counts(&qlora), parameter_counts(&after), "{spec}: QLoRA");
        }
    }
}

/// QLoRA's adapters start at B = 0: the model is the quantized base exactly; they train as many
/// parameters as LoRA's and the quantized weights count as frozen ones.
#[test]
fn qlora_at_init_is_the_quantized_model() {
    for name in FIXTURES {
        let ad = device().autodiff();
        let lora = lora(name);
        let quantized = quantize_model(load(name, &device()), Nf4Options::default()).unwrap();
        let qlora = lora.apply_quantized_to(Quantized::plain(load(name, &ad)), 3, Nf4Options::default()).unwrap();
        let plain = lora.apply_to(load(name, &ad), 3).unwrap();
        assert_eq!(parameter_counts(&qlora), parameter_counts(&plain), "{name}: trainable and total parameters");
        let qlora = qlora.valid();
        let ids = token_ids(&quantized, 2, 40);
        let (got, want) = (logits(&qlora, ids.clone()), logits(&quantized, ids));
        assert!(max_abs_diff(&got, &want) <= 1e-6 * scale_of(&want), "{name}: B = 0 leaves the quantized model");
        // The same seeded A as LoRA's.
        let a = |m: &LanguageModel| named_params(m).into_iter().filter(|(n, _)| n.ends_with(".lora.a")).map(|(_, d)| d.try_to_vec::<f32>().unwrap()).collect::<Vec<_>>();
        assert_eq!(a(&qlora), a(&plain.valid()), "{name}");
    }
}

/// With trained-looking factors: merged (dequantized base + s·A·B) = unmerged; the adapters saved
/// in PEFT's layout load through the LoRA path on the dequantized base with the same logits, and
/// on the original unquantized base too (other logits: those of its unquantized weights).
#[test]
fn qlora_adapters_merge_and_load_on_an_unquantized_base() {
    for name in FIXTURES {
        let lora = lora(name);
        let qlora = lora.apply_quantized_to(Quantized::plain(load(name, &device())), 3, Nf4Options { double_quant: true }).unwrap();
        let qlora = fill_params_matching(qlora, &mut AdapterInit { seed: 5, std: 0.05 }, |n| n.contains(".lora.")).unwrap();
        let ids = token_ids(&qlora, 2, 12);
        let want = logits(&qlora, ids.clone());
        let merged = qlora.clone().materialize();
        assert!(!is_quantized(&merged));
        let diff = max_abs_diff(&logits(&merged, ids.clone()), &want);
        assert!(diff <= 1e-5 * scale_of(&want) * tolerance_scale(), "{name}: merged differs by {diff}");

        let tmp = tempfile::tempdir().unwrap();
        let error = save_language_model_dir(&qlora, &tmp.path().join("refused")).unwrap_err().to_string();
        assert!(error.contains("NF4") && error.contains("refused"), "{error}");
        let base_dir = tmp.path().join("dequantized-base");
        save_language_model_dir(&quantize_model(load(name, &device()), Nf4Options { double_quant: true }).unwrap().materialize(), &base_dir).unwrap();
        for (base, exact) in [(base_dir, true), (family_fixture_dir(name), false)] {
            let adapter = tmp.path().join(format!("adapter-{exact}"));
            let config = AdapterConfig::new(&lora.for_model(&qlora).unwrap(), AdapterTask::CausalLm, base.to_str().unwrap());
            save_adapter_dir(&adapter, &qlora, &config, Vec::new()).unwrap();
            let loaded = gpt::hf::load_language_model(adapter.to_str().unwrap(), &device(), 0).unwrap();
            let diff = max_abs_diff(&logits(&loaded, ids.clone()), &want);
            eprintln!("{name}: adapters on the {} base: logits differ by {diff:e}", if exact { "dequantized" } else { "f32" });
            match exact {
                true => assert!(diff <= 1e-5 * scale_of(&want) * tolerance_scale(), "{name}: {diff}"),
                // The fixtures' random weights are far from normal: NF4 moves their logits a lot.
                false => assert!(diff.is_finite(), "{name}: the adapters load on the f32 base"),
            }
        }
    }
}
