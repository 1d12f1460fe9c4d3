//! Training with one byte per automaton (AVX-512BW, `state_bits <= 8`).
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

/// Whether this CPU runs the byte kernels.
pub fn available() -> bool {
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
}

impl Kernels {
    pub fn new(state_bits: usize) -> Option<Self> {
        if !(2..=8).contains(&state_bits) || !available() {
            return None;
        }
        Some(Kernels {
            top: ((1u16 << state_bits) - 1) as u8,
            half: 1u8 << (state_bits - 1),
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
                // SAFETY: `Kernels` exists only where AVX-512F/BW were detected.
                unsafe { x86::from_planes(action, lower, planes, &mut lanes[..lw]) }
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
                // SAFETY: as in `load_planes`.
                unsafe { x86::to_planes(&lanes[..lw], planes, action, lower) }
            });
    }

    /// Decrement, on the words whose summary bit is set, the automata `mask(w)` selects; the
    /// include words and summary bits follow, and `visited(w)` is told of every such word.
    #[inline(always)]
    pub fn forget_included<M, V>(
        &self,
        action: &mut [u64],
        lanes: &mut [Lane],
        summary: &mut [u64],
        mask: M,
        visited: V,
    ) where
        M: FnMut(usize) -> u64,
        V: FnMut(usize),
    {
        // SAFETY: as in `load_planes`.
        unsafe { x86::forget_included(action, lanes, summary, self.half, mask, visited) }
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
        // SAFETY: as in `load_planes`.
        unsafe { x86::catch_up(action, lanes, n, first, mask) }
    }

    /// Automata whose state is at most `a`.
    #[inline(always)]
    pub fn at_most(&self, lane: &Lane, a: u8) -> u64 {
        // SAFETY: as in `load_planes`.
        unsafe { x86::at_most_mask(lane, a) }
    }

    /// Automata at the last exclude state (the ones an increment would include).
    #[inline(always)]
    pub fn at_edge(&self, lane: &Lane) -> u64 {
        // SAFETY: as in `load_planes`.
        unsafe { x86::equal_mask(lane, self.half - 1) }
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
        // SAFETY: as in `load_planes`.
        unsafe { x86::update_clause(action, lanes, summary, self.top, self.half, plan) }
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
        mut visited: V,
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
                    }
                }
                visited(w);
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
