//! Least-significant-digit radix sort on `u64` keys (8-bit digits), stable, ascending.
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

/// Below this length a comparison sort is faster than eight histogram passes.
const SMALL: usize = 1 << 12;

pub fn radix_sort<T: Keyed>(items: &mut Vec<T>) {
    let n = items.len();
    if n < SMALL {
        items.sort_unstable_by_key(|x| x.key());
        return;
    }
    // All histograms in one read of the data (only the bytes the key type has).
    let digits = std::mem::size_of::<T>().min(8);
    let mut counts = vec![[0usize; 256]; digits];
    for item in items.iter() {
        let k = item.key();
        for (digit, hist) in counts.iter_mut().enumerate() {
            hist[((k >> (8 * digit)) & 0xff) as usize] += 1;
        }
    }
    let mut scratch: Vec<T> = vec![T::default(); n];
    let mut in_items = true; // where the current order lives
    for (digit, hist) in counts.iter().enumerate() {
        if hist.contains(&n) {
            continue; // every key has the same byte here
        }
        let mut offsets = [0usize; 256];
        let mut running = 0;
        for (o, &c) in offsets.iter_mut().zip(hist.iter()) {
            *o = running;
            running += c;
        }
        let shift = 8 * digit;
        let (src, dst) = if in_items {
            (&items[..], &mut scratch[..])
        } else {
            (&scratch[..], &mut items[..])
        };
        for item in src {
            let b = ((item.key() >> shift) & 0xff) as usize;
            dst[offsets[b]] = *item;
            offsets[b] += 1;
        }
        in_items = !in_items;
    }
    if !in_items {
        std::mem::swap(items, &mut scratch);
    }
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
}
