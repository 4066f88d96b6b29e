//! The unit tests' pseudo-random numbers: one small LCG, reproducible from its seed.

/// Knuth's MMIX LCG; `next` gives its top 31 bits.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// Uniform in [−0.5, 0.5).
    pub(crate) fn f(&mut self) -> f32 {
        (self.next() as f32 / (1u64 << 31) as f32) - 0.5
    }
}
