//! The simulators' random generator: NumPy's `PCG64` seeded through NumPy's
//! `SeedSequence`, exactly as Gymnasium's `reset(seed=…)` seeds its envs.
//!
//! With it, `reset(Some(seed))` draws the same initial state Gymnasium draws for the
//! same seed, bit for bit, so reference trajectories can be reproduced from their
//! seeds alone. Written here rather than taken from a crate because no crate
//! reproduces NumPy's seeding (`rand_pcg` has the same generator but not
//! `SeedSequence`, and its output order differs).

use std::hash::{BuildHasher, Hasher};

const MULT_128: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;

// SeedSequence's hashing constants (numpy/random/bit_generator.pyx).
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// NumPy-compatible PCG64 (XSL-RR 128/64).
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u128,
    increment: u128,
    /// A second standard normal from the last Box–Muller draw.
    spare_normal: Option<f64>,
}

impl SimRng {
    /// The generator `numpy.random.Generator(PCG64(SeedSequence(seed)))` would use.
    pub fn seed(seed: u64) -> Self {
        let pool = seed_sequence_pool(seed);
        let words = generate_state(&pool, 8);
        let word64 = |i: usize| u64::from(words[2 * i]) | (u64::from(words[2 * i + 1]) << 32);
        let initstate = (u128::from(word64(0)) << 64) | u128::from(word64(1));
        let initseq = (u128::from(word64(2)) << 64) | u128::from(word64(3));
        let mut rng = Self {
            state: 0,
            increment: (initseq << 1) | 1,
            spare_normal: None,
        };
        rng.step();
        rng.state = rng.state.wrapping_add(initstate);
        rng.step();
        rng
    }

    /// A generator seeded from the operating system's randomness (as Gymnasium
    /// does when no seed is given).
    pub fn from_entropy() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        Self::seed(hasher.finish())
    }

    /// The generator's full state as bytes (for checkpoints): 16 bytes of state,
    /// 16 of increment, 1 flag and 8 of a pending normal draw, little-endian.
    pub fn to_bytes(&self) -> [u8; 41] {
        let mut out = [0u8; 41];
        out[..16].copy_from_slice(&self.state.to_le_bytes());
        out[16..32].copy_from_slice(&self.increment.to_le_bytes());
        if let Some(z) = self.spare_normal {
            out[32] = 1;
            out[33..].copy_from_slice(&z.to_le_bytes());
        }
        out
    }

    /// Restores a generator saved by [`to_bytes`](Self::to_bytes); `None` for
    /// bytes that no generator wrote (wrong length, even increment, bad flag).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 41] = bytes.try_into().ok()?;
        let mut words = [0u128; 2];
        for (i, word) in words.iter_mut().enumerate() {
            let mut le = [0u8; 16];
            le.copy_from_slice(&bytes[16 * i..16 * (i + 1)]);
            *word = u128::from_le_bytes(le);
        }
        let [state, increment] = words;
        if increment & 1 == 0 {
            return None;
        }
        let spare_normal = match bytes[32] {
            0 => None,
            1 => {
                let mut le = [0u8; 8];
                le.copy_from_slice(&bytes[33..]);
                Some(f64::from_le_bytes(le))
            }
            _ => return None,
        };
        Some(Self {
            state,
            increment,
            spare_normal,
        })
    }

    fn step(&mut self) {
        self.state = self
            .state
            .wrapping_mul(MULT_128)
            .wrapping_add(self.increment);
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let state = self.state;
        let xored = ((state >> 64) as u64) ^ (state as u64);
        xored.rotate_right((state >> 122) as u32)
    }

    /// Uniform in [0, 1) with 53 random bits (NumPy's `random()`).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform in [low, high), computed as NumPy's `uniform` computes it.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// A standard normal draw (Box–Muller; not NumPy's ziggurat stream).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        // 1 - u is in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - self.next_f64()).ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * self.next_f64();
        self.spare_normal = Some(radius * angle.sin());
        radius * angle.cos()
    }

    /// An integer uniform in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX.wrapping_rem(n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut value = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    value = value.wrapping_mul(*hash_const);
    value ^ (value >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let result = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    result ^ (result >> XSHIFT)
}

/// `SeedSequence(seed).pool`: the seed as little-endian 32-bit words, hashed and
/// mixed into four words.
fn seed_sequence_pool(seed: u64) -> [u32; POOL_SIZE] {
    let entropy: Vec<u32> = if seed >> 32 == 0 {
        vec![seed as u32]
    } else {
        vec![seed as u32, (seed >> 32) as u32]
    };
    let mut hash_const = INIT_A;
    let mut pool = [0u32; POOL_SIZE];
    for (i, slot) in pool.iter_mut().enumerate() {
        *slot = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hash_const);
    }
    for src in 0..POOL_SIZE {
        for dst in 0..POOL_SIZE {
            if src != dst {
                pool[dst] = mix(pool[dst], hashmix(pool[src], &mut hash_const));
            }
        }
    }
    // A u64 seed has at most two words, never more than the pool holds.
    pool
}

/// `SeedSequence.generate_state(n_words, uint32)`.
fn generate_state(pool: &[u32; POOL_SIZE], n_words: usize) -> Vec<u32> {
    let mut hash_const = INIT_B;
    (0..n_words)
        .map(|i| {
            let mut value = pool[i % POOL_SIZE] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            value = value.wrapping_mul(hash_const);
            value ^ (value >> XSHIFT)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_continues_the_same_stream() {
        let mut rng = SimRng::seed(9);
        rng.normal();
        let saved = rng.to_bytes();
        let mut restored = SimRng::from_bytes(&saved).unwrap();
        for _ in 0..5 {
            assert_eq!(rng.normal(), restored.normal());
            assert_eq!(rng.next_u64(), restored.next_u64());
        }
        assert!(SimRng::from_bytes(&saved[..40]).is_none());
        let mut even = saved;
        even[16] &= !1;
        assert!(SimRng::from_bytes(&even).is_none());
    }

    /// `numpy.random.Generator(numpy.random.PCG64(seed)).random()`, NumPy 2.4.6.
    #[test]
    fn matches_numpy_first_doubles() {
        let expected = [
            (0, [0.6369616873214543, 0.2697867137638703]),
            (1, [0.5118216247002567, 0.9504636963259353]),
            (42, [0.7739560485559633, 0.4388784397520523]),
            ((1 << 40) + 7, [0.829812891829413, 0.25530515834910417]),
        ];
        for (seed, doubles) in expected {
            let mut rng = SimRng::seed(seed);
            assert_eq!([rng.next_f64(), rng.next_f64()], doubles, "seed {seed}");
        }
    }
}
