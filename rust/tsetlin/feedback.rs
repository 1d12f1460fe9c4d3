//! Type I and Type II feedback on one clause's automata.

use super::automata::{decrement, increment};
use super::bytes::{Kernels, Lane, Step};
use super::config::Config;
use super::random::MaskCursor;

/// Per-call constants of the feedback.
pub(super) struct Feedback<'a> {
    pub(super) cfg: &'a Config,
    pub(super) lw: usize,
    pub(super) forget_pool: Vec<u64>,
    pub(super) reward_pool: Vec<u64>,
    pub(super) valid_literals: Vec<u64>,
}

pub(super) enum Kind {
    TypeI,
    TypeII,
}

impl Feedback<'_> {
    /// Literals a clause may still include under `max_included_literals` (None: no budget).
    fn budget(&self, action: &[u64]) -> Option<usize> {
        (self.cfg.max_included_literals > 0).then(|| {
            let included: usize = action.iter().map(|a| a.count_ones() as usize).sum();
            self.cfg.max_included_literals.saturating_sub(included)
        })
    }

    /// Negated literals a clause may still include under `max_negated_literals` (None: no cap).
    fn negated_budget(&self, action: &[u64]) -> Option<usize> {
        (self.cfg.max_negated_literals > 0).then(|| {
            let fw = self.lw / 2;
            let included: usize = action[fw..].iter().map(|a| a.count_ones() as usize).sum();
            self.cfg.max_negated_literals.saturating_sub(included)
        })
    }

    /// `apply` for byte-stored automata of a clause that fired (the feedback of clauses that
    /// did not fire is handled by `ByteStore`): the same steps, one vector operation per word.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_bytes_fired(
        &self,
        kernels: &Kernels,
        kind: Kind,
        action: &mut [u64],
        lanes: &mut [Lane],
        summary: &mut [u64],
        literals: &[u64],
        cursor: MaskCursor,
    ) {
        let mut budget = self.budget(action);
        let mut negated = self.negated_budget(action);
        let fw = self.lw / 2;
        let boost = self.cfg.boost_true_positive;
        kernels.update_clause(action, lanes, summary, |w, act, lane| {
            let valid = self.valid_literals[w];
            // The negation cap first, then the clause's literal budget, on what is left.
            let mut limit = |up: u64| {
                let capped = if w >= fw { negated.as_mut() } else { None };
                limit_includes(up, || kernels.at_edge(lane), capped, budget.as_mut())
            };
            match kind {
                Kind::TypeI => {
                    let lit = literals[w];
                    let mut up = lit & valid;
                    if !boost {
                        up &= cursor.mask(&self.reward_pool, w);
                    }
                    if let Some(a) = self.cfg.absorbing {
                        up &= !kernels.at_most(lane, a as u8);
                    }
                    up = limit(up);
                    Step {
                        up,
                        down: !lit & valid & cursor.mask(&self.forget_pool, w),
                    }
                }
                Kind::TypeII => {
                    let mut up = !literals[w] & !act & valid;
                    if up != 0 {
                        if let Some(a) = self.cfg.absorbing {
                            up &= !kernels.at_most(lane, a as u8);
                        }
                        up = limit(up);
                    }
                    Step { up, down: 0 }
                }
            }
        });
    }

    /// Update one clause's automata given its (training-time) output on `literals`.
    pub(super) fn apply<const P: usize>(
        &self,
        kind: Kind,
        fired: bool,
        action: &mut [u64],
        lower: &mut [u64],
        literals: &[u64],
        cursor: MaskCursor,
    ) {
        // Fixed-size plane groups let the compiler unroll the carry chains.
        let (lower, _) = lower.as_chunks_mut::<P>();
        let mut budget = self.budget(action);
        let mut negated = self.negated_budget(action);
        let fw = self.lw / 2;
        // The negation cap first, then the clause's literal budget, on what is left.
        let mut limit = |w: usize, up: u64, act: u64, low: &[u64]| {
            let capped = if w >= fw { negated.as_mut() } else { None };
            limit_includes(up, || plane_edge(act, low), capped, budget.as_mut())
        };
        match kind {
            Kind::TypeI => {
                for w in 0..self.lw {
                    let valid = self.valid_literals[w];
                    let low = &mut lower[w];
                    let act = &mut action[w];
                    if fired {
                        let lit = literals[w];
                        let mut up = lit & valid;
                        if !self.cfg.boost_true_positive {
                            up &= cursor.mask(&self.reward_pool, w);
                        }
                        if let Some(a) = self.cfg.absorbing {
                            up &= !plane_at_most(*act, &low[..], a);
                        }
                        up = limit(w, up, *act, &low[..]);
                        if up != 0 {
                            increment(low, act, up);
                        }
                        let candidates = !lit & valid;
                        if candidates != 0 {
                            let down = candidates & cursor.mask(&self.forget_pool, w);
                            if down != 0 {
                                decrement(low, act, down);
                            }
                        }
                    } else {
                        let down = valid & cursor.mask(&self.forget_pool, w);
                        if down != 0 {
                            decrement(low, act, down);
                        }
                    }
                }
            }
            Kind::TypeII => {
                if !fired {
                    return;
                }
                for w in 0..self.lw {
                    let mut up = !literals[w] & !action[w] & self.valid_literals[w];
                    if up == 0 {
                        continue;
                    }
                    let low = &mut lower[w];
                    if let Some(a) = self.cfg.absorbing {
                        up &= !plane_at_most(action[w], &low[..], a);
                    }
                    up = limit(w, up, action[w], &low[..]);
                    if up != 0 {
                        increment(low, &mut action[w], up);
                    }
                }
            }
        }
    }
}

/// The literal limits on automata about to step up: the negation cap (`capped`, on words of
/// negations) first, then the clause's literal budget, on what is left; `at_edge` is measured
/// once, and only when a limit applies.
#[inline(always)]
fn limit_includes(
    up: u64,
    at_edge: impl FnOnce() -> u64,
    capped: Option<&mut usize>,
    budget: Option<&mut usize>,
) -> u64 {
    if capped.is_none() && budget.is_none() {
        return up;
    }
    let edge = at_edge();
    let up = capped.map_or(up, |left| limit_new_includes(up, edge, left));
    budget.map_or(up, |left| limit_new_includes(up, edge, left))
}

/// Keep the literal budget: of the automata in `up` that would cross into "include" (`at_edge`:
/// excluded and at the last exclude state), keep only the first `left`; the others are not
/// rewarded.
#[inline(always)]
fn limit_new_includes(up: u64, at_edge: u64, left: &mut usize) -> u64 {
    let mut crossing = up & at_edge;
    let n = crossing.count_ones() as usize;
    if n <= *left {
        *left -= n;
        return up;
    }
    // Keep the lowest `left` crossing bits, drop the rest from the mask.
    let mut kept = 0u64;
    for _ in 0..*left {
        let low = crossing & crossing.wrapping_neg();
        kept |= low;
        crossing ^= low;
    }
    *left = 0;
    up & !(up & at_edge & !kept)
}

/// Automata of one plane-stored word whose state is at most `a` (an exclude state, so the
/// include bit must be 0): a bit-sliced comparison, most significant plane first.
#[inline(always)]
fn plane_at_most(action: u64, lower: &[u64], a: u32) -> u64 {
    let (mut less, mut equal) = (0u64, !action);
    for (k, &x) in lower.iter().enumerate().rev() {
        if (a >> k) & 1 == 1 {
            less |= equal & !x;
            equal &= x;
        } else {
            equal &= !x;
        }
    }
    less | equal
}

/// Automata of one plane-stored word at the last exclude state.
#[inline(always)]
fn plane_edge(action: u64, lower: &[u64]) -> u64 {
    lower.iter().fold(!action, |acc, &p| acc & p)
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::tsetlin::automata::initial_state;
    use crate::tsetlin::config::{feature_masks, test_config};
    use crate::tsetlin::random::{mask_pool, threshold32};

    /// Cost of Type I feedback on a non-firing clause (`cargo test --release -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn type_one_feedback_cost() {
        let cfg = Config {
            n_clauses: 200,
            threshold: 80,
            specificity: 10.0,
            seed: 1,
            ..test_config(5000, false)
        };
        let (mut action, mut lower, _) = initial_state(&cfg).unwrap_or_default();
        let lw = cfg.literal_words();
        let mut valid_literals = feature_masks(cfg.n_features);
        valid_literals.extend(feature_masks(cfg.n_features));
        let fb = Feedback {
            cfg: &cfg,
            lw,
            forget_pool: mask_pool(1, 0, 0, threshold32(0.1)),
            reward_pool: Vec::new(),
            valid_literals,
        };
        let literals = vec![0u64; lw];
        let cpu = || -> f64 {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            fields
                .get(11)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 100.0
        };
        let cpu0 = cpu();
        let start = std::time::Instant::now();
        let reps = 100_000;
        for r in 0..reps {
            let c = (r * 7919) % 400;
            let act = &mut action[c * lw..(c + 1) * lw];
            let low = &mut lower[c * lw * 7..(c + 1) * lw * 7];
            fb.apply::<7>(
                Kind::TypeI,
                false,
                act,
                low,
                &literals,
                MaskCursor::new(r as u64),
            );
        }
        let ns = start.elapsed().as_nanos() as f64 / (reps * lw) as f64;
        let cpu_ns = (cpu() - cpu0) * 1e9 / (reps * lw) as f64;
        println!("type I, output 0: {ns:.2} ns per literal word (wall), {cpu_ns:.2} (cpu)");
    }
}
