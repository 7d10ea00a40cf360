//! A fine-tuned classifier at work: labelling new texts the way it was trained (its model's
//! tokenizer, cut/padded to its training length, read where it reads), and its accuracy, loss and confusion
//! matrix on labelled messages. `llmfs classify`, `llmfs eval spam` and the server use these.

use anyhow::Result;
use gpt::burn::prelude::*;
use gpt::models::CausalLm;
use gpt::{Classifier, Tokenizer};
use serde::Serialize;

use crate::data::spam::Message;
use crate::eval::metrics::ClassificationMetrics;

/// One prediction of [`classify_texts`].
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub text: String,
    pub label: String,
    pub probability: f64,
    pub probabilities: Vec<f64>,
}

/// Classifies texts the way the classifier was trained: encoded with its model's `tokenizer`,
/// cut/padded to its training length, read where it reads (see [`Classifier`]).
pub fn classify_texts(classifier: &Classifier, tokenizer: &Tokenizer, texts: &[String], batch_size: usize) -> Result<Vec<Prediction>> {
    let device = classifier.model.device();
    let context = classifier.model.context_length();
    let length = classifier.max_length().unwrap_or(context).min(context);
    let mut predictions = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch_size.max(1)) {
        let mut ids = Vec::with_capacity(chunk.len() * length);
        for text in chunk {
            let mut tokens = tokenizer.try_encode(text)?;
            tokens.resize(length, classifier.pad_token());
            ids.extend(tokens.into_iter().map(|t| t as i64));
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [chunk.len(), length]), &device);
        let probabilities = gpt::burn::tensor::activation::softmax(classifier.forward(ids), 1);
        let probabilities: Vec<f32> = probabilities.into_data().try_into_vec_as::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let n = classifier.labels().len();
        for (text, row) in chunk.iter().zip(probabilities.chunks(n)) {
            let best = gpt::generate::sampling::argmax(row) as usize;
            predictions.push(Prediction {
                text: text.clone(),
                label: classifier.labels()[best].clone(),
                probability: row[best] as f64,
                probabilities: row.iter().map(|&p| p as f64).collect(),
            });
        }
    }
    Ok(predictions)
}

/// Mean cross-entropy and the scores (accuracy, macro-F1, per-class precision / recall / F1, the
/// confusion matrix) of a classifier on labelled messages.
#[derive(Debug, Clone, Serialize)]
pub struct SplitEvaluation {
    pub loss: f64,
    #[serde(flatten)]
    pub metrics: ClassificationMetrics,
}

/// Evaluates `classifier` on `messages` (e.g. a split read with `read_split_csv`), as
/// [`classify_texts`] classifies them.
pub fn evaluate_messages(classifier: &Classifier, tokenizer: &Tokenizer, messages: &[Message], batch_size: usize) -> Result<SplitEvaluation> {
    let n_labels = classifier.labels().len();
    if let Some(bad) = messages.iter().find(|m| m.label >= n_labels) {
        anyhow::bail!("label {} is not one of the classifier's {n_labels} labels ({:?})", bad.label, bad.text);
    }
    let texts: Vec<String> = messages.iter().map(|m| m.text.clone()).collect();
    let predictions = classify_texts(classifier, tokenizer, &texts, batch_size)?;
    let mut loss = 0.0;
    let mut pairs = Vec::with_capacity(messages.len());
    for (message, prediction) in messages.iter().zip(&predictions) {
        let predicted = classifier.labels().iter().position(|l| *l == prediction.label).unwrap_or(0);
        pairs.push((message.label, predicted));
        loss -= prediction.probabilities[message.label].max(1e-30).ln();
    }
    let metrics = ClassificationMetrics::from_pairs(classifier.labels(), pairs);
    Ok(SplitEvaluation { loss: loss / messages.len().max(1) as f64, metrics })
}
