//! A language model of any family as a sequence classifier (*Build a LLM From Scratch*, ch. 6;
//! transformers' `*ForSequenceClassification`): the trunk, then a new `Linear(hidden, n_classes)`
//! head on one position's final hidden state. GPT-2 reads the LAST position, as the book does
//! (texts padded with `<|endoftext|>` to one length, the padding's state included; a head with a
//! bias); the Llama family reads the last token that is not padding, as transformers does, so
//! that right padding changes nothing (a head without bias, as `LlamaForSequenceClassification`).
//!
//! Saved in the Hugging Face layout (`gpt::hf::save_classifier_dir`): the trunk, the head as
//! `score.weight` `[n_classes, hidden]` (PyTorch's `nn.Linear` layout), the class names in `config.json`.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::*;

use super::LanguageModel;
use crate::error::{GptError, Result};

#[derive(Module, Debug)]
pub struct Classifier {
    pub model: LanguageModel,
    /// `[hidden, n_classes]` (Burn's layout); with a bias for GPT-2.
    pub score: Linear,
    #[module(skip)]
    labels: Vec<String>,
    /// Texts were cut/padded to this many tokens in training (classify new ones the same way).
    #[module(skip)]
    max_length: Option<usize>,
    /// The token texts are padded with (GPT-2: `<|endoftext|>`; else the tokenizer's pad or EOS).
    #[module(skip)]
    pad_token: u32,
}
/// Which parameters train; everything else is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trainable {
    /// The last transformer block, the final LayerNorm and the head (the book's choice).
    #[default]
    LastBlock,
    /// Only the head.
    Head,
    /// The last K blocks, the final LayerNorm and the head.
    LastN(usize),
    /// Everything.
    All,
}

impl FromStr for Trainable {
    type Err = GptError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "last-block" => Ok(Self::LastBlock),
            "head" => Ok(Self::Head),
            "all" => Ok(Self::All),
            other => match other.strip_prefix("last-n:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(Self::LastN(k)),
                _ => Err(GptError::Config(format!(
                    "unknown trainable set {s:?}: expected last-block, head, last-n:K (K >= 1) or all"
                ))),
            },
        }
    }
}

impl fmt::Display for Trainable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LastBlock => write!(f, "last-block"),
            Self::Head => write!(f, "head"),
            Self::LastN(k) => write!(f, "last-n:{k}"),
            Self::All => write!(f, "all"),
        }
    }
}

impl Trainable {
    /// How many of the last transformer blocks train (`n_layer` for all).
    pub fn trainable_blocks(self, n_layer: usize) -> usize {
        match self {
            Self::Head => 0,
            Self::LastBlock => 1.min(n_layer),
            Self::LastN(k) => k.min(n_layer),
            Self::All => n_layer,
        }
    }

    /// Whether the embeddings train too: only with `all` (`last-n:K` trains blocks, never embeddings).
    fn embeddings(self) -> bool {
        matches!(self, Self::All)
    }
}

/// The trunk of a classifier: a Llama's untied `lm_head` is dropped (the head replaces it).
fn without_lm_head(model: LanguageModel) -> LanguageModel {
    match model {
        LanguageModel::Llama(llama) => LanguageModel::Llama(llama.without_lm_head()),
        gpt2 => gpt2,
    }
}

impl Classifier {
    /// A classifier on `model` with a freshly initialised head (N(0, initializer_range); GPT-2's
    /// bias 0). Texts are padded with `pad_token`, which the Llama family skips when it pools.
    pub fn new(model: LanguageModel, labels: Vec<String>, pad_token: u32, seed: u64) -> Result<Self> {
        if labels.len() < 2 {
            return Err(GptError::Config(format!("a classifier needs at least 2 labels, got {labels:?}")));
        }
        let device = crate::models::CausalLm::device(&model);
        let (c, n) = (model.hidden_size(), labels.len());
        // Seeded on the host like the trunk's init, so the head is the same on every backend.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x5c0e);
        let normal = rand_distr::Normal::new(0.0f32, model.initializer_range() as f32).map_err(|e| GptError::Config(e.to_string()))?;
        let weight: Vec<f32> = (0..c * n).map(|_| rand_distr::Distribution::sample(&normal, &mut rng)).collect();
        let bias = Self::head_has_bias(&model).then(|| Param::from_data(TensorData::new(vec![0.0f32; n], [n]), &device));
        let score = Linear { weight: Param::from_data(TensorData::new(weight, [c, n]), &device), bias };
        Ok(Self { model: without_lm_head(model), score, labels, max_length: None, pad_token })
    }

    /// A classifier from explicit head values in PyTorch's `nn.Linear` layout (`[n_classes, hidden]`),
    /// with a bias exactly when the family's head has one.
    pub fn with_head(model: LanguageModel, labels: Vec<String>, pad_token: u32, weight_out_in: Tensor<2>, bias: Option<Tensor<1>>) -> Result<Self> {
        let [n, c] = weight_out_in.dims();
        let bias_fits = match &bias {
            Some(bias) => Self::head_has_bias(&model) && bias.dims() == [n],
            None => !Self::head_has_bias(&model),
        };
        if c != model.hidden_size() || n != labels.len() || !bias_fits {
            return Err(GptError::Model(format!(
                "classifier head of shape {:?} / bias {:?} does not fit hidden size {} and {} labels{}",
                [n, c],
                bias.as_ref().map(|b| b.dims()),
                model.hidden_size(),
                labels.len(),
                if Self::head_has_bias(&model) { " (with a bias)" } else { " (without a bias)" }
            )));
        }
        let score = Linear { weight: Param::from_tensor(weight_out_in.transpose()), bias: bias.map(Param::from_tensor) };
        Ok(Self { model: without_lm_head(model), score, labels, max_length: None, pad_token })
    }

    /// GPT-2's head has a bias (the book's `nn.Linear`), the Llama family's none (transformers').
    fn head_has_bias(model: &LanguageModel) -> bool {
        matches!(model, LanguageModel::Gpt2(_))
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The token length the classifier was trained at (texts are cut/padded to it).
    pub fn max_length(&self) -> Option<usize> {
        self.max_length
    }

    pub fn set_max_length(&mut self, length: usize) {
        self.max_length = Some(length);
    }

    /// The token texts are padded with.
    pub fn pad_token(&self) -> u32 {
        self.pad_token
    }

    /// Class logits `[B, n_classes]` of token ids `[B, T]` (padded at the end).
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<2> {
        let positions = self.pool_positions(&ids);
        self.forward_from(self.model.embed_tokens(ids), 0, positions)
    }

    /// Where each row of ids `[B, T]` is read: `None` for the last position (GPT-2), else the
    /// last token that is not padding (`[B]`; 0 for a row of padding only, as transformers).
    pub fn pool_positions(&self, ids: &Tensor<2, Int>) -> Option<Tensor<1, Int>> {
        if matches!(self.model, LanguageModel::Gpt2(_)) {
            return None;
        }
        let t = ids.dims()[1];
        let kept = ids.clone().not_equal_elem(self.pad_token as i64).int();
        let index = Tensor::<1, Int>::arange(0..t as i64, &ids.device()).unsqueeze::<2>() * kept;
        Some(index.argmax(1).squeeze_dim::<1>(1))
    }

    /// Class logits from the residual stream `x` entering block `first` (`[B, T, C]`), read at
    /// `positions` ([`Self::pool_positions`]): the remaining blocks, the final norm and the head.
    /// GPT-2's last block computes the last position only.
    pub fn forward_from(&self, x: Tensor<3>, first: usize, positions: Option<Tensor<1, Int>>) -> Tensor<2> {
        let n = self.model.num_blocks();
        let pooled = match (&self.model, positions) {
            (LanguageModel::Gpt2(gpt), _) => gpt.run_blocks_to_last(x, first),
            (_, positions) => {
                let x = self.model.run_blocks(x, first..n);
                let [b, t, c] = x.dims();
                match positions {
                    Some(p) => x.gather(1, p.reshape([b, 1, 1]).expand([b, 1, c])),
                    None => x.narrow(1, t - 1, 1),
                }
            }
        };
        let [b, _, c] = pooled.dims();
        self.score.forward(self.model.final_norm(pooled).reshape([b, c]))
    }

    /// Freezes everything except `trainable` (gradients off; dropout of frozen parts stays as
    /// configured, so set the dropout to 0 for a deterministic frozen prefix).
    pub fn set_trainable(mut self, trainable: Trainable) -> Self {
        let n_layer = self.model.num_blocks();
        let first_trainable = n_layer - trainable.trainable_blocks(n_layer);
        self.model = self.model.set_trainable(first_trainable, trainable.embeddings(), trainable != Trainable::Head);
        self.score = self.score.clone().set_require_grad(true);
        self
    }

    /// (trainable, total) parameter counts.
    pub fn parameter_counts(&self) -> (usize, usize) {
        crate::io::parameter_counts(self)
    }
}
