//! GPT-2 as a sequence classifier (*Build a LLM From Scratch*, ch. 6): the trunk, then a new
//! `Linear(n_embd, n_classes)` head on the final hidden state of the LAST position.
//!
//! Saved in the Hugging Face layout of `GPT2ForSequenceClassification`: the trunk under
//! `transformer.*`, the head as `score.weight` `[n_classes, n_embd]` (PyTorch's `nn.Linear` layout)
//! plus `score.bias`, and the class names in `config.json`.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::*;

use super::config::GptConfig;
use super::model::Gpt;
use crate::error::{GptError, Result};

#[derive(Module, Debug)]
pub struct GptClassifier {
    pub gpt: Gpt,
    /// `[n_embd, n_classes]` (Burn's layout), with bias.
    pub score: Linear,
    #[module(skip)]
    labels: Vec<String>,
    /// Texts were cut/padded to this many tokens in training (classify new ones the same way).
    #[module(skip)]
    max_length: Option<usize>,
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

impl GptClassifier {
    /// A classifier on `gpt` with a freshly initialised head (N(0, initializer_range), bias 0).
    pub fn new(gpt: Gpt, labels: Vec<String>, seed: u64) -> Result<Self> {
        if labels.len() < 2 {
            return Err(GptError::Config(format!("a classifier needs at least 2 labels, got {labels:?}")));
        }
        let device = gpt.device();
        let (c, n) = (gpt.config().n_embd, labels.len());
        let std = gpt.config().initializer_range;
        // Seeded on the host like the trunk's init, so the head is the same on every backend.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x5c0e);
        let normal = rand_distr::Normal::new(0.0f32, std as f32).map_err(|e| GptError::Config(e.to_string()))?;
        let weight: Vec<f32> = (0..c * n).map(|_| rand_distr::Distribution::sample(&normal, &mut rng)).collect();
        let score = Linear {
            weight: Param::from_data(TensorData::new(weight, [c, n]), &device),
            bias: Some(Param::from_data(TensorData::new(vec![0.0f32; n], [n]), &device)),
        };
        Ok(Self { gpt, score, labels, max_length: None })
    }

    /// A classifier from explicit head values in PyTorch's `nn.Linear` layout (`[n_classes, n_embd]`).
    pub fn with_head(gpt: Gpt, labels: Vec<String>, weight_out_in: Tensor<2>, bias: Tensor<1>) -> Result<Self> {
        let [n, c] = weight_out_in.dims();
        if c != gpt.config().n_embd || n != labels.len() || bias.dims() != [n] {
            return Err(GptError::Model(format!(
                "classifier head of shape {:?} / bias {:?} does not fit n_embd {} and {} labels",
                [n, c],
                bias.dims(),
                gpt.config().n_embd,
                labels.len()
            )));
        }
        let score = Linear { weight: Param::from_tensor(weight_out_in.transpose()), bias: Some(Param::from_tensor(bias)) };
        Ok(Self { gpt, score, labels, max_length: None })
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

    pub fn config(&self) -> &GptConfig {
        self.gpt.config()
    }

    /// Class logits `[B, n_classes]` from the hidden state of the last position of each row.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<2> {
        self.forward_from(self.gpt.embed_tokens(ids), 0)
    }

    /// Class logits from the residual stream `x` entering block `first` (`[B, T, C]`): the
    /// remaining blocks, the last of them at the last position only, `ln_f` and the head.
    pub fn forward_from(&self, x: Tensor<3>, first: usize) -> Tensor<2> {
        self.head(self.gpt.final_norm(self.gpt.run_blocks_to_last(x, first)))
    }

    /// The head on the last position of final hidden states `[B, T, C]`.
    pub fn head(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [b, t, c] = hidden.dims();
        let last = hidden.slice(s![.., t - 1..t, ..]).reshape([b, c]);
        self.score.forward(last)
    }

    /// Freezes everything except `trainable` (gradients off; dropout of frozen parts stays as
    /// configured, so set the dropout to 0 for a deterministic frozen prefix).
    pub fn set_trainable(mut self, trainable: Trainable) -> Self {
        let n_layer = self.gpt.h.len();
        let first_trainable = n_layer - trainable.trainable_blocks(n_layer);
        let train_embeddings = trainable.embeddings();
        let gpt = &mut self.gpt;
        gpt.wte = gpt.wte.clone().set_require_grad(train_embeddings);
        gpt.wpe = gpt.wpe.clone().set_require_grad(train_embeddings);
        for (i, block) in gpt.h.iter_mut().enumerate() {
            *block = block.clone().set_require_grad(i >= first_trainable);
        }
        gpt.ln_f = gpt.ln_f.clone().set_require_grad(trainable != Trainable::Head);
        self.score = self.score.clone().set_require_grad(true);
        self
    }

    /// (trainable, total) parameter counts.
    pub fn parameter_counts(&self) -> (usize, usize) {
        crate::io::parameter_counts(self)
    }
}

