//! The training loop: one pass of online training over the examples of a call, each example
//! in named steps (drop, evaluate, pick the negative class, feedback).

use rayon::prelude::*;

use super::automata::validate_state;
use super::bytes::{Kernels, Lane};
use super::config::{feature_masks, Config, Docs};
use super::evaluate::{
    accumulate_sums, fires_training_witnessed, summarize, DocScratch, WITNESS_WORDS,
};
use super::feedback::{Feedback, Kind};
use super::random::{
    below, mask_pool, mix64, stream_key, stream_step, threshold32, MaskCursor, ROLE_DROP,
    ROLE_NEGATIVE, ROLE_PICK_NEGATIVE, ROLE_TARGET,
};
use super::store::{ByteStore, Deferred, Planes, Store};
use crate::error::{invalid, CoreResult};

/// Training calls with at least this many examples convert the model to bytes (where the CPU
/// has the byte kernels); shorter ones update the planes in place.
const BYTE_KERNEL_MIN_EXAMPLES: usize = 16;

/// One pass of online training over `order` (indices into `docs`, labels `y` in [0, n_classes)).
/// `epoch` keys the random stream, so successive calls must pass successive epochs.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    cfg: &Config,
    action: &mut [u64],
    lower: &mut [u64],
    weights: &mut [i32],
    docs: &Docs,
    y: &[i64],
    order: &[i64],
    epoch: u64,
) -> CoreResult<()> {
    train_epoch_using(cfg, action, lower, weights, docs, y, order, epoch, true)
}

/// `train_epoch` with the byte kernels allowed or not (the result is the same either way).
#[allow(clippy::too_many_arguments)]
fn train_epoch_using(
    cfg: &Config,
    action: &mut [u64],
    lower: &mut [u64],
    weights: &mut [i32],
    docs: &Docs,
    y: &[i64],
    order: &[i64],
    epoch: u64,
    allow_bytes: bool,
) -> CoreResult<()> {
    validate_state(cfg, action.len(), lower.len(), weights.len())?;
    docs.validate(cfg.n_features)?;
    let n = docs.n_docs();
    if y.len() != n {
        return invalid(format!("y: {} labels for {} documents", y.len(), n));
    }
    if let Some(&bad) = y.iter().find(|&&c| c < 0 || c as usize >= cfg.n_classes) {
        return invalid(format!(
            "y: class index {bad} outside [0, {})",
            cfg.n_classes
        ));
    }
    if let Some(&bad) = order.iter().find(|&&i| i < 0 || i as usize >= n) {
        return invalid(format!("order: index {bad} outside [0, {n})"));
    }
    let lw = cfg.literal_words();
    let feature_valid = feature_masks(cfg.n_features);
    // Automata that never move (negations when clauses take present features only) are
    // masked out of every update, so they stay at their initial exclude state.
    let mut valid_literals = feature_valid.clone();
    if cfg.negated_literals {
        valid_literals.extend_from_slice(&feature_valid);
    } else {
        valid_literals.resize(lw, 0);
    }
    let forget_p = 1.0 / cfg.specificity;
    let forget_pool = mask_pool(cfg.seed, epoch, 0, threshold32(forget_p));
    let reward_pool = if cfg.boost_true_positive {
        Vec::new()
    } else {
        mask_pool(cfg.seed, epoch, 1, threshold32(1.0 - forget_p))
    };
    let fb = Feedback {
        cfg,
        lw,
        forget_pool,
        reward_pool,
        valid_literals,
    };
    let planes = cfg.lower_planes();
    let kernels = if allow_bytes && order.len() >= BYTE_KERNEL_MIN_EXAMPLES {
        Kernels::new(cfg.state_bits)
    } else {
        None
    };
    if let Some(kernels) = kernels {
        let store = ByteStore {
            kernels,
            lw,
            header: Deferred::lanes_for(lw),
        };
        let stride = store.cells_per_clause(lw);
        let layout = (planes, lw, stride);
        let mut lanes = vec![Lane([0; 64]); cfg.n_banks() * cfg.n_clauses * stride];
        kernels.load_planes(action, lower, layout, &mut lanes);
        train_loop(
            cfg, &fb, &store, action, &mut lanes, weights, docs, y, order, epoch,
        );
        lanes
            .par_chunks_mut(stride)
            .zip(action.par_chunks(lw))
            .for_each(|(cells, action)| store.catch_up(&fb, action, cells));
        kernels.store_planes(&lanes, layout, action, lower);
        return Ok(());
    }
    macro_rules! by_planes {
        ($($p:literal)*) => {
            match planes {
                $($p => train_loop(cfg, &fb, &Planes::<$p>, action, lower, weights, docs, y, order, epoch),)*
                other => return invalid(format!("state_bits {} is not supported", other + 1)),
            }
        };
    }
    by_planes!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    Ok(())
}

/// The examples of `order` one after the other, on the automata as `store` holds them (`cells`):
/// evaluate the clauses that matter, pick the negative class, then give feedback.
#[allow(clippy::too_many_arguments)]
fn train_loop<S: Store>(
    cfg: &Config,
    fb: &Feedback,
    store: &S,
    action: &mut [u64],
    cells: &mut [S::Cell],
    weights: &mut [i32],
    docs: &Docs,
    y: &[i64],
    order: &[i64],
    epoch: u64,
) {
    let lw = cfg.literal_words();
    let total = cfg.n_banks() * cfg.n_clauses;
    let t = cfg.threshold;
    let drop_num = (cfg.clause_drop_p * (1u64 << 32) as f64).round() as u64;

    let mut scratch = DocScratch::new(cfg);
    let mut outputs = vec![0u8; total];
    let mut dropped = vec![false; total];
    let mut sums = vec![0i64; cfg.n_classes];
    let mut evaluated = vec![false; cfg.n_banks()];
    let sw = lw.div_ceil(64);
    // Per clause: the summary bits, then the witness (no word yet: index 0, bits 0).
    let stride = sw + WITNESS_WORDS;
    let mut summary = vec![0u64; total * stride];
    summary
        .par_chunks_mut(stride)
        .zip(action.par_chunks(lw))
        .for_each(|(s, a)| summarize(a, &mut s[..sw]));
    let mut model = StateMut {
        action,
        cells,
        summary: &mut summary,
        weights,
    };
    let trainer = Trainer { cfg, fb, store };

    for &example in order {
        let i = example as usize;
        let target = y[i] as usize;
        let ex = example as u64;
        scratch.load(docs, i);

        if drop_num > 0 {
            draw_dropped(cfg.seed, epoch, ex, drop_num, &mut dropped);
        }
        let pick = stream_key(cfg.seed, &[epoch, ex, ROLE_PICK_NEGATIVE]);
        let uniform_negative = uniform_negative(pick, cfg.n_classes, target);
        banks_to_evaluate(cfg, target, uniform_negative, &mut evaluated);
        evaluate_banks(
            cfg,
            model.action,
            model.summary,
            &scratch.literals,
            &dropped,
            &evaluated,
            &mut outputs,
        );
        training_sums(cfg, model.weights, &outputs, &evaluated, &mut sums);

        let negative = if cfg.focused_negatives {
            focused_negative(t, &sums, target, pick, uniform_negative)
        } else {
            uniform_negative
        };
        let clamped = |class: usize| sums[class].clamp(-t, t);
        let updates = [
            Update {
                class: target,
                num: (t - clamped(target)) as u64,
                role: ROLE_TARGET,
            },
            Update {
                class: negative,
                num: (t + clamped(negative)) as u64,
                role: ROLE_NEGATIVE,
            },
        ];
        let step = ExampleFeedback {
            updates,
            prefixes: updates.map(|u| stream_key(cfg.seed, &[epoch, ex, u.role, u.class as u64])),
            den: 2 * t as u64,
            outputs: &outputs,
            dropped: &dropped,
            literals: &scratch.literals,
        };
        trainer.feedback(&step, &mut model);
    }
}

/// Which clauses sit this example out: each with probability `drop_num / 2^32`.
fn draw_dropped(seed: u64, epoch: u64, ex: u64, drop_num: u64, dropped: &mut [bool]) {
    let prefix = stream_key(seed, &[epoch, ex, ROLE_DROP]);
    dropped
        .par_iter_mut()
        .enumerate()
        .with_min_len(256)
        .for_each(|(c, d)| {
            *d = below(stream_step(prefix, c as u64), drop_num, 1 << 32);
        });
}

/// The negative class of uniform sampling: one of the `k - 1` classes other than `target`.
fn uniform_negative(pick: u64, k: usize, target: usize) -> usize {
    let r = ((pick as u128 * (k as u128 - 1)) >> 64) as usize;
    if r >= target {
        r + 1
    } else {
        r
    }
}

/// Which banks must be evaluated: the shared pool, every class bank (focused sampling needs
/// every class sum) or the target's and the uniform negative's.
fn banks_to_evaluate(cfg: &Config, target: usize, uniform_negative: usize, evaluated: &mut [bool]) {
    evaluated.fill(false);
    if cfg.coalesced {
        evaluated[0] = true;
    } else if cfg.focused_negatives {
        evaluated.fill(true);
    } else {
        evaluated[target] = true;
        evaluated[uniform_negative] = true;
    }
}

/// Training-time outputs of the clauses of the evaluated banks, every needed bank in one
/// parallel pass (a dropped clause outputs 0; other banks keep their old outputs, unread).
/// Clauses keep a witness: the include word that last made them output 0.
fn evaluate_banks(
    cfg: &Config,
    action: &[u64],
    summary: &mut [u64],
    literals: &[u64],
    dropped: &[bool],
    evaluated: &[bool],
    outputs: &mut [u8],
) {
    let lw = cfg.literal_words();
    let stride = lw.div_ceil(64) + WITNESS_WORDS;
    let c_per = cfg.n_clauses;
    outputs
        .par_iter_mut()
        .zip(dropped)
        .zip(summary.par_chunks_exact_mut(stride))
        .enumerate()
        .with_min_len(64)
        .for_each(|(g, ((o, &d), s))| {
            if evaluated[g / c_per] {
                *o = (!d && fires_training_witnessed(&action[g * lw..(g + 1) * lw], s, literals))
                    as u8;
            }
        });
}

/// Class sums (unclamped) of the classes whose banks were evaluated, 0 for the others.
fn training_sums(
    cfg: &Config,
    weights: &[i32],
    outputs: &[u8],
    evaluated: &[bool],
    sums: &mut [i64],
) {
    if cfg.coalesced {
        accumulate_sums(cfg, weights, outputs, sums);
        return;
    }
    let c_per = cfg.n_clauses;
    for (class, sum) in sums.iter_mut().enumerate() {
        *sum = if evaluated[class] {
            let outs = &outputs[class * c_per..(class + 1) * c_per];
            let ws = &weights[class * c_per..(class + 1) * c_per];
            outs.iter()
                .zip(ws)
                .map(|(&o, &w)| if o != 0 { w as i64 } else { 0 })
                .sum()
        } else {
            0
        };
    }
}

/// Focused negative sampling: a class other than `target` drawn in proportion to (T + v) / 2T,
/// `v` its class sum clamped to [-T, T] (the uniform negative when every chance is 0).
fn focused_negative(
    t: i64,
    sums: &[i64],
    target: usize,
    pick: u64,
    uniform_negative: usize,
) -> usize {
    let chance = |class: usize| (t + sums[class].clamp(-t, t)) as u64;
    let others = || (0..sums.len()).filter(|&c| c != target);
    let total_w: u64 = others().map(chance).sum();
    if total_w == 0 {
        return uniform_negative;
    }
    let mut r = ((mix64(pick) as u128 * total_w as u128) >> 64) as u64;
    for c in others() {
        let w = chance(c);
        if r < w {
            return c;
        }
        r -= w;
    }
    uniform_negative
}

/// What the feedback on one example shares: the two updates (target, negative), their stream
/// prefixes, the probabilities' denominator 2T and the example's clause outputs and literals.
struct ExampleFeedback<'a> {
    updates: [Update; 2],
    prefixes: [u64; 2],
    den: u64,
    outputs: &'a [u8],
    dropped: &'a [bool],
    literals: &'a [u64],
}

/// What the feedback steps of a call share: the configuration, the feedback constants and how
/// the automata are stored.
struct Trainer<'a, S> {
    cfg: &'a Config,
    fb: &'a Feedback<'a>,
    store: &'a S,
}

impl<S: Store> Trainer<'_, S> {
    /// How the state is cut per clause: include words, cells and summary words (with the
    /// witness).
    fn cuts(&self) -> (usize, usize, usize) {
        let lw = self.cfg.literal_words();
        (
            lw,
            self.store.cells_per_clause(lw),
            lw.div_ceil(64) + WITNESS_WORDS,
        )
    }

    /// One example's feedback on the clauses it updates.
    fn feedback(&self, step: &ExampleFeedback, model: &mut StateMut<'_, S::Cell>) {
        if self.cfg.coalesced {
            self.feedback_shared_pool(step, model);
        } else {
            self.feedback_two_banks(step, model);
        }
    }

    /// Coalesced machine: each clause of the shared pool takes both updates, each with its own
    /// probability; the sign of the updated class's weight decides the feedback type.
    fn feedback_shared_pool(&self, step: &ExampleFeedback, model: &mut StateMut<'_, S::Cell>) {
        let (cfg, fb, store) = (self.cfg, self.fb, self.store);
        let (lw, per_clause, stride) = self.cuts();
        model
            .action
            .par_chunks_exact_mut(lw)
            .zip(model.cells.par_chunks_exact_mut(per_clause))
            .zip(model.summary.par_chunks_exact_mut(stride))
            .zip(model.weights.par_chunks_exact_mut(cfg.n_classes))
            .enumerate()
            .with_min_len(16)
            .for_each(|(c, (((act, low), summ), ws))| {
                if step.dropped[c] {
                    return;
                }
                let fired = step.outputs[c] != 0;

                for (u, &prefix) in step.updates.iter().zip(&step.prefixes) {
                    let h = stream_step(prefix, c as u64);
                    if u.num == 0 || !below(h, u.num, step.den) {
                        continue;
                    }
                    let cursor = MaskCursor::new(h);
                    let w = &mut ws[u.class];
                    let positive = *w >= 0;
                    let kind = if positive == (u.role == ROLE_TARGET) {
                        Kind::TypeI
                    } else {
                        Kind::TypeII
                    };
                    let (bits, witness) = summ.split_at_mut(stride - WITNESS_WORDS);
                    store.feedback(fb, kind, fired, act, low, bits, step.literals, cursor);
                    refresh_witness(act, witness);
                    if fired && cfg.weighted {
                        *w = if u.role == ROLE_TARGET {
                            w.saturating_add(1)
                        } else {
                            w.saturating_sub(1)
                        };
                    }
                }
            });
    }

    /// Per-class machine: the target's bank and the negative's bank, both in one parallel pass (one
    /// fork-join per example, not two); a clause's polarity decides the feedback type.
    fn feedback_two_banks(&self, step: &ExampleFeedback, model: &mut StateMut<'_, S::Cell>) {
        let (cfg, fb, store) = (self.cfg, self.fb, self.store);
        let c_per = cfg.n_clauses;
        let cuts = self.cuts();
        let (t_bank, n_bank) = (step.updates[0].class, step.updates[1].class);
        let (bank_t, bank_n) = model.two_banks(t_bank, n_bank, c_per, cuts);
        bank_items(0, bank_t, cuts)
            .chain(bank_items(1, bank_n, cuts))
            .with_min_len(16)
            .for_each(|(which, c, clause, w)| {
                let u = &step.updates[which];
                let global = u.class * c_per + c;
                if u.num == 0 || step.dropped[global] {
                    return;
                }
                let h = stream_step(step.prefixes[which], c as u64);
                if !below(h, u.num, step.den) {
                    return;
                }
                let cursor = MaskCursor::new(h);
                let fired = step.outputs[global] != 0;
                let positive = *w > 0;
                let type_one = positive == (u.role == ROLE_TARGET);
                let kind = if type_one { Kind::TypeI } else { Kind::TypeII };
                let (bits, witness) = clause.summary.split_at_mut(cuts.2 - WITNESS_WORDS);
                store.feedback(
                    fb,
                    kind,
                    fired,
                    clause.action,
                    clause.cells,
                    bits,
                    step.literals,
                    cursor,
                );
                refresh_witness(clause.action, witness);
                if fired && cfg.weighted {
                    let magnitude = if type_one {
                        w.abs().saturating_add(1)
                    } else {
                        (w.abs() - 1).max(1)
                    };
                    *w = if positive { magnitude } else { -magnitude };
                }
            });
    }
}

/// The witness of a clause whose include words feedback may have changed: its word's bits as
/// they are now, so it never proves an output 0 that the clause no longer has.
#[inline(always)]
fn refresh_witness(action: &[u64], witness: &mut [u64]) {
    witness[1] = action[witness[0] as usize];
}

/// Feedback probabilities of one example as exact fractions `num / (2T)`.
#[derive(Clone, Copy)]
struct Update {
    class: usize,
    /// Numerator of the update probability; the denominator is 2T.
    num: u64,
    role: u64,
}

/// Disjoint mutable views of banks `a` and `b` (`a != b`) of `len` elements each, in that order.
fn two_banks_mut<T>(data: &mut [T], a: usize, b: usize, len: usize) -> (&mut [T], &mut [T]) {
    let (lo, hi, swapped) = if a < b { (a, b, false) } else { (b, a, true) };
    let (head, tail) = data.split_at_mut(hi * len);
    let first = &mut head[lo * len..(lo + 1) * len];
    let second = &mut tail[..len];
    if swapped {
        (second, first)
    } else {
        (first, second)
    }
}

/// The mutable state of one clause while training.
struct ClauseMut<'a, C> {
    action: &'a mut [u64],
    cells: &'a mut [C],
    summary: &'a mut [u64],
}

/// The clauses of one bank as (bank slot, clause, state, weight).
type ClauseItem<'a, C> = (usize, usize, ClauseMut<'a, C>, &'a mut i32);

/// The training state of the whole model or of one bank: slices cut per clause into `lw`
/// include words, `per_clause` cells (as the store holds the automata), `sw` summary words and
/// its weights (one per clause in a bank, `n_classes` per clause in the shared pool).
struct StateMut<'a, C> {
    action: &'a mut [u64],
    cells: &'a mut [C],
    summary: &'a mut [u64],
    weights: &'a mut [i32],
}

impl<C> StateMut<'_, C> {
    /// Disjoint views of banks `a` and `b` (`a != b`), in that order, each of `c_per` clauses
    /// cut as `bank_items` cuts them.
    fn two_banks(
        &mut self,
        a: usize,
        b: usize,
        c_per: usize,
        (lw, per_clause, sw): (usize, usize, usize),
    ) -> (StateMut<'_, C>, StateMut<'_, C>) {
        let action = two_banks_mut(self.action, a, b, c_per * lw);
        let cells = two_banks_mut(self.cells, a, b, c_per * per_clause);
        let summary = two_banks_mut(self.summary, a, b, c_per * sw);
        let weights = two_banks_mut(self.weights, a, b, c_per);
        let bank = |(action, cells, summary, weights)| StateMut {
            action,
            cells,
            summary,
            weights,
        };
        (
            bank((action.0, cells.0, summary.0, weights.0)),
            bank((action.1, cells.1, summary.1, weights.1)),
        )
    }
}

fn bank_items<'a, C: Send>(
    which: usize,
    bank: StateMut<'a, C>,
    (lw, per_clause, sw): (usize, usize, usize),
) -> impl IndexedParallelIterator<Item = ClauseItem<'a, C>> + 'a {
    bank.action
        .par_chunks_exact_mut(lw)
        .zip(bank.cells.par_chunks_exact_mut(per_clause))
        .zip(bank.summary.par_chunks_exact_mut(sw))
        .zip(bank.weights.par_iter_mut())
        .enumerate()
        .map(move |(c, (((action, cells), summary), w))| {
            (
                which,
                c,
                ClauseMut {
                    action,
                    cells,
                    summary,
                },
                w,
            )
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tsetlin::config::test_config as config;
    use crate::tsetlin::{bytes, class_sums, initial_state};

    #[test]
    fn learns_a_single_feature_rule() {
        let cfg = config(70, false);
        let (mut action, mut lower, mut weights) = initial_state(&cfg).unwrap();
        let n = 200;
        let mut words = vec![0u64; n * 2];
        let mut y = vec![0i64; n];
        for i in 0..n {
            let h = mix64(i as u64 + 11);
            words[i * 2] = h;
            words[i * 2 + 1] = (h >> 7) & 0x3f;
            y[i] = (h & 1) as i64;
        }
        let docs = Docs::Packed {
            words: &words,
            n_docs: n,
        };
        let order: Vec<i64> = (0..n as i64).collect();
        for epoch in 0..20 {
            train_epoch(
                &cfg,
                &mut action,
                &mut lower,
                &mut weights,
                &docs,
                &y,
                &order,
                epoch,
            )
            .unwrap();
        }
        let sums = class_sums(&cfg, &action, &weights, &docs).unwrap();
        let correct = (0..n)
            .filter(|&i| (sums[i * 2 + 1] > sums[i * 2]) as i64 == y[i])
            .count();
        assert!(correct as f64 >= 0.95 * n as f64, "{correct}/{n}");
    }

    #[test]
    fn byte_kernels_match_the_planes() {
        if !bytes::available() {
            return;
        }
        let n = 120;
        let n_features: usize = 150;
        let fw = n_features.div_ceil(64);
        let mut words = vec![0u64; n * fw];
        let mut y = vec![0i64; n];
        for i in 0..n {
            for w in 0..fw {
                // Sparse-ish documents: about one bit in eight set.
                let h = mix64((i * fw + w) as u64);
                words[i * fw + w] = h & mix64(h) & mix64(h ^ 5);
            }
            words[i * fw + fw - 1] &= (1u64 << (n_features % 64)) - 1;
            y[i] = (mix64(i as u64 ^ 99) % 3) as i64;
        }
        let docs = Docs::Packed {
            words: &words,
            n_docs: n,
        };
        // Each document several times per call, so clauses queue long runs of deferred steps.
        let order: Vec<i64> = (0..4 * n as i64).rev().map(|i| i % n as i64).collect();
        for variant in 0..6 {
            let mut cfg = config(n_features, variant == 3);
            cfg.n_classes = 3;
            cfg.threshold = 8;
            cfg.state_bits = [8, 3, 5, 8, 8, 2][variant];
            cfg.boost_true_positive = variant != 1;
            cfg.max_included_literals = if variant == 2 || variant == 3 { 4 } else { 0 };
            cfg.max_negated_literals = if variant == 2 || variant == 5 { 2 } else { 0 };
            cfg.clause_drop_p = if variant == 4 { 0.3 } else { 0.0 };
            cfg.focused_negatives = variant != 5;
            cfg.weighted = variant != 4;
            cfg.absorbing = [None, Some(1), Some(3), None, Some(100), None][variant];
            let fresh = initial_state(&cfg).unwrap();
            let mut planes = fresh.clone();
            let mut bytes = fresh;
            for epoch in 0..3 {
                for (state, allow) in [(&mut planes, false), (&mut bytes, true)] {
                    train_epoch_using(
                        &cfg,
                        &mut state.0,
                        &mut state.1,
                        &mut state.2,
                        &docs,
                        &y,
                        &order,
                        epoch,
                        allow,
                    )
                    .unwrap();
                }
                assert!(planes == bytes, "variant {variant}, epoch {epoch}");
            }
            assert!(
                planes.0.iter().any(|&a| a != 0),
                "variant {variant} learned nothing"
            );
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let cfg = config(10, false);
        let (mut action, mut lower, mut weights) = initial_state(&cfg).unwrap();
        let indptr = [0i64, 1];
        let indices = [10i32];
        let docs = Docs::Csr {
            indptr: &indptr,
            indices: &indices,
        };
        assert!(class_sums(&cfg, &action, &weights, &docs).is_err());
        let ok = [3i32];
        let docs = Docs::Csr {
            indptr: &indptr,
            indices: &ok,
        };
        assert!(train_epoch(
            &cfg,
            &mut action,
            &mut lower,
            &mut weights,
            &docs,
            &[2],
            &[0],
            0
        )
        .is_err());
        let mut odd = cfg.clone();
        odd.n_clauses = 3;
        assert!(odd.validate().is_err());
    }
}
