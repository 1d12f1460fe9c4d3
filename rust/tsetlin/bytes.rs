//! Training with one byte per automaton (AVX-512BW, or AVX2 in two 32-byte halves;
//! `state_bits <= 8`).
//!
//! The 64 automata of a literal word fill one 64-byte vector, so a masked saturating add or
//! subtract moves every selected automaton at once, where the bit-sliced planes need a carry
//! chain through `b` words, and one compare refreshes the word of the include plane that
//! clause evaluation reads. The bytes hold exactly the states the planes hold: the model is
//! converted on entry and exit of a training call and stays bit-identical to the plane kernel.

use rayon::prelude::*;

/// The 64 automata of one literal word, one state per byte (bit `j` of the word is byte `j`).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct Lane(pub [u8; 64]);

/// Whether this CPU has AVX-512F/BW (one vector per lane).
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has AVX2 (two vectors per lane).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the byte kernels.
pub fn available() -> bool {
    has_avx512() || has_avx2()
}

/// Call the AVX-512 kernel `$f` or its AVX2 twin with the same arguments.
macro_rules! dispatch {
    ($self:ident, $f:ident($($arg:expr),*)) => {
        if $self.avx512 {
            // SAFETY: `avx512` is set only where AVX-512F/BW were detected.
            unsafe { x86::$f($($arg),*) }
        } else {
            // SAFETY: `Kernels` exists only where AVX-512 or AVX2 was detected.
            unsafe { avx2::$f($($arg),*) }
        }
    };
}

/// What one word of feedback does: which automata step up, which step down.
#[derive(Clone, Copy)]
pub struct Step {
    pub up: u64,
    pub down: u64,
}

/// The byte kernels, constructible only where the CPU supports them.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Top state `2^b - 1` and first include state `2^(b-1)`.
    top: u8,
    half: u8,
    /// AVX-512 (else AVX2).
    avx512: bool,
}

impl Kernels {
    pub fn new(state_bits: usize) -> Option<Self> {
        if !(2..=8).contains(&state_bits) || !available() {
            return None;
        }
        Some(Kernels {
            top: ((1u16 << state_bits) - 1) as u8,
            half: 1u8 << (state_bits - 1),
            avx512: has_avx512(),
        })
    }

    /// Planes (include word and `planes` lower words per literal word) into lanes: clause `c`'s
    /// `lw` words go to the first `lw` lanes of `lanes[c * stride..]`.
    pub fn load_planes(
        &self,
        action: &[u64],
        lower: &[u64],
        (planes, lw, stride): (usize, usize, usize),
        lanes: &mut [Lane],
    ) {
        lanes
            .par_chunks_mut(stride)
            .zip(action.par_chunks(lw))
            .zip(lower.par_chunks(lw * planes))
            .for_each(|((lanes, action), lower)| {
                dispatch!(self, from_planes(action, lower, planes, &mut lanes[..lw]))
            });
    }

    /// Lanes back into the include and lower planes (the layout of `load_planes`).
    pub fn store_planes(
        &self,
        lanes: &[Lane],
        (planes, lw, stride): (usize, usize, usize),
        action: &mut [u64],
        lower: &mut [u64],
    ) {
        lanes
            .par_chunks(stride)
            .zip(action.par_chunks_mut(lw))
            .zip(lower.par_chunks_mut(lw * planes))
            .for_each(|((lanes, action), lower)| {
                dispatch!(self, to_planes(&lanes[..lw], planes, action, lower))
            });
    }

    /// Decrement, on the words whose summary bit is set, the automata `mask(w)` selects; the
    /// include words and summary bits follow, and `excluded(w)` is told of every word whose
    /// last include bit this clears.
    #[inline(always)]
    pub fn forget_included<M, V>(
        &self,
        action: &mut [u64],
        lanes: &mut [Lane],
        summary: &mut [u64],
        mask: M,
        excluded: V,
    ) where
        M: FnMut(usize) -> u64,
        V: FnMut(usize),
    {
        dispatch!(
            self,
            forget_included(action, lanes, summary, self.half, mask, excluded)
        )
    }

    /// Decrement the lanes of excluded words by a run of deferred steps: word `w` takes the
    /// steps `first(w)..n`, step `j` selecting the automata `mask(j, w)`. Words with include
    /// bits are skipped (they took every step when it happened).
    #[inline(always)]
    pub fn catch_up<S, M>(&self, action: &[u64], lanes: &mut [Lane], n: usize, first: S, mask: M)
    where
        S: FnMut(usize) -> usize,
        M: FnMut(usize, usize) -> u64,
    {
        dispatch!(self, catch_up(action, lanes, n, first, mask))
    }

    /// Automata whose state is at most `a`.
    #[inline(always)]
    pub fn at_most(&self, lane: &Lane, a: u8) -> u64 {
        dispatch!(self, at_most_mask(lane, a))
    }

    /// Automata at the last exclude state (the ones an increment would include).
    #[inline(always)]
    pub fn at_edge(&self, lane: &Lane) -> u64 {
        dispatch!(self, equal_mask(lane, self.half - 1))
    }

    /// Update the words of one clause: `plan(w, include bits, lane)` says which automata of
    /// word `w` step up or down; the include word and its summary bit follow the new states.
    #[inline(always)]
    pub fn update_clause<F>(
        &self,
        action: &mut [u64],
        lanes: &mut [Lane],
        summary: &mut [u64],
        plan: F,
    ) where
        F: FnMut(usize, u64, &Lane) -> Step,
    {
        dispatch!(
            self,
            update_clause(action, lanes, summary, self.top, self.half, plan)
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lane, Step};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn from_planes(action: &[u64], lower: &[u64], planes: usize, lanes: &mut [Lane]) {
        for (w, lane) in lanes.iter_mut().enumerate() {
            let mut v = _mm512_maskz_mov_epi8(action[w], _mm512_set1_epi8(1 << planes));
            for (p, &bits) in lower[w * planes..(w + 1) * planes].iter().enumerate() {
                v = _mm512_or_si512(v, _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(1 << p)));
            }
            unsafe { _mm512_store_si512(lane.0.as_mut_ptr().cast(), v) };
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn to_planes(lanes: &[Lane], planes: usize, action: &mut [u64], lower: &mut [u64]) {
        for (w, lane) in lanes.iter().enumerate() {
            let v = unsafe { _mm512_load_si512(lane.0.as_ptr().cast()) };
            action[w] = _mm512_test_epi8_mask(v, _mm512_set1_epi8(1 << planes));
            for (p, bits) in lower[w * planes..(w + 1) * planes].iter_mut().enumerate() {
                *bits = _mm512_test_epi8_mask(v, _mm512_set1_epi8(1 << p));
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn at_most_mask(lane: &Lane, value: u8) -> u64 {
        let v = unsafe { _mm512_load_si512(lane.0.as_ptr().cast()) };
        _mm512_cmple_epu8_mask(v, _mm512_set1_epi8(value as i8))
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn equal_mask(lane: &Lane, value: u8) -> u64 {
        let v = unsafe { _mm512_load_si512(lane.0.as_ptr().cast()) };
        _mm512_cmpeq_epu8_mask(v, _mm512_set1_epi8(value as i8))
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn forget_included<M, V>(
        action: &mut [u64],
        lanes: &mut [Lane],
        summary: &mut [u64],
        half: u8,
        mut mask: M,
        mut excluded: V,
    ) where
        M: FnMut(usize) -> u64,
        V: FnMut(usize),
    {
        let one = _mm512_set1_epi8(1);
        let half = _mm512_set1_epi8(half as i8);
        for (i, word) in summary.iter_mut().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let w = i * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let down = mask(w);
                if down != 0 {
                    let lane = &mut lanes[w];
                    let mut v = unsafe { _mm512_load_si512(lane.0.as_ptr().cast()) };
                    v = _mm512_mask_subs_epu8(v, down, v, one);
                    unsafe { _mm512_store_si512(lane.0.as_mut_ptr().cast(), v) };
                    let include = _mm512_cmpge_epu8_mask(v, half);
                    action[w] = include;
                    if include == 0 {
                        *word &= !(1u64 << (w % 64));
                        excluded(w);
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn catch_up<S, M>(
        action: &[u64],
        lanes: &mut [Lane],
        n: usize,
        mut first: S,
        mut mask: M,
    ) where
        S: FnMut(usize) -> usize,
        M: FnMut(usize, usize) -> u64,
    {
        let one = _mm512_set1_epi8(1);
        let count = lanes.len().min(action.len());
        for w in 0..count {
            if w + AHEAD < count {
                // SAFETY: in bounds; a prefetch never faults anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(lanes.as_ptr().add(w + AHEAD).cast()) };
            }
            let start = first(w);
            if action[w] != 0 || start >= n {
                continue;
            }
            let lane = &mut lanes[w];
            let mut v = unsafe { _mm512_load_si512(lane.0.as_ptr().cast()) };
            for j in start..n {
                v = _mm512_mask_subs_epu8(v, mask(j, w), v, one);
            }
            unsafe { _mm512_store_si512(lane.0.as_mut_ptr().cast(), v) };
        }
    }

    /// Lanes fetched ahead of the one being updated: a clause's lanes are contiguous but span
    /// several pages, where the hardware prefetcher restarts.
    const AHEAD: usize = 6;

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn update_clause<F>(
        action: &mut [u64],
        lanes: &mut [Lane],
        summary: &mut [u64],
        top: u8,
        half: u8,
        mut plan: F,
    ) where
        F: FnMut(usize, u64, &Lane) -> Step,
    {
        let one = _mm512_set1_epi8(1);
        let top = _mm512_set1_epi8(top as i8);
        let half = _mm512_set1_epi8(half as i8);
        let n = lanes.len().min(action.len());
        for w in 0..n {
            if w + AHEAD < n {
                // SAFETY: in bounds; a prefetch never faults anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(lanes.as_ptr().add(w + AHEAD).cast()) };
            }
            let step = plan(w, action[w], &lanes[w]);
            if step.up | step.down == 0 {
                continue;
            }
            let lane = &mut lanes[w];
            let mut v = unsafe { _mm512_load_si512(lane.0.as_ptr().cast()) };
            if step.up != 0 {
                v = _mm512_mask_adds_epu8(v, step.up, v, one);
                // Saturate at the top state (a no-op for 8-bit states).
                v = _mm512_min_epu8(v, top);
            }
            if step.down != 0 {
                v = _mm512_mask_subs_epu8(v, step.down, v, one);
            }
            unsafe { _mm512_store_si512(lane.0.as_mut_ptr().cast(), v) };
            let include = _mm512_cmpge_epu8_mask(v, half);
            action[w] = include;
            let bit = 1u64 << (w % 64);
            let word = &mut summary[w / 64];
            *word = if include != 0 {
                *word | bit
            } else {
                *word & !bit
            };
        }
    }
}

/// The kernels of `x86` on AVX2: each 64-byte lane as two 32-byte halves, masks expanded to
/// bytes (bit j -> byte j) and compared back with `movemask`.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Lane, Step};
    use std::arch::x86_64::*;

    /// A lane in registers: bytes 0..32 and 32..64.
    #[derive(Clone, Copy)]
    struct V(__m256i, __m256i);

    #[inline(always)]
    unsafe fn load(lane: &Lane) -> V {
        let p: *const __m256i = lane.0.as_ptr().cast();
        // SAFETY: `Lane` is 64 bytes, 64-byte aligned.
        unsafe { V(_mm256_load_si256(p), _mm256_load_si256(p.add(1))) }
    }

    #[inline(always)]
    unsafe fn store(lane: &mut Lane, v: V) {
        let p: *mut __m256i = lane.0.as_mut_ptr().cast();
        // SAFETY: as in `load`.
        unsafe {
            _mm256_store_si256(p, v.0);
            _mm256_store_si256(p.add(1), v.1);
        }
    }

    /// 32 mask bits -> 32 bytes of 0xFF (bit set) or 0x00.
    #[inline(always)]
    unsafe fn expand32(bits: u32) -> __m256i {
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3,
                3, 3, 3, 3,
            ),
        );
        let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select)
    }

    #[inline(always)]
    unsafe fn expand(bits: u64) -> V {
        unsafe { V(expand32(bits as u32), expand32((bits >> 32) as u32)) }
    }

    /// Byte j's top bit -> bit j.
    #[inline(always)]
    unsafe fn mask(v: V) -> u64 {
        (_mm256_movemask_epi8(v.0) as u32 as u64)
            | ((_mm256_movemask_epi8(v.1) as u32 as u64) << 32)
    }

    #[inline(always)]
    unsafe fn splat(x: u8) -> V {
        let s = _mm256_set1_epi8(x as i8);
        V(s, s)
    }

    #[inline(always)]
    unsafe fn and(a: V, b: V) -> V {
        V(_mm256_and_si256(a.0, b.0), _mm256_and_si256(a.1, b.1))
    }

    #[inline(always)]
    unsafe fn eq(a: V, b: V) -> u64 {
        unsafe { mask(V(_mm256_cmpeq_epi8(a.0, b.0), _mm256_cmpeq_epi8(a.1, b.1))) }
    }

    /// Bytes `>= t` (unsigned).
    #[inline(always)]
    unsafe fn at_least(v: V, t: V) -> u64 {
        unsafe { eq(V(_mm256_max_epu8(v.0, t.0), _mm256_max_epu8(v.1, t.1)), v) }
    }

    /// Add 1 (saturating) to the bytes `bits` selects.
    #[inline(always)]
    unsafe fn step_up(v: V, bits: u64) -> V {
        unsafe {
            let d = and(expand(bits), splat(1));
            V(_mm256_adds_epu8(v.0, d.0), _mm256_adds_epu8(v.1, d.1))
        }
    }

    /// Subtract 1 (saturating at 0) from the bytes `bits` selects.
    #[inline(always)]
    unsafe fn step_down(v: V, bits: u64) -> V {
        unsafe {
            let d = and(expand(bits), splat(1));
            V(_mm256_subs_epu8(v.0, d.0), _mm256_subs_epu8(v.1, d.1))
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn from_planes(action: &[u64], lower: &[u64], planes: usize, lanes: &mut [Lane]) {
        for (w, lane) in lanes.iter_mut().enumerate() {
            unsafe {
                let mut v = and(expand(action[w]), splat(1 << planes));
                for (p, &bits) in lower[w * planes..(w + 1) * planes].iter().enumerate() {
                    let b = and(expand(bits), splat(1 << p));
                    v = V(_mm256_or_si256(v.0, b.0), _mm256_or_si256(v.1, b.1));
                }
                store(lane, v);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn to_planes(lanes: &[Lane], planes: usize, action: &mut [u64], lower: &mut [u64]) {
        for (w, lane) in lanes.iter().enumerate() {
            unsafe {
                let v = load(lane);
                let top = splat(1 << planes);
                action[w] = eq(and(v, top), top);
                for (p, bits) in lower[w * planes..(w + 1) * planes].iter_mut().enumerate() {
                    let b = splat(1 << p);
                    *bits = eq(and(v, b), b);
                }
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn at_most_mask(lane: &Lane, value: u8) -> u64 {
        unsafe {
            let v = load(lane);
            let a = splat(value);
            eq(V(_mm256_min_epu8(v.0, a.0), _mm256_min_epu8(v.1, a.1)), v)
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn equal_mask(lane: &Lane, value: u8) -> u64 {
        unsafe { eq(load(lane), splat(value)) }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn forget_included<M, V2>(
        action: &mut [u64],
        lanes: &mut [Lane],
        summary: &mut [u64],
        half: u8,
        mut mask_of: M,
        mut excluded: V2,
    ) where
        M: FnMut(usize) -> u64,
        V2: FnMut(usize),
    {
        let half = unsafe { splat(half) };
        for (i, word) in summary.iter_mut().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let w = i * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let down = mask_of(w);
                if down != 0 {
                    let lane = &mut lanes[w];
                    unsafe {
                        let v = step_down(load(lane), down);
                        store(lane, v);
                        let include = at_least(v, half);
                        action[w] = include;
                        if include == 0 {
                            *word &= !(1u64 << (w % 64));
                            excluded(w);
                        }
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn catch_up<S, M>(
        action: &[u64],
        lanes: &mut [Lane],
        n: usize,
        mut first: S,
        mut mask_of: M,
    ) where
        S: FnMut(usize) -> usize,
        M: FnMut(usize, usize) -> u64,
    {
        let count = lanes.len().min(action.len());
        for w in 0..count {
            let start = first(w);
            if action[w] != 0 || start >= n {
                continue;
            }
            let lane = &mut lanes[w];
            unsafe {
                let mut v = load(lane);
                for j in start..n {
                    v = step_down(v, mask_of(j, w));
                }
                store(lane, v);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn update_clause<F>(
        action: &mut [u64],
        lanes: &mut [Lane],
        summary: &mut [u64],
        top: u8,
        half: u8,
        mut plan: F,
    ) where
        F: FnMut(usize, u64, &Lane) -> Step,
    {
        let (top, half) = unsafe { (splat(top), splat(half)) };
        let n = lanes.len().min(action.len());
        for w in 0..n {
            let step = plan(w, action[w], &lanes[w]);
            if step.up | step.down == 0 {
                continue;
            }
            let lane = &mut lanes[w];
            unsafe {
                let mut v = load(lane);
                if step.up != 0 {
                    v = step_up(v, step.up);
                    // Saturate at the top state (a no-op for 8-bit states).
                    v = V(_mm256_min_epu8(v.0, top.0), _mm256_min_epu8(v.1, top.1));
                }
                if step.down != 0 {
                    v = step_down(v, step.down);
                }
                store(lane, v);
                let include = at_least(v, half);
                action[w] = include;
                let bit = 1u64 << (w % 64);
                let word = &mut summary[w / 64];
                *word = if include != 0 {
                    *word | bit
                } else {
                    *word & !bit
                };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
use x86 as avx2;

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::{Lane, Step};
    pub unsafe fn from_planes(_: &[u64], _: &[u64], _: usize, _: &mut [Lane]) {
        unreachable!("byte kernels need x86-64")
    }
    pub unsafe fn to_planes(_: &[Lane], _: usize, _: &mut [u64], _: &mut [u64]) {
        unreachable!("byte kernels need x86-64")
    }
    pub unsafe fn equal_mask(_: &Lane, _: u8) -> u64 {
        unreachable!("byte kernels need x86-64")
    }
    pub unsafe fn at_most_mask(_: &Lane, _: u8) -> u64 {
        unreachable!("byte kernels need x86-64")
    }
    pub unsafe fn forget_included<M, V>(
        _: &mut [u64],
        _: &mut [Lane],
        _: &mut [u64],
        _: u8,
        _: M,
        _: V,
    ) where
        M: FnMut(usize) -> u64,
        V: FnMut(usize),
    {
        unreachable!("byte kernels need x86-64")
    }
    pub unsafe fn catch_up<S, M>(_: &[u64], _: &mut [Lane], _: usize, _: S, _: M)
    where
        S: FnMut(usize) -> usize,
        M: FnMut(usize, usize) -> u64,
    {
        unreachable!("byte kernels need x86-64")
    }
    pub unsafe fn update_clause<F>(_: &mut [u64], _: &mut [Lane], _: &mut [u64], _: u8, _: u8, _: F)
    where
        F: FnMut(usize, u64, &Lane) -> Step,
    {
        unreachable!("byte kernels need x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsetlin::mix64;

    /// Every instruction set this CPU has, each checked against plain byte arithmetic.
    fn variants(state_bits: usize) -> Vec<Kernels> {
        let base = Kernels {
            top: ((1u16 << state_bits) - 1) as u8,
            half: 1u8 << (state_bits - 1),
            avx512: false,
        };
        let mut out = Vec::new();
        if has_avx2() {
            out.push(base);
        }
        if has_avx512() {
            out.push(Kernels {
                avx512: true,
                ..base
            });
        }
        out
    }

    fn random_lanes(n: usize, top: u8, seed: u64) -> Vec<Lane> {
        (0..n)
            .map(|w| {
                let mut lane = Lane([0; 64]);
                for (j, b) in lane.0.iter_mut().enumerate() {
                    let h = mix64(seed ^ (w * 64 + j) as u64);
                    // Many automata at the edges (0, the last exclude state, the top).
                    *b = match h % 5 {
                        0 => 0,
                        1 => top / 2,
                        2 => top,
                        _ => ((h >> 8) % (top as u64 + 1)) as u8,
                    };
                }
                lane
            })
            .collect()
    }

    #[test]
    fn byte_kernels_equal_plain_byte_arithmetic() {
        for state_bits in [2usize, 3, 5, 8] {
            for k in variants(state_bits) {
                let (top, half, lw) = (k.top, k.half, 5usize);
                let lanes = random_lanes(lw, top, state_bits as u64);
                let include =
                    |l: &Lane| (0..64).fold(0u64, |m, j| m | ((l.0[j] >= half) as u64) << j);
                // Planes round trip.
                let planes = state_bits - 1;
                let mut action = vec![0u64; lw];
                let mut lower = vec![0u64; lw * planes];
                k.store_planes(&lanes, (planes, lw, lw), &mut action, &mut lower);
                for w in 0..lw {
                    assert_eq!(action[w], include(&lanes[w]));
                    for p in 0..planes {
                        let want =
                            (0..64).fold(0u64, |m, j| m | (((lanes[w].0[j] >> p) & 1) as u64) << j);
                        assert_eq!(lower[w * planes + p], want);
                    }
                }
                let mut back = vec![Lane([0; 64]); lw];
                k.load_planes(&action, &lower, (planes, lw, lw), &mut back);
                assert!(back.iter().zip(&lanes).all(|(a, b)| a.0 == b.0));
                // Comparisons.
                for (w, lane) in lanes.iter().enumerate() {
                    let a = (mix64(w as u64) % half as u64) as u8;
                    let at_most = (0..64).fold(0u64, |m, j| m | ((lane.0[j] <= a) as u64) << j);
                    let edge = (0..64).fold(0u64, |m, j| m | ((lane.0[j] == half - 1) as u64) << j);
                    assert_eq!(k.at_most(lane, a), at_most);
                    assert_eq!(k.at_edge(lane), edge);
                }
                // One clause update: up then down, include words and summary bits follow.
                let mut got = lanes.clone();
                let mut act = action.clone();
                let mut summary = vec![0u64; 1];
                let steps: Vec<Step> = (0..lw)
                    .map(|w| Step {
                        up: mix64(w as u64 + 77),
                        down: mix64(w as u64 + 99) & mix64(w as u64),
                    })
                    .collect();
                k.update_clause(&mut act, &mut got, &mut summary, |w, _, _| steps[w]);
                let mut want = lanes.clone();
                for (w, lane) in want.iter_mut().enumerate() {
                    for j in 0..64 {
                        let s = &mut lane.0[j];
                        if (steps[w].up >> j) & 1 == 1 {
                            *s = (*s).saturating_add(1).min(top);
                        }
                        if (steps[w].down >> j) & 1 == 1 {
                            *s = s.saturating_sub(1);
                        }
                    }
                    assert_eq!(got[w].0, lane.0, "state_bits {state_bits}, word {w}");
                    assert_eq!(act[w], include(lane));
                    assert_eq!((summary[0] >> w) & 1 == 1, act[w] != 0);
                }
                // Deferred decrements of excluded words, and forgetting on included ones.
                let mut deferred = lanes.clone();
                let masks = |j: usize, w: usize| mix64((j * 31 + w) as u64);
                k.catch_up(&action, &mut deferred, 4, |w| w % 3, masks);
                let mut forgot = lanes.clone();
                let mut act2 = action.clone();
                let mut summary2 = vec![(1u64 << lw) - 1];
                let mut seen = Vec::new();
                k.forget_included(
                    &mut act2,
                    &mut forgot,
                    &mut summary2,
                    |w| masks(9, w),
                    |w| seen.push(w),
                );
                // Every word was marked included; those left without include bits are told.
                let emptied: Vec<usize> = (0..lw).filter(|&w| act2[w] == 0).collect();
                assert_eq!(seen, emptied);
                for w in 0..lw {
                    let mut caught = lanes[w];
                    let mut forgotten = lanes[w];
                    for j in 0..64 {
                        if action[w] == 0 {
                            for step in w % 3..4 {
                                if (masks(step, w) >> j) & 1 == 1 {
                                    caught.0[j] = caught.0[j].saturating_sub(1);
                                }
                            }
                        }
                        if (masks(9, w) >> j) & 1 == 1 {
                            forgotten.0[j] = forgotten.0[j].saturating_sub(1);
                        }
                    }
                    assert_eq!(deferred[w].0, caught.0);
                    assert_eq!(forgot[w].0, forgotten.0);
                    assert_eq!(act2[w], include(&forgotten));
                    assert_eq!((summary2[0] >> w) & 1 == 1, act2[w] != 0);
                }
            }
        }
    }
}
