//! Dropout masks drawn on the host: a small counter-based generator per chunk, in parallel, the
//! values already scaled (`0` or `1/keep`), so applying dropout is one multiplication.

/// Elements per parallel task; each task's generator is seeded from (seed, task index), so the mask
/// does not depend on how many threads draw it.
const CHUNK: usize = 1 << 14;

/// `n` values, each `1 / keep` with probability `keep` and `0` otherwise.
pub fn scaled_keep_mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    use rayon::prelude::*;
    let scale = (1.0 / keep) as f32;
    // P(u32 < threshold) = threshold / 2^32 = keep (to 2^-32).
    let threshold = (keep * 4_294_967_296.0).round().min(u32::MAX as f64) as u64;
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(CHUNK).enumerate().for_each(|(task, chunk)| {
        let mut state = splitmix64(seed ^ splitmix64(task as u64));
        for pair in chunk.chunks_mut(2) {
            // Two 32-bit draws per 64-bit output.
            let r = wyrand(&mut state);
            for (value, draw) in pair.iter_mut().zip([r & 0xFFFF_FFFF, r >> 32]) {
                *value = if draw < threshold { scale } else { 0.0 };
            }
        }
    });
    mask
}

/// SplitMix64's finaliser: a bijective mix of 64 bits (seeds the per-task generators).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// wyrand (Wang Yi's generator): one 64-bit multiply per output, passes BigCrush and PractRand.
fn wyrand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0xA076_1D64_78BD_642F);
    let t = u128::from(*state) * u128::from(*state ^ 0xE703_7ED1_A0B4_28DB);
    ((t >> 64) ^ t) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_keeps_the_right_fraction_scaled() {
        for keep in [0.9, 0.5, 0.25] {
            let n = 1_000_003; // odd, and not a multiple of the chunk size
            let mask = scaled_keep_mask(n, keep, 7);
            let scale = (1.0 / keep) as f32;
            assert!(mask.iter().all(|&v| v == 0.0 || v == scale));
            let kept = mask.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
            // Binomial standard deviation sqrt(keep(1-keep)/n) ≤ 5e-4: 6 sigma is 3e-3.
            assert!((kept - keep).abs() < 3e-3, "keep {keep}: kept {kept}");
            // The expectation is preserved: mean of the mask ≈ 1.
            let mean = mask.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            assert!((mean - 1.0).abs() < 0.02, "keep {keep}: mean {mean}");
        }
    }

    #[test]
    fn the_mask_depends_on_the_seed_only() {
        let a = scaled_keep_mask(100_000, 0.9, 1);
        assert_eq!(a, scaled_keep_mask(100_000, 0.9, 1));
        let b = scaled_keep_mask(100_000, 0.9, 2);
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        // Two independent masks differ where exactly one drops: 2·0.9·0.1 = 18 %.
        assert!((15_000..21_000).contains(&differ), "{differ}");
        // Neighbouring chunks are not copies of each other.
        assert_ne!(a[..CHUNK], a[CHUNK..2 * CHUNK]);
    }
}
