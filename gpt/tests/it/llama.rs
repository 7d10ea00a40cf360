//! The Llama family against transformers (fixtures `llama-tiny`: Llama 3.1 shapes, GQA, `llama3`
//! rope scaling, untied head, several EOS ids; `qwen3-tiny`: q/k norm, head_dim ≠ hidden/heads,
//! tied head): logits, greedy ids through the KV cache, the tokenizers and chat templates, both
//! config forms, sharded checkpoints, and the errors for what is not supported.

use std::path::Path;

use gpt::burn::prelude::*;
use gpt::generate::{GenerateConfig, Padding, generate};
use gpt::hf::{load_language_model_dir, load_llama_dir};
use gpt::models::CausalLm;
use gpt::text::{ChatMessage, StreamDecoder};
use gpt::Tokenizer;

use crate::common::{device, expected_f32_in, expected_i64_in, family_fixture_dir, max_abs_diff, tolerance_scale};

const FIXTURES: [&str; 2] = ["llama-tiny", "qwen3-tiny"];

fn expected_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}

fn logits_of(model: &dyn CausalLm, dir: &Path) -> Vec<f32> {
    let (shape, ids) = expected_i64_in(dir, "input_ids");
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, shape), &device());
    model.logits(ids).into_data().try_into_vec_as::<f32>().unwrap()
}

/// The largest difference from transformers' logits, checked against the fixture's tolerance.
fn assert_logits_match(model: &dyn CausalLm, dir: &Path) {
    let (shape, expected) = expected_f32_in(dir, "logits");
    assert_eq!(shape, [2, 6, model.vocab_size()]);
    let tolerance = expected_json(dir)["tolerances"]["logits_abs"].as_f64().unwrap() * tolerance_scale();
    let diff = max_abs_diff(&logits_of(model, dir), &expected);
    eprintln!("{}: max abs logits diff {diff:e} (tolerance {tolerance:e})", dir.display());
    assert!(diff <= tolerance, "{}: logits differ from transformers' by {diff} (> {tolerance})", dir.display());
}

#[test]
fn logits_match_transformers() {
    for name in FIXTURES {
        let dir = family_fixture_dir(name);
        let model = load_language_model_dir(&dir, &device()).unwrap();
        assert_eq!(model.architecture(), if name == "llama-tiny" { "LlamaForCausalLM" } else { "Qwen3ForCausalLM" });
        assert_logits_match(&model, &dir);
    }
}

#[test]
fn greedy_ids_through_the_kv_cache_match_transformers() {
    for name in FIXTURES {
        let dir = family_fixture_dir(name);
        let expected = expected_json(&dir);
        let tokenizer = Tokenizer::from_model_dir(&dir).unwrap();
        let prompt = tokenizer.try_encode(expected["greedy_prompt"].as_str().unwrap()).unwrap();
        let prompt_ids: Vec<u32> = serde_json::from_value(expected["greedy_prompt_ids"].clone()).unwrap();
        assert_eq!(prompt, prompt_ids, "{name}: the prompt encoded with the tokenizer's defaults");
        let (_, greedy) = expected_i64_in(&dir, "greedy_ids");
        let greedy: Vec<u32> = greedy.iter().map(|&id| id as u32).collect();
        let model = load_language_model_dir(&dir, &device()).unwrap();
        // The fixture's run ignored end-of-text.
        let config = GenerateConfig { eos_tokens: vec![], ..GenerateConfig::greedy(20).with_tokenizer(&tokenizer) };
        for use_cache in [true, false] {
            let out = generate(&model, &[prompt.clone()], &GenerateConfig { use_cache, ..config.clone() }).unwrap().remove(0);
            assert_eq!(out.token_ids, greedy, "{name}, use_cache {use_cache}");
        }
        let out = generate(&model, &[prompt.clone()], &config).unwrap().remove(0);
        assert_eq!(out.text, expected["greedy_text"].as_str().unwrap(), "{name}: the decoded text");
    }
}

#[test]
fn a_padded_batch_generates_what_each_prompt_generates_alone() {
    // GQA's cache holds the KV heads only, and rotary positions skip the padding.
    let dir = family_fixture_dir("llama-tiny");
    let model = load_llama_dir(&dir, &device()).unwrap();
    let prompts = vec![vec![128000, 11769, 5149, 11031, 499], vec![9906, 11], vec![128000, 978, 6489, 83826, 91416, 323, 73958, 17161]];
    let config = GenerateConfig { eos_tokens: vec![], ..GenerateConfig::greedy(8) };
    let config = GenerateConfig { tokenizer: Tokenizer::from_model_dir(&dir).unwrap(), ..config };
    let solo: Vec<Vec<u32>> = prompts.iter().map(|p| generate(&model, &[p.clone()], &config).unwrap()[0].token_ids.clone()).collect();
    for padding in [Padding::Left, Padding::Right] {
        let batch = generate(&model, &prompts, &GenerateConfig { padding, ..config.clone() }).unwrap();
        let batch: Vec<Vec<u32>> = batch.into_iter().map(|c| c.token_ids).collect();
        assert_eq!(batch, solo, "{padding:?}");
    }
}

#[test]
fn tokenizers_encode_as_hugging_face_tokenizers_does() {
    for name in FIXTURES {
        let dir = family_fixture_dir(name);
        let tokenizer = Tokenizer::from_model_dir(&dir).unwrap();
        let encodings = expected_json(&dir)["encodings"].as_object().unwrap().clone();
        assert!(encodings.len() >= 5);
        for (text, ids) in encodings {
            let ids: Vec<u32> = serde_json::from_value(ids).unwrap();
            assert_eq!(tokenizer.try_encode_ordinary(&text).unwrap(), ids, "{name}: {text:?}");
            assert_eq!(tokenizer.decode(&ids).unwrap(), text, "{name}: decoding {text:?}");
            // Streaming never splits a character, and adds up to the whole text.
            let mut stream = StreamDecoder::new();
            let mut streamed = String::new();
            for &id in &ids {
                let piece = stream.push(&tokenizer, id).unwrap();
                assert!(!piece.contains('\u{FFFD}'), "{name}: streaming split a character of {text:?}: {piece:?}");
                streamed.push_str(&piece);
            }
            streamed.push_str(&stream.finish(&tokenizer));
            assert_eq!(streamed, text, "{name}");
        }
        assert!(tokenizer.decode(&[u32::MAX]).unwrap_err().to_string().contains("not in the vocabulary"));
    }
    let llama = Tokenizer::from_model_dir(&family_fixture_dir("llama-tiny")).unwrap();
    assert_eq!(llama.eos_ids(), [128001, 128008, 128009], "generation_config.json's list");
    assert_eq!(llama.start_id(), 128000);
    let qwen = Tokenizer::from_model_dir(&family_fixture_dir("qwen3-tiny")).unwrap();
    assert_eq!(qwen.eos_ids(), [151645]);
    assert_eq!(qwen.pad_id(), 151643, "tokenizer_config.json's pad_token <|endoftext|>");
}

#[test]
fn chat_templates_render_as_transformers_does() {
    for name in FIXTURES {
        let dir = family_fixture_dir(name);
        let expected = expected_json(&dir);
        let tokenizer = Tokenizer::from_model_dir(&dir).unwrap();
        let conversation: Vec<ChatMessage> = serde_json::from_value(expected["conversation"].clone()).unwrap();
        let (text, ids) = tokenizer.apply_chat_template(&conversation, true, None).unwrap();
        assert_eq!(text, expected["chat_text"].as_str().unwrap(), "{name}");
        let (_, chat_ids) = expected_i64_in(&dir, "chat_ids");
        assert_eq!(ids, chat_ids.iter().map(|&id| id as u32).collect::<Vec<_>>(), "{name}");
    }
}

/// A copy of a fixture directory with `config.json` replaced, and the weights linked.
fn variant(name: &str, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> tempfile::TempDir {
    let dir = family_fixture_dir(name);
    let out = tempfile::tempdir().unwrap();
    for file in ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "expected.json", "expected.safetensors"] {
        std::fs::copy(dir.join(file), out.path().join(file)).unwrap();
    }
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(out.path().join("config.json"), config.to_string()).unwrap();
    out
}

#[test]
fn transformers_4_configs_load_the_same_model() {
    // transformers 4 writes `rope_theta` + `rope_scaling` (and `torch_dtype`) where 5 writes
    // `rope_parameters` (and `dtype`).
    for name in FIXTURES {
        let v4 = variant(name, |config| {
            let mut rope = config.remove("rope_parameters").unwrap();
            let rope = rope.as_object_mut().unwrap();
            config.insert("rope_theta".into(), rope.remove("rope_theta").unwrap());
            if rope["rope_type"] != "default" {
                config.insert("rope_scaling".into(), serde_json::Value::Object(rope.clone()));
            }
            let dtype = config.remove("dtype").unwrap();
            config.insert("torch_dtype".into(), dtype);
        });
        let v5 = gpt::models::llama::LlamaConfig::load(&family_fixture_dir(name).join("config.json")).unwrap();
        let v4_config = gpt::models::llama::LlamaConfig::load(&v4.path().join("config.json")).unwrap();
        assert_eq!(v4_config.rope().unwrap(), v5.rope().unwrap(), "{name}");
        assert_logits_match(&load_llama_dir(v4.path(), &device()).unwrap(), v4.path());
        // Saving keeps every key it did not model, in either form.
        let saved = tempfile::tempdir().unwrap();
        v4_config.save(&saved.path().join("config.json")).unwrap();
        let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(saved.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(back["torch_dtype"], "bfloat16");
        assert!(back.get("rope_theta").is_some() && back.get("rope_parameters").is_none());
    }
}

#[test]
fn sharded_checkpoints_load_the_same_model() {
    let dir = family_fixture_dir("llama-tiny");
    let out = variant("llama-tiny", |_| {});
    std::fs::remove_file(out.path().join("model.safetensors")).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = tensors.names().into_iter().map(str::to_string).collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let views: Vec<(String, safetensors::tensor::TensorView)> = part.iter().map(|n| (n.clone(), tensors.tensor(n).unwrap())).collect();
        safetensors::tensor::serialize_to_file(views, None, &out.path().join(shard)).unwrap();
        for name in part {
            weight_map.insert(name.clone(), shard.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(out.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_logits_match(&load_llama_dir(out.path(), &device()).unwrap(), out.path());
}

#[test]
fn unsupported_architectures_and_settings_are_named() {
    let err = |dir: &Path| load_language_model_dir(dir, &device()).map(|_| ()).unwrap_err().to_string();
    let phi = variant("llama-tiny", |c| {
        c.insert("architectures".into(), serde_json::json!(["PhiForCausalLM"]));
        c.insert("model_type".into(), "phi".into());
    });
    let message = err(phi.path());
    assert!(message.contains("PhiForCausalLM") && message.contains("LlamaForCausalLM, MistralForCausalLM"), "{message}");
    let yarn = variant("llama-tiny", |c| {
        c.insert("rope_parameters".into(), serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}));
    });
    let message = err(yarn.path());
    assert!(message.contains("\"yarn\"") && message.contains("\"llama3\""), "{message}");
    let mistral = variant("llama-tiny", |c| {
        c.insert("architectures".into(), serde_json::json!(["MistralForCausalLM"]));
        c.insert("sliding_window".into(), 4096.into());
    });
    assert!(err(mistral.path()).contains("sliding-window attention is not supported"));
    // A head that is not what the config says: an untied head missing.
    let tied = variant("llama-tiny", |c| {
        c.insert("tie_word_embeddings".into(), true.into());
    });
    let message = err(tied.path());
    assert!(message.contains("lm_head.weight") && message.contains("differs"), "{message}");
    // GPT-2-only commands say what they hold.
    let message = gpt::hf::load_model_dir(&family_fixture_dir("qwen3-tiny"), &device()).unwrap_err().to_string();
    assert!(message.contains("Qwen3ForCausalLM") && message.contains("GPT-2 models only"), "{message}");
}

#[test]
fn random_presets_have_the_checkpoints_parameter_counts() {
    use gpt::models::llama::LlamaConfig;
    // Parameter counts of the hub checkpoints (tied heads counted once).
    assert_eq!(LlamaConfig::preset("smollm2-135m").unwrap().num_params(), 134_515_008);
    assert_eq!(LlamaConfig::preset("qwen3-0.6b").unwrap().num_params(), 596_049_920);
    assert_eq!(LlamaConfig::preset("llama-3.2-1b").unwrap().num_params(), 1_235_814_400);
    let model = gpt::hf::load_language_model("random:llama-tiny", &device(), 3).unwrap();
    let again = gpt::hf::load_language_model("random:llama-tiny", &device(), 3).unwrap();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &device());
    let (a, b) = (model.logits(ids.clone()).into_data(), again.logits(ids).into_data());
    assert_eq!(a, b, "the same seed gives the same weights");
}

/// Training runs the CPU's fused causal attention (q | k | v of the repeated KV heads side by
/// side, with its own backward): the forward on the autodiff device gives transformers' logits,
/// and the gradients of a query and a key projection equal central finite differences.
#[test]
fn the_training_forward_and_its_gradients_are_right() {
    use gpt::burn::module::Param;
    use gpt::models::LanguageModel;

    let dir = family_fixture_dir("llama-tiny");
    let device = device().autodiff();
    let LanguageModel::Llama(model) = load_language_model_dir(&dir, &device).unwrap() else { panic!("a Llama") };
    let (shape, ids) = expected_i64_in(&dir, "input_ids");
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, shape), &device);
    let (_, expected) = expected_f32_in(&dir, "logits");
    let logits = model.forward(ids.clone());
    let diff = max_abs_diff(&logits.clone().into_data().try_into_vec_as::<f32>().unwrap(), &expected);
    assert!(diff <= 1e-4 * tolerance_scale(), "training logits differ from transformers' by {diff}");

    // A loss of a few logits (f32 finite differences stay accurate), weighted unevenly.
    let weights = Tensor::<3>::from_data(TensorData::new((0..2 * 6 * 8).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect::<Vec<_>>(), [2, 6, 8]), &device);
    let loss = |model: &gpt::models::llama::Llama| (model.forward(ids.clone()).narrow(2, 0, 8) * weights.clone()).sum().into_scalar::<f32>() as f64;
    let grads = (logits.narrow(2, 0, 8) * weights.clone()).sum().backward();
    let layer = &model.model.layers[0].self_attn;
    for (name, weight) in [("q_proj", &layer.q_proj.weight), ("k_proj", &layer.k_proj.weight)] {
        let grad: Vec<f32> = weight.val().grad(&grads).unwrap().into_data().try_into_vec_as().unwrap();
        let values: Vec<f32> = weight.val().into_data().try_into_vec_as().unwrap();
        let dims = weight.val().dims();
        for index in [3, 100, values.len() - 5] {
            let at = |delta: f32| {
                let mut moved = values.clone();
                moved[index] += delta;
                let mut model = model.clone();
                let param = Param::from_tensor(Tensor::<2>::from_data(TensorData::new(moved, dims), &device));
                let layer = &mut model.model.layers[0].self_attn;
                if name == "q_proj" { layer.q_proj.weight = param } else { layer.k_proj.weight = param }
                loss(&model)
            };
            let h = 1e-2;
            let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
            let analytic = grad[index] as f64;
            assert!((numeric - analytic).abs() <= 2e-2 * analytic.abs().max(0.05), "{name}[{index}]: autodiff {analytic} vs finite differences {numeric}");
        }
    }
}

/// Fresh adapters on every projection (`all`: the Llama family's seven) leave the logits exactly
/// as they were (B = 0), and add rank·(in + out) parameters per projection.
#[test]
fn lora_at_init_leaves_a_llama_unchanged() {
    let dir = family_fixture_dir("llama-tiny");
    let model = load_language_model_dir(&dir, &device()).unwrap();
    let before = logits_of(&model, &dir);
    let lora = gpt::LoraConfig::new(4, 8.0, "all".parse().unwrap()).unwrap();
    let adapted = lora.apply_to(model, 0).unwrap();
    // W + A·0 = W: the same logits (bit for bit on the CPU; a GPU may pick another kernel for the
    // composed weight's product).
    let diff = max_abs_diff(&logits_of(&adapted, &dir), &before);
    assert!(diff <= 1e-6 * tolerance_scale(), "fresh adapters moved the logits by {diff}");
    // hidden 32, q/o 32 wide, k/v 16 (2 KV heads × 8), MLP 96; two layers.
    let per_layer = 4 * ((32 + 32) + (32 + 16) + (32 + 16) + (32 + 32) + (32 + 96) + (32 + 96) + (96 + 32));
    let trainable = lora.apply_to(load_language_model_dir(&dir, &device().autodiff()).unwrap(), 0).unwrap();
    assert_eq!(gpt::io::parameter_counts(&trainable).0, 2 * per_layer, "only the adapters train");
}
