//! Choosing the next token from a row of logits: greedy, or temperature + top-k + top-p sampling.
//! Runs on the host: one row is 50,257 floats, and doing it here makes sampling exact and the same
//! on every backend.

use rand::Rng;

use crate::error::{GptError, Result};

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Keep only the k most likely tokens (`None` or 0 = all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p (`None` or 1 = all).
    pub top_p: Option<f64>,
}

impl Sampling {
    pub const GREEDY: Self = Self { temperature: 0.0, top_k: None, top_p: None };

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(GptError::Generation(format!("temperature must be >= 0, got {}", self.temperature)));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(GptError::Generation(format!("top_p must be in (0, 1], got {p}")));
        }
        Ok(())
    }

    /// Picks a token from `logits` (one row, length = vocabulary): the candidates in order of
    /// likelihood (ties: lower id first), cut to the top k (ties with the k-th stay) and to the
    /// smallest prefix whose probability reaches top_p, then one uniform draw walks their
    /// cumulative probabilities. Nothing is sorted: each cut and the walk is a weighted selection
    /// in linear time ([`Candidates::crossing`]); sorting all 50,257 logits for every token cost
    /// more than a small model's forward pass.
    pub fn pick(&self, logits: &[f32], rng: &mut impl Rng) -> u32 {
        if self.is_greedy() || logits.len() < 2 {
            return argmax(logits);
        }
        let mut candidates = Candidates::new(logits, self.temperature);
        if let Some(k) = self.top_k.filter(|&k| k > 0 && k < logits.len()) {
            candidates.keep_top_k(k);
        }
        if let Some(top_p) = self.top_p.filter(|&p| p < 1.0) {
            let mass = candidates.mass();
            // The smallest prefix whose mass reaches top_p: up to the candidate at which it does.
            let (position, _) = candidates.crossing(top_p * mass);
            candidates.truncate(position + 1);
        }
        let target = rng.random::<f64>() * candidates.mass();
        candidates.crossing(target).1
    }
}

/// One candidate: its logit, its unnormalised probability `exp((logit - max) / T)` and its id,
/// side by side so that selection reads one contiguous array.
#[derive(Clone, Copy)]
struct Candidate {
    logit: f32,
    weight: f32,
    token: u32,
}

/// Likelier first; equal logits: lower id first (a strict order).
fn rank(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.token.cmp(&b.token))
}

/// The candidate tokens of one draw, in no particular order: every question about "the n most
/// likely" is answered by selection.
struct Candidates(Vec<Candidate>);

impl Candidates {
    fn new(logits: &[f32], temperature: f64) -> Self {
        let scale = (1.0 / temperature) as f32;
        let max = logits[argmax(logits) as usize];
        Self(logits.iter().enumerate().map(|(i, &l)| Candidate { logit: l, weight: ((l - max) * scale).exp(), token: i as u32 }).collect())
    }

    fn mass(&self) -> f64 {
        self.0.iter().map(|c| c.weight as f64).sum()
    }

    /// Keeps the candidates at least as likely as the k-th (ties with it stay, as in
    /// transformers' TopKLogitsWarper).
    fn keep_top_k(&mut self, k: usize) {
        self.0.select_nth_unstable_by(k - 1, rank);
        let kth = self.0[k - 1].logit;
        self.0.retain(|c| c.logit >= kth);
    }

    /// Keeps the `n` most likely candidates (those `crossing` left in front).
    fn truncate(&mut self, n: usize) {
        self.0.truncate(n.max(1));
    }

    /// Walks the candidates from the most likely, adding their weights, and returns the
    /// position and token at which the running sum first exceeds `target` (the least likely
    /// when it never does). Afterwards the candidates up to that position are the front of the
    /// list. Quickselect on weight sums: linear time, no sort.
    fn crossing(&mut self, mut target: f64) -> (usize, u32) {
        let (mut start, mut end) = (0, self.0.len());
        while end - start > 32 {
            let part = &mut self.0[start..end];
            let mid = part.len() / 2;
            part.select_nth_unstable_by(mid, rank);
            let above: f64 = part[..mid].iter().map(|c| c.weight as f64).sum();
            if target < above {
                end = start + mid;
            } else {
                target -= above;
                start += mid;
            }
        }
        let part = &mut self.0[start..end];
        part.sort_unstable_by(rank);
        for (i, candidate) in part.iter().enumerate() {
            if target < candidate.weight as f64 {
                return (start + i, candidate.token);
            }
            target -= candidate.weight as f64;
        }
        (end - 1, self.0[end - 1].token)
    }
}

/// Index of the largest logit; the first one on ties (as `torch.argmax`). NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, -1.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 0.5]), 1);
        assert_eq!(Sampling::GREEDY.pick(&[0.0, 0.5, 0.2], &mut StdRng::seed_from_u64(0)), 1);
    }

    fn histogram(s: &Sampling, logits: &[f32], draws: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0; logits.len()];
        for _ in 0..draws {
            counts[s.pick(logits, &mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn temperature_sampling_follows_the_softmax() {
        // probs of [ln 1, ln 2, ln 3, ln 4] = [0.1, 0.2, 0.3, 0.4]
        let logits: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|x| x.ln()).collect();
        let s = Sampling { temperature: 1.0, top_k: None, top_p: None };
        let counts = histogram(&s, &logits, 20_000);
        for (i, expected) in [0.1, 0.2, 0.3, 0.4].iter().enumerate() {
            let got = counts[i] as f64 / 20_000.0;
            assert!((got - expected).abs() < 0.015, "token {i}: {got} vs {expected}");
        }
        // A high temperature flattens, a low one sharpens.
        let hot = histogram(&Sampling { temperature: 100.0, ..s.clone() }, &logits, 20_000);
        assert!((hot[0] as f64 / 20_000.0 - 0.25).abs() < 0.02);
        let cold = histogram(&Sampling { temperature: 0.01, ..s }, &logits, 2_000);
        assert_eq!(cold[3], 2_000);
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let logits: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|x| x.ln()).collect();
        let k2 = histogram(&Sampling { temperature: 1.0, top_k: Some(2), top_p: None }, &logits, 10_000);
        assert_eq!(k2[0] + k2[1], 0);
        assert!((k2[3] as f64 / 10_000.0 - 4.0 / 7.0).abs() < 0.02);
        // top_p 0.5: 0.4 < 0.5, so 0.3 is needed too; 0.2 and 0.1 are cut.
        let p5 = histogram(&Sampling { temperature: 1.0, top_k: None, top_p: Some(0.5) }, &logits, 10_000);
        assert_eq!(p5[0] + p5[1], 0);
        assert!(p5[2] > 0 && p5[3] > 0);
        // top_p smaller than the best token keeps exactly that token.
        let tiny = histogram(&Sampling { temperature: 1.0, top_k: None, top_p: Some(0.01) }, &logits, 500);
        assert_eq!(tiny[3], 500);
    }

    /// The sampler as first written: sort the whole vocabulary, normalise, cut, walk.
    fn pick_by_full_sort(s: &Sampling, logits: &[f32], u: f64) -> u32 {
        let mut candidates: Vec<(u32, f64)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l as f64 / s.temperature)).collect();
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = s.top_k.filter(|&k| k > 0 && k < candidates.len()) {
            let kth = candidates[k - 1].1;
            let keep = candidates.iter().take_while(|c| c.1 >= kth).count();
            candidates.truncate(keep);
        }
        let max = candidates[0].1;
        let mut probs: Vec<f64> = candidates.iter().map(|c| (c.1 - max).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(top_p) = s.top_p.filter(|&p| p < 1.0) {
            let mut mass = 0.0;
            let keep = probs.iter().take_while(|&&p| {
                let before = mass;
                mass += p;
                before < top_p
            });
            let keep = keep.count().max(1);
            candidates.truncate(keep);
            probs.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let mut cumulative = 0.0;
        for (candidate, p) in candidates.iter().zip(&probs) {
            cumulative += p;
            if u < cumulative {
                return candidate.0;
            }
        }
        candidates[candidates.len() - 1].0
    }

    /// The partial sort picks what sorting everything picks, for the same uniform draw (up to
    /// float rounding at a boundary between two candidates: allowed in 1 draw of 1,000).
    #[test]
    fn partial_sorting_picks_what_a_full_sort_picks() {
        let mut rng = StdRng::seed_from_u64(3);
        let settings = [
            Sampling { temperature: 1.0, top_k: None, top_p: None },
            Sampling { temperature: 0.7, top_k: Some(40), top_p: None },
            Sampling { temperature: 1.3, top_k: None, top_p: Some(0.9) },
            Sampling { temperature: 0.8, top_k: Some(200), top_p: Some(0.95) },
            Sampling { temperature: 2.0, top_k: Some(1), top_p: None },
        ];
        let (mut draws, mut differ) = (0, 0);
        for round in 0..40 {
            // Flat and peaked rows, with a few exact ties (thousands of equal logits would put
            // the top-p cut on a float-rounding coin toss between equals, in both versions).
            let spread = [0.5f32, 3.0, 8.0][round % 3];
            let mut logits: Vec<f32> = (0..5_000).map(|_| rng.random::<f32>() * spread * 4.0).collect();
            let best = logits[argmax(&logits) as usize];
            logits[..5].fill(best);
            let tied = logits[99];
            logits[100..140].fill(tied);
            for s in &settings {
                for _ in 0..25 {
                    let u: f64 = rng.random();
                    let mut replay = ReplayRng(u);
                    let fast = s.pick(&logits, &mut replay);
                    draws += 1;
                    differ += usize::from(fast != pick_by_full_sort(s, &logits, u));
                }
            }
        }
        assert!(differ * 1_000 <= draws, "{differ} of {draws} draws differ");
    }

    /// An `Rng` whose first `f64` is `u` (what `pick` draws).
    struct ReplayRng(f64);

    impl rand::RngCore for ReplayRng {
        fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }
        fn next_u64(&mut self) -> u64 {
            // rand's f64 in [0, 1) takes the top 53 bits.
            ((self.0 * (1u64 << 53) as f64) as u64) << 11
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            rand::RngCore::fill_bytes(&mut StdRng::seed_from_u64(0), dest)
        }
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(Sampling { temperature: -1.0, top_k: None, top_p: None }.validate().is_err());
        assert!(Sampling { temperature: 1.0, top_k: None, top_p: Some(0.0) }.validate().is_err());
        assert!(Sampling { temperature: 1.0, top_k: None, top_p: Some(1.5) }.validate().is_err());
        assert!(Sampling { temperature: 0.7, top_k: Some(40), top_p: Some(0.9) }.validate().is_ok());
    }
}
