//! Python's `random.Random`: the Mersenne Twister (MT19937) seeded from an integer as CPython
//! seeds it, `random()`, `choices()` and `sample()`. lm-eval draws its bootstrap resamples with
//! `random.Random(i).choices(xs, k=len(xs))` and its few-shot examples with
//! `random.Random(1234).sample(docs, k)`, so the same draws give the same numbers and prompts.

const N: usize = 624;
const M: usize = 397;

pub struct PythonRandom {
    state: [u32; N],
    index: usize,
}

impl PythonRandom {
    /// `random.Random(seed)` for a seed below 2³² (CPython's `init_by_array` with the one word).
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = 19_650_218;
        for i in 1..N {
            state[i] = 1_812_433_253u32.wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30)).wrapping_add(i as u32);
        }
        let key = [seed];
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let previous = state[i - 1] ^ (state[i - 1] >> 30);
            state[i] = (state[i] ^ previous.wrapping_mul(1_664_525)).wrapping_add(key[j]).wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                state[0] = state[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let previous = state[i - 1] ^ (state[i - 1] >> 30);
            state[i] = (state[i] ^ previous.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                state[0] = state[N - 1];
                i = 1;
            }
        }
        state[0] = 0x8000_0000;
        Self { state, index: N }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            for k in 0..N {
                let y = (self.state[k] & 0x8000_0000) | (self.state[(k + 1) % N] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.state[k] = self.state[(k + M) % N] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random()`: 53 random bits in [0, 1).
    pub fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// The index `choices(population, k=…)` picks next from a population of `n`: `floor(random() * n)`.
    pub fn choice_index(&mut self, n: usize) -> usize {
        (self.random() * n as f64).floor() as usize
    }

    /// `getrandbits(k)` for `k` ≤ 32: the top `k` bits of the next word.
    fn getrandbits(&mut self, k: u32) -> u32 {
        if k == 0 { 0 } else { self.next_u32() >> (32 - k) }
    }

    /// `_randbelow(n)`: uniform in `0..n` by rejection over `n.bit_length()` bits (`n` ≥ 1).
    fn randbelow(&mut self, n: usize) -> usize {
        let bits = usize::BITS - n.leading_zeros();
        assert!(bits <= 32, "a population of {n} is beyond these draws");
        loop {
            let r = self.getrandbits(bits) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// `sample(range(n), k)`: `k` distinct indices below `n` in the order CPython 3.11 draws
    /// them (a partial shuffle of a pool for small populations, rejection of repeats for large).
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "a sample of {k} from {n}");
        let mut setsize = 21usize;
        if k > 5 {
            // 4 ** ceil(log(k * 3, 4)), with Python's float logarithm.
            setsize += 4usize.pow((((k * 3) as f64).ln() / 4f64.ln()).ceil() as u32);
        }
        let mut result = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                result.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = std::collections::HashSet::new();
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while selected.contains(&j) {
                    j = self.randbelow(n);
                }
                selected.insert(j);
                result.push(j);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_equal_cpythons() {
        // python3 -c "import random; print(random.Random(0).random(), random.Random(1).random(), random.Random(99).random())"
        assert_eq!(PythonRandom::new(0).random(), 0.8444218515250481);
        assert_eq!(PythonRandom::new(1).random(), 0.13436424411240122);
        assert_eq!(PythonRandom::new(99).random(), 0.40397807494366633);
        // random.Random(3).choices(list(range(7)), k=10)
        let mut random = PythonRandom::new(3);
        let picks: Vec<usize> = (0..10).map(|_| random.choice_index(7)).collect();
        assert_eq!(picks, [1, 3, 2, 4, 4, 0, 0, 5, 1, 1]);
    }

    #[test]
    fn samples_equal_cpythons() {
        // r = random.Random(1234); [r.sample(range(n), k) for n, k in ((6, 2), (6, 3), (5, 5), (100, 3), (1000, 7), (30, 8))]
        let mut random = PythonRandom::new(1234);
        let draws: Vec<Vec<usize>> = [(6, 2), (6, 3), (5, 5), (100, 3), (1000, 7), (30, 8)].iter().map(|&(n, k)| random.sample(n, k)).collect();
        assert_eq!(draws, [vec![3, 0], vec![0, 5, 4], vec![0, 4, 1, 3, 2], vec![3, 2, 44], vec![663, 638, 495, 630, 474, 152, 93], vec![5, 22, 3, 0, 16, 15, 7, 2]]);
    }
}
