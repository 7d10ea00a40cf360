//! What the training loop batches for a classifier: token ids of a tokenised split, or the
//! cached output of the frozen blocks (computed once, kept on the host).

use std::sync::Arc;

use anyhow::Result;
use gpt::Classifier;
use gpt::models::CausalLm;
use gpt::burn::prelude::*;

use crate::data::spam::{SpamDataset, Splits};
use crate::train::steps::{ClassificationBatch, ClassifierInput};
use crate::train::trainer::BatchSource;

/// The batch sources of every split: token batches, or with `first_block > 0` the frozen
/// prefix's cached output.
pub fn split_sources(
    classifier: &Classifier,
    data: &Splits<SpamDataset>,
    first_block: usize,
    batch_size: usize,
) -> Result<Splits<Arc<dyn BatchSource<ClassificationBatch>>>> {
    if first_block == 0 {
        return Ok(Splits {
            train: as_source(TokenBatches(data.train.clone())),
            validation: as_source(TokenBatches(data.validation.clone())),
            test: as_source(TokenBatches(data.test.clone())),
        });
    }
    let started = std::time::Instant::now();
    let compute = |d: &SpamDataset| PrefixBatches::compute(classifier, d, first_block, batch_size).map(as_source);
    let sources = Splits { train: compute(&data.train)?, validation: compute(&data.validation)?, test: compute(&data.test)? };
    eprintln!("cached the output of the {first_block} frozen blocks in {:.1}s", started.elapsed().as_secs_f64());
    Ok(sources)
}

/// Token batches of a tokenised split.
pub struct TokenBatches(SpamDataset);

/// Token ids `[B, length]` of these examples.
fn token_ids(data: &SpamDataset, indices: &[usize], device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = indices.iter().flat_map(|&i| data.token_ids[i].iter().map(|&t| t as i64)).collect();
    Tensor::from_data(TensorData::new(ids, [indices.len(), data.length]), device)
}

impl BatchSource<ClassificationBatch> for TokenBatches {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> ClassificationBatch {
        let ids = token_ids(&self.0, indices, device);
        ClassificationBatch { inputs: ClassifierInput::Tokens(ids), labels: labels_tensor(&self.0.labels, indices, device) }
    }

    fn tokens(&self, indices: &[usize]) -> usize {
        indices.len() * self.0.length
    }
}

fn labels_tensor(labels: &[usize], indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| labels[i] as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

/// The frozen prefix's output for every example of a split, kept on the host: with everything
/// below the trainable blocks frozen and dropout off there, this is what those blocks would
/// compute again at every epoch. With it, where each example is read (none: the last position).
struct PrefixBatches {
    values: Vec<f32>,
    positions: Option<Vec<i64>>,
    labels: Vec<usize>,
    length: usize,
    width: usize,
}

impl PrefixBatches {
    fn compute(classifier: &Classifier, data: &SpamDataset, first_block: usize, batch_size: usize) -> Result<Self> {
        let model = classifier.model.valid();
        let device = model.device();
        let width = model.hidden_size();
        let mut values = Vec::with_capacity(data.len() * data.length * width);
        let mut positions: Option<Vec<i64>> = None;
        let indices: Vec<usize> = (0..data.len()).collect();
        for chunk in indices.chunks(batch_size.max(1)) {
            let ids = token_ids(data, chunk, &device);
            if let Some(p) = classifier.pool_positions(&ids) {
                let p = p.into_data().try_into_vec_as::<i64>().map_err(|e| anyhow::anyhow!("reading the pooled positions: {e:?}"))?;
                positions.get_or_insert_with(Vec::new).extend(p);
            }
            let x = model.run_blocks(model.embed_tokens(ids), 0..first_block);
            values.extend(x.into_data().try_into_vec_as::<f32>().map_err(|e| anyhow::anyhow!("reading the prefix cache: {e:?}"))?);
        }
        Ok(Self { values, positions, labels: data.labels.clone(), length: data.length, width })
    }
}

impl BatchSource<ClassificationBatch> for PrefixBatches {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> ClassificationBatch {
        let per_example = self.length * self.width;
        let mut values = Vec::with_capacity(indices.len() * per_example);
        for &i in indices {
            values.extend_from_slice(&self.values[i * per_example..(i + 1) * per_example]);
        }
        let hidden = Tensor::<3>::from_data(TensorData::new(values, [indices.len(), self.length, self.width]), device);
        let positions = self.positions.as_ref().map(|all| {
            let picked: Vec<i64> = indices.iter().map(|&i| all[i]).collect();
            Tensor::<1, Int>::from_data(TensorData::new(picked, [indices.len()]), device)
        });
        ClassificationBatch { inputs: ClassifierInput::Prefix { hidden, positions }, labels: labels_tensor(&self.labels, indices, device) }
    }

    fn tokens(&self, indices: &[usize]) -> usize {
        indices.len() * self.length
    }
}

fn as_source(source: impl BatchSource<ClassificationBatch> + 'static) -> Arc<dyn BatchSource<ClassificationBatch>> {
    Arc::new(source)
}
