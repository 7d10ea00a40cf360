//! Python's `random.Random`: the Mersenne Twister (MT19937) seeded from an integer as CPython
//! seeds it, `random()` and `choices()`. lm-eval draws its bootstrap resamples with
//! `random.Random(i).choices(xs, k=len(xs))`, so the same draws give the same standard error.

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
}
