//! A small, explicitly specified random generator (SplitMix64), so that the world is reproducible
//! from a seed independently of any external crate's algorithm choices.

/// SplitMix64: a 64-bit state advanced by a fixed odd constant and finalised by a strong mixer.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

/// The SplitMix64 finaliser: a bijective 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for one `(seed, stream, index)` triple: every sample of the world has its own
    /// independent generator, so samples can be drawn in any order or in parallel.
    pub fn new(seed: u64, stream: u64, index: u64) -> Self {
        let state = mix64(seed ^ mix64(stream.wrapping_add(0x9e37_79b9_7f4a_7c15)))
            ^ mix64(
                index
                    .wrapping_mul(0xd1b5_4a32_d192_ed03)
                    .wrapping_add(stream),
            );
        Self { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.uniform() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A standard normal draw (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// A deterministic hash of integer lattice coordinates to `[0, 1)`, for value noise.
pub fn lattice(seed: u64, x: i32, y: i32) -> f32 {
    let h = mix64(seed ^ mix64((x as u32 as u64) << 32 | y as u32 as u64));
    (h >> 40) as f32 / (1u64 << 24) as f32
}
