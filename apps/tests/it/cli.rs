//! The `llmfs` command line on the fixture model: generate (plain, JSON, streaming, batches),
//! logits against transformers' values, help texts and clear errors.

use crate::common::*;

fn model() -> String {
    tiny_model_dir().display().to_string()
}

#[test]
fn generate_json_gives_prompt_ids_token_ids_and_text() {
    let home = tempfile::tempdir().unwrap();
    let out = run(llmfs(home.path()).args(["generate", "--model", &model(), "--prompt", "Every effort moves you", "--max-new-tokens", "20", "--ignore-eos", "--json"]));
    assert!(out.status.success());
    let json = last_json(&out);
    assert_eq!(json["prompt_ids"], serde_json::json!([6109, 3626, 6100, 345]));
    assert_eq!(json["token_ids"].as_array().unwrap().len(), 20);
    assert_eq!(json["token_ids"][0], 40276);
    assert!(json["text"].as_str().unwrap().starts_with(" Jolly glow540 guaranteeing"), "{json}");
    assert_eq!(json["finish_reason"], "length");
}

#[test]
fn streaming_prints_the_same_text_and_batches_give_one_object_per_prompt() {
    let home = tempfile::tempdir().unwrap();
    let base = ["generate", "--model", &model(), "--max-new-tokens", "8", "--ignore-eos"];
    let out = run(llmfs(home.path()).args(base).args(["--prompt", "Every effort moves you", "--stream"]));
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim_end(), "Every effort moves you Jolly glow540 guaranteeing guaranteeing guaranteeing guaranteeing guaranteeing");

    let out = run(llmfs(home.path()).args(base).args(["--prompt", "Every effort moves you", "--prompt", "Hi", "--json", "--padding", "right"]));
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["prompt"], "Every effort moves you");
    assert_eq!(lines[0]["token_ids"][0], 40276);
    assert_eq!(lines[1]["prompt_ids"], serde_json::json!([17250]));

    let out = run(llmfs(home.path()).args(base).args(["--prompt", "Hi", "--stream", "--json", "--temperature", "0.8", "--top-k", "40", "--top-p", "0.9", "--seed", "5"]));
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 9, "8 token events and the final object");
    let streamed: Vec<_> = lines[..8].iter().map(|l| l["token"].clone()).collect();
    assert_eq!(serde_json::Value::from(streamed), lines[8]["token_ids"]);
}

#[test]
fn logits_match_transformers() {
    let home = tempfile::tempdir().unwrap();
    let out_file = home.path().join("logits.safetensors");
    let out = run(llmfs(home.path()).args(["logits", "--model", &model(), "--ids", "6109,3626,6100,345,2651,11,475,340", "--out"]).arg(&out_file).arg("--json"));
    assert!(out.status.success());
    assert_eq!(last_json(&out)["shape"], serde_json::json!([1, 8, 50257]));
    let bytes = std::fs::read(&out_file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let logits = st.tensor("logits").unwrap();
    assert_eq!(logits.shape(), [1, 8, 50257]);
    let got: Vec<f32> = logits.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let expected = std::fs::read(tiny_model_dir().join("expected.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&expected).unwrap();
    let want: Vec<f32> = expected.tensor("logits").unwrap().data()[..8 * 50257 * 4]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

#[test]
fn every_command_has_help() {
    let home = tempfile::tempdir().unwrap();
    for args in [vec!["--help"], vec!["download", "--help"], vec!["generate", "--help"], vec!["logits", "--help"]] {
        let out = run(llmfs(home.path()).args(&args));
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage: llmfs"), "{args:?}");
    }
    let out = run(llmfs(home.path()).args(["generate", "--help"]));
    for flag in ["--model", "--prompt", "--max-new-tokens", "--greedy", "--temperature", "--top-k", "--top-p", "--seed", "--stream", "--json", "--device"] {
        assert!(stdout(&out).contains(flag), "generate --help lacks {flag}");
    }
}

#[test]
fn bad_input_gives_one_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["generate", "--model", "/no/such/dir", "--prompt", "x"], "no such model directory"),
        (vec!["generate", "--model", "random:tiny", "--prompt", "x", "--device", "tpu"], "unknown device"),
        (vec!["generate", "--model", "random:huge", "--prompt", "x"], "unknown preset"),
        (vec!["generate", "--model", "random:tiny", "--prompt", "x", "--top-p", "2"], "top_p"),
        (vec!["generate", "--model", "random:tiny", "--prompt", "x", "--greedy", "--temperature", "1"], "cannot be used with"),
        (vec!["generate", "--model", "random:tiny", "--prompt", "x", "--max-new-tokens", "500"], "context window"),
        (vec!["logits", "--model", "random:tiny", "--ids", "1,99999", "--out", "/tmp/x.safetensors"], "outside the vocabulary"),
        (vec!["logits", "--model", "random:tiny", "--ids", "1,x", "--out", "/tmp/x.safetensors"], "invalid value"),
        (vec!["generate", "--model", "random:tiny", "--prompt", "x", "--dtype", "f16"], "unknown dtype `f16`: f32 or bf16"),
        (vec!["generate", "--model", "random:tiny", "--prompt", "x", "--quantize", "int4"], "[possible values: nf4, int8]"),
        (vec!["generate", "--model", "random:tiny", "--prompt", "x", "--quantize", "int8", "--quantize-double"], "--quantize-double is for --quantize nf4"),
        (vec!["generate", "--model", "random:tiny", "--prompt", "x", "--quantize-double"], "--quantize-double needs --quantize nf4"),
    ];
    if !cfg!(feature = "cuda") {
        cases.push((vec!["generate", "--model", "random:tiny", "--prompt", "x", "--device", "cuda"], "--features cuda"));
    }
    if !cfg!(feature = "tch") {
        cases.push((vec!["generate", "--model", "random:tiny", "--prompt", "x", "--device", "tch-cpu"], "rebuild with `--features tch`"));
    }
    for (args, needle) in cases {
        let out = run(llmfs(home.path()).args(&args));
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(needle), "{args:?}: expected {needle:?} in {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
    // `llmfs bench` checks every device before it runs any benchmark.
    if !cfg!(feature = "cuda") {
        let out = run(llmfs(home.path()).args(["bench", "--device", "cpu,cuda", "--cases", "forward", "--preset", "tiny"]));
        assert_ne!(out.status.code(), Some(0));
        assert!(stderr(&out).contains("--device cuda:0") && stderr(&out).contains("--features cuda"), "{}", stderr(&out));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("tok/s"), "the CPU benchmark ran first: {}", String::from_utf8_lossy(&out.stdout));
    }
}

/// The Llama-family fixtures through the command line: `tokenize` (text and chat) against the
/// tokenizers' and transformers' ids, `generate` against transformers' greedy ids, `logits`.
mod llama_family {
    use crate::common::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        fixtures().join(name)
    }

    fn expected(name: &str) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap()).unwrap()
    }

    fn expected_ids(name: &str, tensor: &str) -> Vec<i64> {
        let bytes = std::fs::read(fixture(name).join("expected.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor(tensor).unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    #[test]
    fn tokenize_gives_the_tokenizers_ids_and_the_chat_templates() {
        let home = tempfile::tempdir().unwrap();
        for name in ["llama-tiny", "qwen3-tiny"] {
            let model = fixture(name).display().to_string();
            let expected = expected(name);
            let prompt = expected["greedy_prompt"].as_str().unwrap();
            let out = run(llmfs(home.path()).args(["tokenize", "--model", &model, "--text", prompt, "--json"]));
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(last_json(&out)["ids"], expected["greedy_prompt_ids"], "{name}");
            let out = run(llmfs(home.path()).args(["tokenize", "--model", &model, "--text", prompt, "--no-special-tokens"]));
            let plain = expected["encodings"][prompt].as_array().unwrap().iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
            assert_eq!(stdout(&out).trim(), plain, "{name}");

            let chat = home.path().join(format!("{name}.json"));
            std::fs::write(&chat, expected["conversation"].to_string()).unwrap();
            let out = run(llmfs(home.path()).args(["tokenize", "--model", &model, "--add-generation-prompt", "--json", "--chat"]).arg(&chat));
            assert!(out.status.success(), "{}", stderr(&out));
            let json = last_json(&out);
            assert_eq!(json["text"], expected["chat_text"], "{name}");
            assert_eq!(json["ids"], serde_json::json!(expected_ids(name, "chat_ids")), "{name}");
        }
        // A template file overrides the model's; a bad conversation file is named with the place.
        let model = fixture("qwen3-tiny").display().to_string();
        let chat = home.path().join("chat.json");
        std::fs::write(&chat, r#"[{"role": "user", "content": "hi"}]"#).unwrap();
        let template = home.path().join("t.jinja");
        std::fs::write(&template, "{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}").unwrap();
        let out = run(llmfs(home.path()).args(["tokenize", "--model", &model, "--json", "--chat"]).arg(&chat).arg("--chat-template").arg(&template));
        assert_eq!(last_json(&out)["text"], "[user] hi<|im_end|>");
        std::fs::write(&chat, r#"[{"role": "user", "content": 5}]"#).unwrap();
        let out = run(llmfs(home.path()).args(["tokenize", "--model", &model, "--chat"]).arg(&chat));
        assert!(!out.status.success());
        assert!(stderr(&out).contains("chat.json") && stderr(&out).contains("[0].content"), "{}", stderr(&out));
    }

    #[test]
    fn generate_and_logits_take_llama_family_models() {
        let home = tempfile::tempdir().unwrap();
        for name in ["llama-tiny", "qwen3-tiny"] {
            let model = fixture(name).display().to_string();
            let expected = expected(name);
            let prompt = expected["greedy_prompt"].as_str().unwrap();
            // The fixtures are stored in bf16: kept so (--dtype bf16) they give transformers' ids too.
            for dtype in ["f32", "bf16"] {
                let out = run(llmfs(home.path()).args(["generate", "--model", &model, "--prompt", prompt, "--max-new-tokens", "20", "--ignore-eos", "--json", "--dtype", dtype]));
                assert!(out.status.success(), "{}", stderr(&out));
                let json = last_json(&out);
                assert_eq!(json["prompt_ids"], expected["greedy_prompt_ids"], "{name}");
                assert_eq!(json["token_ids"], serde_json::json!(expected_ids(name, "greedy_ids")), "{name}, --dtype {dtype}");
                assert_eq!(json["text"], expected["greedy_text"], "{name}, --dtype {dtype}");
            }

            let out_file = home.path().join(format!("{name}.safetensors"));
            let out = run(llmfs(home.path()).args(["logits", "--model", &model, "--prompt", prompt, "--json", "--out"]).arg(&out_file));
            assert!(out.status.success(), "{}", stderr(&out));
            let json = last_json(&out);
            assert_eq!(json["ids"], expected["greedy_prompt_ids"]);
            assert_eq!(json["argmax_last"], serde_json::json!(expected_ids(name, "greedy_ids")[0]), "{name}");
        }
    }

    /// `--quantize nf4 [--quantize-double]` (with `--dtype f32|bf16`): the greedy ids of the model
    /// whose block projections are NF4, as the library's `quantize_model` gives them in-process
    /// (the NF4 kernels themselves are tested against the dequantized weights in the gpt crate).
    #[test]
    fn generate_quantizes_block_projections_at_load() {
        use gpt::generate::{GenerateConfig, generate};
        use gpt::quant::Nf4Options;

        let home = tempfile::tempdir().unwrap();
        let device = gpt::burn::prelude::Device::flex();
        for name in ["llama-tiny", "qwen3-tiny"] {
            let model = fixture(name).display().to_string();
            let prompt = expected(name)["greedy_prompt"].as_str().unwrap().to_string();
            for (flags, double_quant) in [(vec!["--quantize", "nf4"], false), (vec!["--quantize", "nf4", "--quantize-double", "--dtype", "bf16"], true)] {
                let out = run(llmfs(home.path()).args(["generate", "--model", &model, "--prompt", &prompt, "--max-new-tokens", "12", "--ignore-eos", "--json"]).args(&flags));
                assert!(out.status.success(), "{}", stderr(&out));
                let json = last_json(&out);
                let prompt_ids: Vec<u32> = serde_json::from_value(json["prompt_ids"].clone()).unwrap();
                let quantized = gpt::lora::quantize_model(gpt::hf::load_language_model_dir(&fixture(name), &device).unwrap(), Nf4Options { double_quant }).unwrap();
                let tokenizer = gpt::Tokenizer::from_model_dir(&fixture(name)).unwrap();
                let config = GenerateConfig { eos_tokens: vec![], ..GenerateConfig::greedy(12).with_tokenizer(&tokenizer) };
                let want = generate(&quantized, &[prompt_ids], &config).unwrap();
                assert_eq!(json["token_ids"], serde_json::json!(want[0].token_ids), "{name} {flags:?}");
                // The fixtures' random weights are far from normal: NF4 changes their greedy ids
                // (so the flag cannot be silently ignored).
                let f32_ids: Vec<i64> = expected_ids(name, "greedy_ids").into_iter().take(12).collect();
                assert_ne!(json["token_ids"], serde_json::json!(f32_ids), "{name} {flags:?}: the f32 model's ids");
            }
        }
    }

    /// `--quantize int8` at load: `logits` gives the library's int8 model's logits (the same
    /// kernels; other ops may split their work over another number of threads, hence 1e-5 of the
    /// scale) and not the f32 model's, and `generate` its greedy ids.
    #[test]
    fn logits_and_generate_take_int8_weights() {
        use gpt::burn::prelude::*;
        use gpt::generate::{GenerateConfig, generate};
        use gpt::models::CausalLm;
        use gpt::quant::Quantization;

        let home = tempfile::tempdir().unwrap();
        let device = Device::flex();
        let name = "llama-tiny";
        let model = fixture(name).display().to_string();
        let prompt = expected(name)["greedy_prompt"].as_str().unwrap().to_string();
        let quantized = gpt::lora::quantize_model_as(gpt::hf::load_language_model_dir(&fixture(name), &device).unwrap(), Quantization::Int8).unwrap();
        let full = gpt::hf::load_language_model_dir(&fixture(name), &device).unwrap();

        let out_file = home.path().join("int8.safetensors");
        let out = run(llmfs(home.path()).args(["logits", "--model", &model, "--prompt", &prompt, "--quantize", "int8", "--json", "--out"]).arg(&out_file));
        assert!(out.status.success(), "{}", stderr(&out));
        let prompt_ids: Vec<i64> = serde_json::from_value(last_json(&out)["ids"].clone()).unwrap();
        let bytes = std::fs::read(&out_file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let got: Vec<f32> = st.tensor("logits").unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let ids = || Tensor::<2, Int>::from_data(TensorData::new(prompt_ids.clone(), [1, prompt_ids.len()]), &device);
        let library = |m: &gpt::models::LanguageModel| m.logits(ids()).into_data().try_into_vec_as::<f32>().unwrap();
        let (want, f32_logits) = (library(&quantized), library(&full));
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert_eq!(got.len(), want.len());
        assert!(diff(&got, &want) <= 1e-5 * scale, "int8 logits differ from the library's by {}", diff(&got, &want));
        assert!(diff(&got, &f32_logits) > 1e-4 * scale, "--quantize int8 changes the logits");

        let out = run(llmfs(home.path()).args(["generate", "--model", &model, "--prompt", &prompt, "--max-new-tokens", "12", "--ignore-eos", "--json", "--quantize", "int8"]));
        assert!(out.status.success(), "{}", stderr(&out));
        let prompt_ids: Vec<u32> = serde_json::from_value(last_json(&out)["prompt_ids"].clone()).unwrap();
        let tokenizer = gpt::Tokenizer::from_model_dir(&fixture(name)).unwrap();
        let config = GenerateConfig { eos_tokens: vec![], ..GenerateConfig::greedy(12).with_tokenizer(&tokenizer) };
        let want = generate(&quantized, &[prompt_ids], &config).unwrap();
        assert_eq!(last_json(&out)["token_ids"], serde_json::json!(want[0].token_ids), "{name}");
    }
}

/// `llmfs chat` with a conversation piped in: each answer is what `generate` gives for the
/// conversation so far rendered with the chat template; `/reset` starts over.
#[test]
fn chat_answers_each_turn_with_the_template_and_resets() {
    use gpt::generate::{GenerateConfig, generate};
    use gpt::text::ChatMessage;
    use std::io::Write;

    let dir = fixtures().join("qwen3-tiny");
    let tokenizer = gpt::Tokenizer::from_model_dir(&dir).unwrap();
    let model = gpt::hf::load_language_model_dir(&dir, &gpt::burn::prelude::Device::flex()).unwrap();
    let config = GenerateConfig::greedy(6).with_tokenizer(&tokenizer);
    let answer = |messages: &[ChatMessage]| {
        let (_, prompt) = tokenizer.apply_chat_template(messages, true, None).unwrap();
        generate(&model, &[prompt], &config).unwrap().remove(0).text
    };
    let system = ChatMessage::new("system", "Be brief.");
    let first = answer(&[system.clone(), ChatMessage::new("user", "Hi")]);
    let second = answer(&[system.clone(), ChatMessage::new("user", "Hi"), ChatMessage::new("assistant", &first), ChatMessage::new("user", "More")]);
    let after_reset = answer(&[system.clone(), ChatMessage::new("user", "Bye")]);

    let home = tempfile::tempdir().unwrap();
    let mut child = llmfs(home.path())
        .args(["chat", "--model", &dir.display().to_string(), "--system", "Be brief.", "--max-new-tokens", "6"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hi\nMore\n/reset\nBye\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{first}\n{second}\n{after_reset}\n"));
    assert!(stderr(&out).contains("(conversation reset)") && stderr(&out).contains("chat template"), "{}", stderr(&out));
}
