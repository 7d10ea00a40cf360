//! `--dtype bf16`: the weight matrices kept in bf16 (read as stored from a bf16 checkpoint),
//! activations, norms and biases f32. On the three fixtures: what is stored in which dtype; the
//! logits equal those of the f32 model whose matrices hold the same bf16 values (so the bf16
//! kernels add no error of their own), and stay within bf16 rounding of the f32 model's; greedy
//! ids, alone and in a padded batch, equal the f32 model's.

use std::path::Path;

use gpt::burn::module::{Module, ModuleVisitor, Param};
use gpt::burn::prelude::*;
use gpt::burn::tensor::DType;
use gpt::generate::{GenerateConfig, Padding, generate};
use gpt::hf::{load_language_model_dir, load_language_model_dir_as};
use gpt::io::{WeightDtype, cast_matrices};
use gpt::models::{CausalLm, LanguageModel};
use gpt::Tokenizer;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::common::{device, family_fixture_dir, max_abs_diff};

const FIXTURES: [&str; 3] = ["gpt2-tiny", "llama-tiny", "qwen3-tiny"];

/// (rank, dtype) of every float parameter.
fn param_dtypes(model: &LanguageModel) -> Vec<(usize, DType)> {
    struct Dtypes(Vec<(usize, DType)>);
    impl ModuleVisitor for Dtypes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push((D, param.val().dtype()));
        }
    }
    let mut visitor = Dtypes(Vec::new());
    model.visit(&mut visitor);
    visitor.0
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

#[test]
fn bf16_weights_compute_the_f32_products_of_their_values() {
    for name in FIXTURES {
        let dir = family_fixture_dir(name);
        let full = load_language_model_dir(&dir, &device()).unwrap();
        let bf16 = load_language_model_dir_as(&dir, &device(), WeightDtype::Bf16).unwrap();
        for (rank, dtype) in param_dtypes(&bf16) {
            assert_eq!(dtype, if rank == 2 { DType::BF16 } else { DType::F32 }, "{name}: a rank-{rank} parameter");
        }
        // The f32 model with its matrices rounded to bf16 (and widened back).
        let rounded = cast_matrices(cast_matrices(load_language_model_dir(&dir, &device()).unwrap(), WeightDtype::Bf16), WeightDtype::F32);
        // 6 positions per row take the streaming kernels, 40 the slab-widening GEMM.
        for len in [6, 40] {
            let ids = token_ids(&full, 2, len);
            let (got, same_values, f32_logits) = (logits(&bf16, ids.clone()), logits(&rounded, ids.clone()), logits(&full, ids));
            let scale = f32_logits.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
            let kernel_error = max_abs_diff(&got, &same_values);
            let rounding_error = max_abs_diff(&got, &f32_logits);
            eprintln!("{name}, T={len}: |logits| ≤ {scale:.3}; vs the same bf16 values in f32 {kernel_error:e}; vs f32 weights {rounding_error:e}");
            assert!(kernel_error <= 1e-5 * scale.max(1.0), "{name}, T={len}: bf16 products differ by {kernel_error}");
            // bf16 keeps 8 significant bits (relative rounding ≤ 2⁻⁹ per weight); through a few
            // layers of sums the logits move by a few tenths of a percent of their scale.
            assert!(rounding_error <= 1e-2 * scale.max(1.0), "{name}, T={len}: bf16 rounding moved logits by {rounding_error}");
        }
    }
}

#[test]
fn greedy_ids_with_bf16_weights_equal_f32s() {
    for name in FIXTURES {
        let dir = family_fixture_dir(name);
        let full = load_language_model_dir(&dir, &device()).unwrap();
        let bf16 = load_language_model_dir_as(&dir, &device(), WeightDtype::Bf16).unwrap();
        let tokenizer = if name == "gpt2-tiny" { Tokenizer::gpt2() } else { Tokenizer::from_model_dir(&dir).unwrap() };
        let texts = ["Every effort moves you", "Hi", "The library opens at nine every morning, except on"];
        let prompts: Vec<Vec<u32>> = texts.iter().map(|text| tokenizer.try_encode(text).unwrap()).collect();
        let config = GenerateConfig { eos_tokens: vec![], ..GenerateConfig::greedy(16).with_tokenizer(&tokenizer) };
        let ids = |model: &LanguageModel, padding| {
            let out = generate(model, &prompts, &GenerateConfig { padding, ..config.clone() }).unwrap();
            out.into_iter().map(|c| c.token_ids).collect::<Vec<_>>()
        };
        let want = ids(&full, Padding::Left);
        for padding in [Padding::Left, Padding::Right] {
            assert_eq!(ids(&bf16, padding), want, "{name}, {padding:?} padding");
        }
    }
}

/// `dir`'s checkpoint with every matrix stored in bf16 (vectors f32), written to `out`.
fn write_bf16_checkpoint(dir: &Path, out: &Path) {
    for file in std::fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name != "model.safetensors" && name != "expected.safetensors" {
            std::fs::copy(&path, out.join(name)).unwrap();
        }
    }
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let converted: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32);
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()));
            match view.shape().len() {
                2 => (name, view.shape().to_vec(), Dtype::BF16, values.flat_map(|v| half::bf16::from_f32(v).to_le_bytes()).collect()),
                _ => (name, view.shape().to_vec(), Dtype::F32, view.data().to_vec()),
            }
        })
        .collect();
    let views: Vec<(String, TensorView)> =
        converted.iter().map(|(name, shape, dtype, data)| (name.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap())).collect();
    safetensors::tensor::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
}

#[test]
fn a_bf16_checkpoint_is_kept_as_stored() {
    // llama-tiny is stored in bf16, as most Llama-family checkpoints on the hub: its matrices are
    // the file's bits, never widened and rounded again.
    let dir = family_fixture_dir("llama-tiny");
    let model = load_language_model_dir_as(&dir, &device(), WeightDtype::Bf16).unwrap();
    let LanguageModel::Llama(llama) = &model else { panic!("llama-tiny is a Llama") };
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let stored = st.tensor("model.layers.0.mlp.down_proj.weight").unwrap(); // [out, in]
    assert_eq!(stored.dtype(), Dtype::BF16);
    let stored: Vec<u16> = stored.data().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    let weight = llama.model.layers[0].mlp.down_proj.weight.val(); // [in, out]
    assert_eq!(weight.dtype(), DType::BF16);
    let [d_in, d_out] = weight.dims();
    let kept: Vec<u16> = weight.into_data().try_into_vec::<half::bf16>().unwrap().iter().map(|v| v.to_bits()).collect();
    for (i, row) in kept.chunks_exact(d_out).enumerate() {
        for (o, &bits) in row.iter().enumerate() {
            assert_eq!(bits, stored[o * d_in + i], "down_proj[{o}, {i}]");
        }
    }

    // gpt2-tiny is stored in f32: saved in bf16, it loads as the f32 file rounded at load.
    let dir = family_fixture_dir("gpt2-tiny");
    let saved = tempfile::tempdir().unwrap();
    write_bf16_checkpoint(&dir, saved.path());
    let from_bf16 = load_language_model_dir_as(saved.path(), &device(), WeightDtype::Bf16).unwrap();
    let rounded_at_load = load_language_model_dir_as(&dir, &device(), WeightDtype::Bf16).unwrap();
    let widened = load_language_model_dir(saved.path(), &device()).unwrap();
    let ids = token_ids(&widened, 2, 6);
    let got = logits(&from_bf16, ids.clone());
    assert_eq!(got, logits(&rounded_at_load, ids.clone()));
    assert!(max_abs_diff(&got, &logits(&widened, ids)) <= 1e-5, "bf16 kept or widened to f32: the same values");
}

#[test]
fn random_presets_round_their_init_to_bf16_tensor_by_tensor() {
    for preset in ["random:tiny", "random:smollm2-135m"] {
        let load = |dtype| gpt::hf::load_language_model_as(preset, &device(), 7, dtype).unwrap();
        let bf16 = load(WeightDtype::Bf16);
        assert!(param_dtypes(&bf16).iter().all(|&(rank, dtype)| (rank == 2) == (dtype == DType::BF16)), "{preset}");
        let rounded_after = cast_matrices(load(WeightDtype::F32), WeightDtype::Bf16);
        let ids = token_ids(&bf16, 1, 5);
        assert_eq!(logits(&bf16, ids.clone()), logits(&rounded_after, ids), "{preset}: the same values");
    }
}
