//! What the formats' tests share: weight-like values, and the reference fixtures that
//! `scripts/reference/*_reference.py` write from bitsandbytes, read as bytes and f32 bit patterns.

use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};
use safetensors::{Dtype, SafeTensors};

/// Weight-like values: N(0, 0.02²) with one in a hundred ten times larger.
pub fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 0.02).unwrap();
    (0..n).map(|i| normal.sample(&mut rng) * if i % 100 == 37 { 10.0 } else { 1.0 }).collect()
}

/// f32 bit patterns, so that -0.0 ≠ 0.0 and every last bit counts.
pub fn f32_bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// A reference fixture under `tests/fixtures`.
pub struct Reference(Vec<u8>);

impl Reference {
    pub fn open(file: &str) -> Self {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(file);
        Self(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.0).unwrap()
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.tensors().tensor(name).unwrap_or_else(|e| panic!("{name}: {e}")).shape().to_vec()
    }

    /// The raw bytes of an 8-bit tensor (`dtype`).
    pub fn bytes(&self, name: &str, dtype: Dtype) -> Vec<u8> {
        let tensors = self.tensors();
        let tensor = tensors.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tensor.dtype(), dtype, "{name}");
        tensor.data().to_vec()
    }

    /// The f32 bit patterns of an f32 or bf16 tensor (bf16 widened).
    pub fn bits(&self, name: &str) -> Vec<u32> {
        let tensors = self.tensors();
        let tensor = tensors.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        match tensor.dtype() {
            Dtype::F32 => tensor.data().chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => tensor.data().chunks_exact(2).map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])) << 16).collect(),
            other => panic!("{name}: {other:?}"),
        }
    }

    /// The values of an f32 or bf16 tensor.
    pub fn values(&self, name: &str) -> Vec<f32> {
        self.bits(name).into_iter().map(f32::from_bits).collect()
    }
}
