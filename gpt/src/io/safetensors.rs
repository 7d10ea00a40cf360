//! Reading and writing HF `model.safetensors` (single file or sharded with
//! `model.safetensors.index.json`), memory-mapped, with errors that name the file and tensor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, TensorInfo, TensorView};

use crate::error::{GptError, Result};
use crate::io::files::write_atomic_with;
use crate::io::host_memory::{f32_buffer, host_buffer};
use crate::io::params::TensorSource;
use crate::io::weight_dtype::WeightDtype;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The `weight_map` (tensor name → shard file) of a `model.safetensors.index.json`.
pub(crate) fn read_shard_index(path: &Path) -> Result<HashMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct ShardIndex {
        weight_map: HashMap<String, String>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| GptError::io(path, e))?;
    let index: ShardIndex = serde_json::from_str(&text).map_err(|e| GptError::Json { path: path.to_path_buf(), source: e })?;
    Ok(index.weight_map)
}

/// Some checkpoints (`transformers`' `save_pretrained` of a `GPT2LMHeadModel`) prefix every
/// trunk tensor with this; OpenAI's `gpt2` on the hub does not.
const TRANSFORMER_PREFIX: &str = "transformer.";

/// Whether a checkpoint entry is a buffer, not a weight: HF GPT-2 stores its causal mask as
/// `h.{i}.attn.bias` (and `masked_bias`). Note `h.{i}.attn.c_attn.bias` is a weight.
/// Older Llama checkpoints store their rotary frequencies (`rotary_emb.inv_freq`), recomputed here.
fn is_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || name.ends_with(".rotary_emb.inv_freq")
}

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    /// Start of the data section (8 + header length).
    data_start: usize,
}

struct Entry {
    file: usize,
    info: TensorInfo,
}

/// The tensors of a checkpoint directory, by name with the `transformer.` prefix removed.
pub struct SafetensorsSource {
    files: Vec<MappedFile>,
    entries: BTreeMap<String, Entry>,
    used: HashSet<String>,
    /// The dtype matrices (2-D tensors) are handed out in; vectors are always f32.
    matrices: WeightDtype,
}

impl SafetensorsSource {
    /// Opens `dir/model.safetensors` or, failing that, the shards listed in
    /// `dir/model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(SHARD_INDEX);
        if single.is_file() {
            Self::open_files(&[single])
        } else if index.is_file() {
            Self::open_sharded(&index)
        } else {
            let hint = if dir.join("pytorch_model.bin").exists() {
                " (only pytorch_model.bin is there: convert it to safetensors, e.g. with transformers' save_pretrained)"
            } else {
                ""
            };
            Err(GptError::Model(format!(
                "{}: no {SINGLE_FILE} or {SHARD_INDEX} in this directory{hint}",
                dir.display()
            )))
        }
    }

    fn open_sharded(index_path: &Path) -> Result<Self> {
        let weight_map = read_shard_index(index_path)?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&String> = weight_map.values().collect();
        shard_names.sort();
        shard_names.dedup();
        let shards: Vec<PathBuf> = shard_names.iter().map(|name| dir.join(name)).collect();
        let source = Self::open_files(&shards)?;
        // Every tensor the index promises must be in the shard it names.
        for (name, shard) in &weight_map {
            let key = name.strip_prefix(TRANSFORMER_PREFIX).unwrap_or(name);
            let found = source.entries.get(key).map(|e| &source.files[e.file].path);
            if found != Some(&dir.join(shard)) && !is_buffer(key) {
                return Err(GptError::Model(format!(
                    "{}: tensor `{name}` is listed in shard {shard}, but that shard does not contain it",
                    index_path.display()
                )));
            }
        }
        Ok(source)
    }

    /// Opens and validates safetensors files (headers, offsets, sizes).
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut entries = BTreeMap::new();
        for path in paths {
            let file = std::fs::File::open(path).map_err(|e| GptError::io(path, e))?;
            // SAFETY: the map is read-only; a checkpoint being rewritten under us is the same hazard
            // as for every tool that memory-maps weights (transformers, candle).
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| GptError::io(path, e))?;
            let bad = |reason: String| GptError::Safetensors { path: path.clone(), reason };
            // `deserialize` checks the header, every tensor's offsets and the total size.
            SafeTensors::deserialize(&mmap).map_err(|e| bad(e.to_string()))?;
            let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| bad(e.to_string()))?;
            let file_index = files.len();
            for (name, info) in metadata.tensors() {
                let key = name.strip_prefix(TRANSFORMER_PREFIX).unwrap_or(&name).to_string();
                if is_buffer(&key) {
                    continue;
                }
                if entries.insert(key.clone(), Entry { file: file_index, info: info.clone() }).is_some() {
                    return Err(bad(format!("tensor `{key}` occurs twice (with and without the `transformer.` prefix, or in two shards)")));
                }
            }
            files.push(MappedFile { path: path.clone(), mmap, data_start: 8 + header_len });
        }
        Ok(Self { files, entries, used: HashSet::new(), matrices: WeightDtype::F32 })
    }

    /// Hands matrices (Linear weights, embeddings, heads) out as `dtype`: bf16 ones stored in bf16
    /// are then read as they are, never widened.
    pub fn with_matrices(mut self, dtype: WeightDtype) -> Self {
        self.matrices = dtype;
        self
    }

    /// Names of the tensors (prefix removed, buffers skipped).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn bytes(&self, entry: &Entry) -> &[u8] {
        let file = &self.files[entry.file];
        let (start, end) = entry.info.data_offsets;
        &file.mmap[file.data_start + start..file.data_start + end]
    }

    fn path_of(&self, name: &str) -> PathBuf {
        match self.entries.get(name) {
            Some(entry) => self.files[entry.file].path.clone(),
            None => self.files.first().map(|f| f.path.clone()).unwrap_or_default(),
        }
    }

    /// Reads one tensor as f32 values (F16 and BF16 are widened).
    fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let entry = self.entry(name)?;
        let bytes = self.bytes(entry);
        let mut values = f32_buffer(entry.info.shape.iter().product());
        match entry.info.dtype {
            Dtype::F32 => values.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Dtype::F16 => values.extend(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
            Dtype::BF16 => values.extend(bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
            other => return Err(self.unsupported(name, other)),
        }
        Ok((entry.info.shape.clone(), values))
    }

    /// Reads one tensor as bf16 values: BF16 as stored, F32 and F16 rounded to nearest (as
    /// PyTorch's `.to(torch.bfloat16)`).
    fn read_bf16(&self, name: &str) -> Result<(Vec<usize>, Vec<half::bf16>)> {
        let entry = self.entry(name)?;
        let bytes = self.bytes(entry);
        let mut values = host_buffer(entry.info.shape.iter().product());
        match entry.info.dtype {
            Dtype::BF16 => values.extend(bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]))),
            Dtype::F32 => values.extend(bytes.chunks_exact(4).map(|b| half::bf16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))),
            Dtype::F16 => values.extend(bytes.chunks_exact(2).map(|b| half::bf16::from_f32(half::f16::from_le_bytes([b[0], b[1]]).to_f32()))),
            other => return Err(self.unsupported(name, other)),
        }
        Ok((entry.info.shape.clone(), values))
    }

    /// Whether the checkpoint holds tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Tensor `name` as stored: dtype, shape and bytes, for tensors that are not parameters
    /// (bitsandbytes' packed weights and quantization state). Counts as used.
    pub fn raw(&mut self, name: &str) -> Result<(Dtype, Vec<usize>, Vec<u8>)> {
        let entry = self.entry(name)?;
        let found = (entry.info.dtype, entry.info.shape.clone(), self.bytes(entry).to_vec());
        self.used.insert(name.to_string());
        Ok(found)
    }

    /// Tensor `name`'s values widened to f32, whatever its shape. Counts as used.
    pub fn f32_values(&mut self, name: &str) -> Result<Vec<f32>> {
        let (_, values) = self.read_f32(name)?;
        self.used.insert(name.to_string());
        Ok(values)
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.get(name).ok_or_else(|| GptError::MissingTensor { path: self.path_of(name), name: name.to_string(), expected: Vec::new() })
    }

    fn unsupported(&self, name: &str, dtype: Dtype) -> GptError {
        GptError::UnsupportedDtype { path: self.path_of(name), name: name.to_string(), dtype: format!("{dtype:?}") }
    }

    /// Call after every parameter of a GPT-2 was filled (see [`Self::finish_tied_to`]).
    pub fn finish(self) -> Result<()> {
        self.finish_tied_to("wte.weight")
    }

    /// Call after every parameter was filled: tensors nobody asked for mean the checkpoint is not
    /// the model the config describes. A stored `lm_head.weight` is accepted when it equals the
    /// `embedding` the model's head is tied to (some exporters write it out).
    pub fn finish_tied_to(self, embedding: &str) -> Result<()> {
        let mut unused: Vec<String> = self.entries.keys().filter(|name| !self.used.contains(name.as_str())).cloned().collect();
        if let Some(pos) = unused.iter().position(|n| n == "lm_head.weight") {
            let (_, head) = self.read_f32("lm_head.weight")?;
            let (_, tied) = self.read_f32(embedding)?;
            if head != tied {
                return Err(GptError::Model(format!(
                    "{}: `lm_head.weight` differs from `{embedding}`: an untied output head, but the model's head \
                     is tied to the token embedding (GPT-2 always; others when config.json says `tie_word_embeddings`)",
                    self.path_of("lm_head.weight").display()
                )));
            }
            unused.remove(pos);
        }
        if unused.is_empty() {
            Ok(())
        } else {
            Err(GptError::UnexpectedTensors { path: self.path_of(&unused[0]), names: unused })
        }
    }
}

impl TensorSource for SafetensorsSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let Some(entry) = self.entries.get(name) else {
            return Err(GptError::MissingTensor { path: self.path_of(name), name: name.to_string(), expected: shape.to_vec() });
        };
        if entry.info.shape != shape {
            return Err(GptError::ShapeMismatch {
                path: self.path_of(name),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: entry.info.shape.clone(),
            });
        }
        let data = if shape.len() == 2 && self.matrices == WeightDtype::Bf16 {
            let (shape, values) = self.read_bf16(name)?;
            TensorData::new(values, shape)
        } else {
            let (shape, values) = self.read_f32(name)?;
            TensorData::new(values, shape)
        };
        self.used.insert(name.to_string());
        Ok(data)
    }
}

/// Writes f32 tensors to one safetensors file, atomically, with `format: pt` metadata (what
/// `transformers` expects).
pub fn write_safetensors(path: &Path, tensors: &[(String, TensorData)]) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, data) in tensors {
        let view = TensorView::new(Dtype::F32, data.shape().to_vec(), data.as_bytes())
            .map_err(|e| GptError::Model(format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    write_atomic_with(path, |tmp| {
        safetensors::tensor::serialize_to_file(views, metadata, tmp).map_err(std::io::Error::other)
    })
}
