//! Bit-sliced automata: saturating counters over bit planes, the initial state and its shapes.

use super::config::{feature_masks, Config};
use super::random::{stream_key, ROLE_INIT_WEIGHT};
use crate::error::{invalid, CoreResult};

/// Add 1 (saturating at the top state) to the automata selected by `mask` in one word.
///
/// The chain stops before it starts when no selected automaton can move (all saturated), the
/// common case for reinforced literals; once started it runs the fixed `P` planes without a
/// per-plane exit: the depth at which the carry of ~6 random lanes dies is unpredictable, and
/// the branch-free chain measured 2x faster than exiting at carry 0 plane by plane
/// (`type_one_feedback_cost`: 5.1 against 11.4 ns per literal word).
#[inline(always)]
pub(super) fn increment<const P: usize>(lower: &mut [u64; P], action: &mut u64, mask: u64) {
    // Saturated automata stay put: filter them out first so their cache line is only read.
    let saturated = lower.iter().fold(*action, |acc, &p| acc & p);
    let mut carry = mask & !saturated;
    if carry == 0 {
        return;
    }
    for plane in lower.iter_mut() {
        let old = *plane;
        *plane = old ^ carry;
        carry &= old;
    }
    let old = *action;
    *action = old ^ carry;
    carry &= old;
    if carry != 0 {
        // Wrapped past the top: those automata were saturated, restore all ones.
        *action |= carry;
        for plane in lower.iter_mut() {
            *plane |= carry;
        }
    }
}

/// Subtract 1 (saturating at state 0) from the automata selected by `mask` in one word
/// (skipped entirely when every selected automaton is already at 0; see `increment`).
#[inline(always)]
pub(super) fn decrement<const P: usize>(lower: &mut [u64; P], action: &mut u64, mask: u64) {
    let nonzero = lower.iter().fold(*action, |acc, &p| acc | p);
    let mut borrow = mask & nonzero;
    if borrow == 0 {
        return;
    }
    for plane in lower.iter_mut() {
        let old = *plane;
        *plane = old ^ borrow;
        borrow &= !old;
    }
    let old = *action;
    *action = old ^ borrow;
    borrow &= !old;
    if borrow != 0 {
        *action &= !borrow;
        for plane in lower.iter_mut() {
            *plane &= !borrow;
        }
    }
}

/// Initial state: every automaton at `2^(b-1) - 1`, the last "exclude" state, and weights of
/// magnitude 1 (per-class: sign = polarity; coalesced: random sign per class and clause).
pub fn initial_state(cfg: &Config) -> CoreResult<(Vec<u64>, Vec<u64>, Vec<i32>)> {
    cfg.validate()?;
    let lw = cfg.literal_words();
    let fw = cfg.feature_words();
    let planes = cfg.lower_planes();
    let masks = feature_masks(cfg.n_features);
    let action = vec![0u64; cfg.action_len()];
    let mut lower = vec![0u64; cfg.lower_len()];
    for (slot, chunk) in lower.chunks_exact_mut(planes).enumerate() {
        let w = slot % lw;
        chunk.fill(masks[w % fw]);
    }
    let mut weights = vec![0i32; cfg.weights_len()];
    if cfg.coalesced {
        let k = cfg.n_classes;
        for (c, row) in weights.chunks_exact_mut(k).enumerate() {
            for (class, w) in row.iter_mut().enumerate() {
                let h = stream_key(cfg.seed, &[ROLE_INIT_WEIGHT, class as u64, c as u64]);
                *w = if h >> 63 == 0 { 1 } else { -1 };
            }
        }
    } else {
        for (i, w) in weights.iter_mut().enumerate() {
            *w = if (i % cfg.n_clauses).is_multiple_of(2) {
                1
            } else {
                -1
            };
        }
    }
    Ok((action, lower, weights))
}

/// Check that the state arrays have the shapes `cfg` implies.
pub fn validate_state(cfg: &Config, action: usize, lower: usize, weights: usize) -> CoreResult<()> {
    cfg.validate()?;
    if action != cfg.action_len() || lower != cfg.lower_len() || weights != cfg.weights_len() {
        return invalid(format!(
            "model state has sizes (action {action}, lower {lower}, weights {weights}), expected ({}, {}, {})",
            cfg.action_len(),
            cfg.lower_len(),
            cfg.weights_len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_of(lower: &[u64], action: u64, bit: usize) -> u32 {
        let mut s = (action >> bit & 1) as u32;
        for p in lower.iter().rev() {
            s = (s << 1) | (p >> bit & 1) as u32;
        }
        s
    }

    #[test]
    fn counters_saturate_both_ways() {
        let mut lower = [0u64; 3];
        let mut action = 0u64;
        for expected in 1..=15u32 {
            increment(&mut lower, &mut action, 1);
            assert_eq!(state_of(&lower, action, 0), expected);
        }
        increment(&mut lower, &mut action, 1);
        assert_eq!(state_of(&lower, action, 0), 15);
        assert_eq!(state_of(&lower, action, 1), 0, "other lanes untouched");
        for expected in (0..15u32).rev() {
            decrement(&mut lower, &mut action, 1);
            assert_eq!(state_of(&lower, action, 0), expected);
        }
        decrement(&mut lower, &mut action, 1);
        assert_eq!(state_of(&lower, action, 0), 0);
    }
}
