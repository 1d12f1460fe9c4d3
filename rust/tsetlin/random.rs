//! Counter-based random numbers: every draw is a keyed hash of its position in the stream.

use rayon::prelude::*;

/// SplitMix64's finaliser: a bijective mix of 64 bits.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed hash of a tuple of counters: the random number at that point of the stream.
#[inline(always)]
pub fn stream_key(seed: u64, parts: &[u64]) -> u64 {
    let mut h = mix64(seed ^ 0x5851_f42d_4c95_7f2d);
    for &p in parts {
        h = stream_step(h, p);
    }
    h
}

/// One more counter on a stream key: `stream_key(s, [a.., b]) == stream_step(stream_key(s, [a..]), b)`,
/// so per-clause keys cost one mix once the (epoch, example, role, class) prefix is hashed.
#[inline(always)]
pub fn stream_step(h: u64, part: u64) -> u64 {
    mix64(
        h ^ part
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(0x632b_e59b_d9b4_e019),
    )
}

/// Roles of a draw in the stream (the fourth counter).
pub const ROLE_TARGET: u64 = 1;
pub const ROLE_NEGATIVE: u64 = 2;
pub const ROLE_PICK_NEGATIVE: u64 = 3;
pub const ROLE_DROP: u64 = 4;
pub const ROLE_INIT_WEIGHT: u64 = 5;
const ROLE_MASKS: u64 = 6;

/// `u < num / den` for the 53 high bits of `h` as a uniform in [0, 1), in exact integers.
#[inline(always)]
pub(super) fn below(h: u64, num: u64, den: u64) -> bool {
    ((h >> 11) as u128) * (den as u128) < (num as u128) << 53
}

/// wyrand: the per-clause generator of literal masks, seeded from the stream key.
struct Wy(u64);

impl Wy {
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// 64 independent Bernoulli(t / 2^32) bits: a bit-sliced comparison of 64 uniform 32-bit
    /// numbers with `t`, most significant bit first, stopping once every lane is decided
    /// (about log2(64) + 2 words for any p, instead of one draw per literal).
    #[inline(always)]
    fn bernoulli_mask(&mut self, t: u64) -> u64 {
        if t >= 1 << 32 {
            return !0;
        }
        if t == 0 {
            return 0;
        }
        let (mut lt, mut eq) = (0u64, !0u64);
        for bit in (0..32).rev() {
            let r = self.next();
            if (t >> bit) & 1 == 1 {
                lt |= eq & !r;
                eq &= r;
            } else {
                eq &= !r;
            }
            if eq == 0 {
                break;
            }
        }
        lt
    }
}

/// Words in each table of Bernoulli masks (a power of two).
pub const MASK_POOL_WORDS: usize = 1 << 15;
const POOL_CHUNK: usize = 256;
const ROLE_POOL: u64 = 7;

/// A table of `MASK_POOL_WORDS` Bernoulli(t / 2^32) masks for one epoch, filled from the
/// counter-based stream (chunk `i` from a generator keyed by (seed, epoch, kind, i)). An
/// updated clause reads its literal masks from this table at a random offset and rotation
/// drawn from its own stream key, so word `w`'s mask depends only on (key, w): words whose
/// automata cannot change are skipped without disturbing the others' draws.
pub fn mask_pool(seed: u64, epoch: u64, kind: u64, t: u64) -> Vec<u64> {
    let mut pool = vec![0u64; MASK_POOL_WORDS];
    pool.par_chunks_mut(POOL_CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut rng = Wy(stream_key(seed, &[epoch, ROLE_POOL, kind, i as u64]));
            for m in chunk.iter_mut() {
                *m = rng.bernoulli_mask(t);
            }
        });
    pool
}

/// Where an updated clause reads its masks: offset into the pool and bit rotation.
#[derive(Clone, Copy)]
pub(super) struct MaskCursor {
    pub(super) offset: usize,
    pub(super) rotation: u32,
}

impl MaskCursor {
    pub(super) fn new(h: u64) -> Self {
        let g = mix64(h ^ ROLE_MASKS);
        MaskCursor {
            offset: (g as usize) & (MASK_POOL_WORDS - 1),
            rotation: (g >> 58) as u32,
        }
    }
    #[inline(always)]
    pub(super) fn mask(&self, pool: &[u64], word: usize) -> u64 {
        pool[(self.offset + word) & (MASK_POOL_WORDS - 1)].rotate_left(self.rotation)
    }
}

/// Probability `p` as a 32-bit fixed-point threshold for `bernoulli_mask`.
pub(super) fn threshold32(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bernoulli_masks_have_the_right_rate() {
        let mut rng = Wy(3);
        let t = threshold32(0.1);
        let ones: u32 = (0..20_000)
            .map(|_| rng.bernoulli_mask(t).count_ones())
            .sum();
        let rate = ones as f64 / (20_000.0 * 64.0);
        assert!((rate - 0.1).abs() < 0.003, "rate {rate}");
        assert_eq!(rng.bernoulli_mask(1 << 32), !0);
        assert_eq!(rng.bernoulli_mask(0), 0);
    }
}
