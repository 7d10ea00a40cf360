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

    /// Picks a token from `logits` (one row, length = vocabulary).
    pub fn pick(&self, logits: &[f32], rng: &mut impl Rng) -> u32 {
        if self.is_greedy() {
            return argmax(logits);
        }
        // (token, scaled logit) of the candidates, most likely first.
        let mut candidates: Vec<(u32, f64)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, l as f64 / self.temperature)).collect();
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = self.top_k.filter(|&k| k > 0 && k < candidates.len()) {
            // Ties with the k-th logit stay in, as in transformers' TopKLogitsWarper.
            let kth = candidates[k - 1].1;
            let keep = candidates.iter().take_while(|c| c.1 >= kth).count();
            candidates.truncate(keep);
        }
        let max = candidates[0].1;
        let mut probs: Vec<f64> = candidates.iter().map(|c| (c.1 - max).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(top_p) = self.top_p.filter(|&p| p < 1.0) {
            // The smallest prefix whose mass reaches top_p (at least one token).
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
        let u: f64 = rng.random();
        let mut cumulative = 0.0;
        for (candidate, p) in candidates.iter().zip(&probs) {
            cumulative += p;
            if u < cumulative {
                return candidate.0;
            }
        }
        candidates[candidates.len() - 1].0
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

    #[test]
    fn rejects_bad_settings() {
        assert!(Sampling { temperature: -1.0, top_k: None, top_p: None }.validate().is_err());
        assert!(Sampling { temperature: 1.0, top_k: None, top_p: Some(0.0) }.validate().is_err());
        assert!(Sampling { temperature: 1.0, top_k: None, top_p: Some(1.5) }.validate().is_err());
        assert!(Sampling { temperature: 0.7, top_k: Some(40), top_p: Some(0.9) }.validate().is_ok());
    }
}
