//! Least-significant-digit radix sort on `u64` keys (11-bit digits), stable, ascending.
//!
//! Scores arrive as order-preserving integer keys, so an integer radix sort replaces the
//! comparison sort: a handful of linear passes. Digits on which every key agrees are skipped,
//! which for float32 scores (widened to float64 bits) removes the low all-zero mantissa bytes.

pub trait Keyed: Copy + Default + Send + Sync {
    fn key(&self) -> u64;
}

impl Keyed for u64 {
    #[inline(always)]
    fn key(&self) -> u64 {
        *self
    }
}

impl Keyed for u32 {
    #[inline(always)]
    fn key(&self) -> u64 {
        *self as u64
    }
}

impl Keyed for (u64, u32) {
    #[inline(always)]
    fn key(&self) -> u64 {
        self.0
    }
}

const DIGIT_BITS: usize = 11;
const BUCKETS: usize = 1 << DIGIT_BITS;
const DIGIT_MASK: u64 = (BUCKETS as u64) - 1;

/// Below this length a comparison sort is faster than the histogram passes.
const SMALL: usize = 1 << 12;

pub fn radix_sort<T: Keyed>(items: &mut Vec<T>) {
    let n = items.len();
    if n < SMALL {
        items.sort_unstable_by_key(|x| x.key());
        return;
    }
    // All histograms in one read of the data (only the digits the key type has). 11-bit
    // digits: three passes for a 32-bit key, and the 2^11 counters still fit in L1.
    let digits = (8 * std::mem::size_of::<T>().min(8)).div_ceil(DIGIT_BITS);
    let mut counts = vec![[0usize; BUCKETS]; digits];
    for item in items.iter() {
        let k = item.key();
        for (digit, hist) in counts.iter_mut().enumerate() {
            hist[((k >> (DIGIT_BITS * digit)) & DIGIT_MASK) as usize] += 1;
        }
    }
    let mut scratch: Vec<T> = vec![T::default(); n];
    let mut in_items = true; // where the current order lives
    for (digit, hist) in counts.iter().enumerate() {
        if hist.contains(&n) {
            continue; // every key has the same byte here
        }
        let mut offsets = [0usize; BUCKETS];
        let mut running = 0;
        for (o, &c) in offsets.iter_mut().zip(hist.iter()) {
            *o = running;
            running += c;
        }
        let shift = DIGIT_BITS * digit;
        let (src, dst) = if in_items {
            (&items[..], &mut scratch[..])
        } else {
            (&scratch[..], &mut items[..])
        };
        for item in src {
            let b = ((item.key() >> shift) & DIGIT_MASK) as usize;
            dst[offsets[b]] = *item;
            offsets[b] += 1;
        }
        in_items = !in_items;
    }
    if !in_items {
        std::mem::swap(items, &mut scratch);
    }
}

/// Radix sort on two threads: each half sorted apart, then one merging pass. Sorting is most
/// of a metric's time on millions of scores, and one class usually holds nearly all of them.
pub fn radix_sort_parallel<T: Keyed + Ord>(items: &mut Vec<T>) {
    if rayon::current_num_threads() < 2 || items.len() < (1 << 20) {
        radix_sort(items);
        return;
    }
    let mut right = items.split_off(items.len() / 2);
    rayon::join(|| radix_sort(items), || radix_sort(&mut right));
    let mut merged = Vec::with_capacity(items.len() + right.len());
    let (mut i, mut j) = (0, 0);
    while i < items.len() && j < right.len() {
        if right[j] < items[i] {
            merged.push(right[j]);
            j += 1;
        } else {
            merged.push(items[i]);
            i += 1;
        }
    }
    merged.extend_from_slice(&items[i..]);
    merged.extend_from_slice(&right[j..]);
    *items = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_the_standard_library() {
        let mut state = 12345u64;
        for n in [0usize, 1, 5, 5000, 70_000] {
            let mut v: Vec<(u64, u32)> = (0..n)
                .map(|i| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    // few distinct high bytes and constant low bytes, like widened float32 keys
                    ((state >> 40) << 29 | 1u64 << 63, i as u32)
                })
                .collect();
            let mut expect = v.clone();
            expect.sort_by_key(|x| x.0); // stable
            radix_sort(&mut v);
            assert_eq!(v, expect);
        }
    }

    #[test]
    fn parallel_sort_equals_sequential() {
        let mut state = 7u64;
        let mut v: Vec<u32> = (0..(3 << 19))
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 45) as u32
            })
            .collect();
        let mut expect = v.clone();
        expect.sort_unstable();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| radix_sort_parallel(&mut v));
        assert_eq!(v, expect);
    }
}
