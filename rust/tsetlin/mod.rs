//! Tsetlin Machine: bit-packed clause evaluation, Type I / Type II feedback and class sums
//! (Granmo 2018; Berge et al. 2019; integer-weighted clauses after Abeyrathna et al. 2020;
//! the coalesced shared clause pool after Glimsdal & Granmo 2021).
//!
//! Layout. Literals are the `n` features followed by their `n` negations, each half padded to
//! whole 64-bit words (`fw` words each, `lw = 2 fw` in all). Every automaton has `2^b` states,
//! stored bit-sliced: the top bit plane (the "include" or action bit) lives in its own array,
//! contiguous per clause (`action[clause][lw]`), so clause evaluation streams only 1/b of the
//! state. The lower `b - 1` planes are stored word-major (`lower[clause][word][plane]`) so the
//! carry (or borrow) of an increment touches neighbouring words and stops as soon as it is zero.
//!
//! Training calls of more than a few examples copy the automata into one byte each
//! (`bytes.rs`, AVX-512BW, `state_bits <= 8`): a masked saturating add or subtract then moves
//! all 64 automata of a word at once, and the planes are written back at the end. Clause
//! evaluation during training reads only the include words a per-clause summary bitmap marks
//! as non-zero (clauses include a few literals each). Forgetting on clauses that did not fire
//! (Type I, decrements only, ~90% of all updates) reaches the words without include bits
//! lazily, in one pass per run of such updates (`ByteStore`).
//!
//! Randomness is counter based: every draw is a keyed hash of (seed, epoch, example, role,
//! class, clause). The per-literal Bernoulli(1/s) masks come from a table of 2^15 64-bit masks
//! built once per epoch from the same keyed stream; an updated clause reads it at an offset and
//! bit rotation drawn from its own key (one table load per 64 literals instead of a random
//! number per literal). No generator is shared, so the model is bit-identical for any thread
//! count, and `tests/reference/tsetlin.py` replays the stream exactly.
//!
//! Prediction on sparse documents walks feature -> clause lists (the clauses that include each
//! feature, and those that include its negation), so a document touches only the clauses its
//! present features name; dense documents use the word-parallel AND over the include plane.
//!
//! Weights. Each (class, clause) pair carries a signed integer weight. In the per-class machine
//! its sign is the clause's fixed polarity (even clauses +, odd clauses -) and its magnitude
//! starts at 1; with `weighted` the magnitude grows by 1 on Type I feedback when the clause
//! outputs 1 and shrinks by 1 on Type II feedback when it outputs 1, never below 1 (the
//! integer-weighted TM's weights are positive integers, so a clause is never silenced and
//! keeps its polarity). In the coalesced machine one pool of clauses is shared by all classes
//! and every class holds its own signed weight per clause (initialised to +1 or -1 at random);
//! when the clause outputs 1 the target class's weight moves up by 1 and the negative class's
//! weight down by 1, and the weight's sign decides the feedback type.

use rayon::prelude::*;

mod bytes;
use bytes::{Kernels, Lane, Step};

use crate::error::{invalid, CoreResult};

/// Hyper-parameters and shapes of one machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub n_features: usize,
    pub n_classes: usize,
    /// Clauses per class (per-class machine) or in the shared pool (coalesced).
    pub n_clauses: usize,
    pub state_bits: usize,
    pub threshold: i64,
    pub specificity: f64,
    pub weighted: bool,
    pub boost_true_positive: bool,
    pub focused_negatives: bool,
    /// 0 means no budget.
    pub max_included_literals: usize,
    /// Exclude states at or below this one absorb: an automaton that reaches one is never
    /// incremented again, its literal stays excluded for good (None: no absorbing states).
    pub absorbing: Option<u32>,
    pub clause_drop_p: f64,
    pub coalesced: bool,
    pub seed: u64,
}

impl Config {
    pub fn feature_words(&self) -> usize {
        self.n_features.div_ceil(64)
    }
    pub fn literal_words(&self) -> usize {
        2 * self.feature_words()
    }
    pub fn n_banks(&self) -> usize {
        if self.coalesced {
            1
        } else {
            self.n_classes
        }
    }
    pub fn weights_per_clause(&self) -> usize {
        if self.coalesced {
            self.n_classes
        } else {
            1
        }
    }
    pub fn lower_planes(&self) -> usize {
        self.state_bits - 1
    }
    /// Bytes of the model state (include plane, lower planes, weights) plus the byte-per-automaton
    /// copy a training call makes; None when the product overflows.
    pub fn state_bytes(&self) -> Option<usize> {
        let fw = self.n_features.checked_add(63)? / 64;
        let words = self.n_banks().checked_mul(self.n_clauses)?.checked_mul(fw.checked_mul(2)?)?;
        let planes = words.checked_mul(self.state_bits.max(1))?.checked_mul(8)?;
        let bytes_copy = words.checked_mul(64)?;
        let weights = self.n_banks().checked_mul(self.n_clauses)?.checked_mul(self.n_classes.max(1))?.checked_mul(4)?;
        planes.checked_add(bytes_copy)?.checked_add(weights)
    }

    pub fn action_len(&self) -> usize {
        self.n_banks() * self.n_clauses * self.literal_words()
    }
    pub fn lower_len(&self) -> usize {
        self.action_len() * self.lower_planes()
    }
    pub fn weights_len(&self) -> usize {
        self.n_banks() * self.n_clauses * self.weights_per_clause()
    }

    pub fn validate(&self) -> CoreResult<()> {
        if self.n_features == 0 {
            return invalid("n_features must be at least 1");
        }
        if self.n_classes < 2 {
            return invalid(format!("need at least 2 classes, got {}", self.n_classes));
        }
        if self.n_clauses == 0 || (!self.coalesced && !self.n_clauses.is_multiple_of(2)) {
            return invalid(format!(
                "n_clauses must be a positive even number (half vote for, half against), got {}",
                self.n_clauses
            ));
        }
        if !(2..=16).contains(&self.state_bits) {
            return invalid(format!(
                "state_bits must be in [2, 16], got {}",
                self.state_bits
            ));
        }
        // The state's size is checked before anything is allocated: an absurd n_clauses or
        // feature width must be an error, not an allocation abort or a capacity overflow.
        let limit = crate::pool::available_memory().unwrap_or(MAX_STATE_BYTES).min(MAX_STATE_BYTES);
        if self.state_bytes().is_none_or(|b| b > limit) {
            return invalid(format!(
                "n_clauses={} x n_features={}: the model state would take more than the {} bytes \
                 of memory available",
                self.n_clauses, self.n_features, limit
            ));
        }
        if self.threshold < 1 {
            return invalid(format!("threshold must be >= 1, got {}", self.threshold));
        }
        if !(self.specificity >= 1.0 && self.specificity.is_finite()) {
            return invalid(format!(
                "specificity must be a finite number >= 1, got {}",
                self.specificity
            ));
        }
        if let Some(a) = self.absorbing {
            let half = 1u64 << (self.state_bits - 1);
            if a as u64 >= half {
                return invalid(format!(
                    "absorbing must be an exclude state in [0, {}], got {a}",
                    half - 1
                ));
            }
        }
        if !(0.0..1.0).contains(&self.clause_drop_p) {
            return invalid(format!(
                "clause_drop_p must be in [0, 1), got {}",
                self.clause_drop_p
            ));
        }
        Ok(())
    }
}

/// The documents of one call: bit-packed rows or CSR rows (indices of present features).
#[derive(Clone, Copy)]
pub enum Docs<'a> {
    /// `[n_docs, feature_words]`, bit `j % 64` of word `j / 64` is feature `j`.
    Packed { words: &'a [u64], n_docs: usize },
    /// CSR: document `i` holds the features `indices[indptr[i]..indptr[i + 1]]`.
    Csr {
        indptr: &'a [i64],
        indices: &'a [i32],
    },
}

impl Docs<'_> {
    pub fn n_docs(&self) -> usize {
        match self {
            Docs::Packed { n_docs, .. } => *n_docs,
            Docs::Csr { indptr, .. } => indptr.len().saturating_sub(1),
        }
    }

    /// Check the shapes and that every index names a feature.
    pub fn validate(&self, n_features: usize) -> CoreResult<()> {
        match self {
            Docs::Packed { words, n_docs } => {
                let fw = n_features.div_ceil(64);
                if words.len() != n_docs * fw {
                    return invalid(format!(
                        "X: packed rows hold {} words, expected {}",
                        words.len(),
                        n_docs * fw
                    ));
                }
                let spare = fw * 64 - n_features;
                if spare > 0 {
                    let high = !0u64 << (64 - spare);
                    if words.chunks_exact(fw).any(|row| row[fw - 1] & high != 0) {
                        return invalid("X: packed rows have bits set beyond n_features");
                    }
                }
            }
            Docs::Csr { indptr, indices } => {
                if indptr.is_empty() || indptr[0] != 0 {
                    return invalid("X: CSR indptr must start at 0");
                }
                if indptr.windows(2).any(|w| w[1] < w[0]) {
                    return invalid("X: CSR indptr must be non-decreasing");
                }
                if indptr[indptr.len() - 1] as usize != indices.len() {
                    return invalid("X: CSR indptr does not end at the number of indices");
                }
                if indices.iter().any(|&j| j < 0 || j as usize >= n_features) {
                    return invalid(format!("X: feature index outside [0, {n_features})"));
                }
            }
        }
        Ok(())
    }

    /// Write document `i`'s feature bits into `out` (`feature_words` words).
    fn features_into(&self, i: usize, out: &mut [u64]) {
        match self {
            Docs::Packed { words, .. } => {
                let fw = out.len();
                out.copy_from_slice(&words[i * fw..(i + 1) * fw]);
            }
            Docs::Csr { indptr, indices } => {
                out.fill(0);
                for &j in &indices[indptr[i] as usize..indptr[i + 1] as usize] {
                    let j = j as usize;
                    out[j / 64] |= 1u64 << (j % 64);
                }
            }
        }
    }
}

/// Literal words from feature words: features, then their negations (padding stays 0).
fn literals_from_features(features: &[u64], valid: &[u64], literals: &mut [u64]) {
    let fw = features.len();
    literals[..fw].copy_from_slice(features);
    for w in 0..fw {
        literals[fw + w] = !features[w] & valid[w];
    }
}

/// Valid-bit masks of the feature words (the last word may be partial).
fn feature_masks(n_features: usize) -> Vec<u64> {
    let fw = n_features.div_ceil(64);
    let mut masks = vec![!0u64; fw];
    let spare = fw * 64 - n_features;
    if spare > 0 {
        masks[fw - 1] = !0u64 >> spare;
    }
    masks
}

// ---------------------------------------------------------------------------------------------
// Counter-based random numbers

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
fn below(h: u64, num: u64, den: u64) -> bool {
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
struct MaskCursor {
    offset: usize,
    rotation: u32,
}

impl MaskCursor {
    fn new(h: u64) -> Self {
        let g = mix64(h ^ ROLE_MASKS);
        MaskCursor {
            offset: (g as usize) & (MASK_POOL_WORDS - 1),
            rotation: (g >> 58) as u32,
        }
    }
    #[inline(always)]
    fn mask(&self, pool: &[u64], word: usize) -> u64 {
        pool[(self.offset + word) & (MASK_POOL_WORDS - 1)].rotate_left(self.rotation)
    }
}

/// Probability `p` as a 32-bit fixed-point threshold for `bernoulli_mask`.
fn threshold32(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64
}

// ---------------------------------------------------------------------------------------------
// Bit-sliced automata

/// Add 1 (saturating at the top state) to the automata selected by `mask` in one word.
///
/// The chain stops before it starts when no selected automaton can move (all saturated), the
/// common case for reinforced literals; once started it runs the fixed `P` planes without a
/// per-plane exit: the depth at which the carry of ~6 random lanes dies is unpredictable, and
/// the branch-free chain measured 2x faster than exiting at carry 0 plane by plane
/// (`type_one_feedback_cost`: 5.1 against 11.4 ns per literal word).
#[inline(always)]
fn increment<const P: usize>(lower: &mut [u64; P], action: &mut u64, mask: u64) {
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
fn decrement<const P: usize>(lower: &mut [u64; P], action: &mut u64, mask: u64) {
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
/// More model state than any machine holds (1 TiB): refused before allocating.
pub const MAX_STATE_BYTES: usize = 1 << 40;

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

// ---------------------------------------------------------------------------------------------
// Clause evaluation

/// Training-time output: AND of the included literals (an empty clause outputs 1).
#[inline(always)]
fn fires_training(action: &[u64], literals: &[u64]) -> bool {
    action.iter().zip(literals).all(|(&a, &l)| a & !l == 0)
}

/// Bit `w` of a clause's summary says whether include word `w` is non-zero. Clauses include
/// a few literals each, so training-time evaluation visits those words and skips the rest.
fn summarize(action: &[u64], summary: &mut [u64]) {
    summary.fill(0);
    for (w, &a) in action.iter().enumerate() {
        if a != 0 {
            summary[w / 64] |= 1 << (w % 64);
        }
    }
}

/// `fires_training` reading only the include words the summary marks.
#[inline(always)]
fn fires_training_summarized(action: &[u64], summary: &[u64], literals: &[u64]) -> bool {
    for (i, &bits) in summary.iter().enumerate() {
        let mut bits = bits;
        while bits != 0 {
            let w = i * 64 + bits.trailing_zeros() as usize;
            if action[w] & !literals[w] != 0 {
                return false;
            }
            bits &= bits - 1;
        }
    }
    true
}

/// What prediction needs of the clauses: for every feature, the clauses that include it and
/// those that include its negation (CSR lists), so a sparse document touches only the clauses
/// its present features name.
struct ClauseIndex {
    nonempty: Vec<bool>,
    /// Included positive literals per clause.
    n_positive: Vec<u32>,
    positive_ptr: Vec<usize>,
    positive_clauses: Vec<u32>,
    negated_ptr: Vec<usize>,
    negated_clauses: Vec<u32>,
    /// Non-empty clauses without positive literals (they fire unless a negation is violated).
    negation_only: Vec<u32>,
}

/// Group (feature, clause) pairs by feature: CSR pointers and clause lists.
fn by_feature(pairs: &[(u32, u32)], n_features: usize) -> (Vec<usize>, Vec<u32>) {
    let mut ptr = vec![0usize; n_features + 1];
    for &(j, _) in pairs {
        ptr[j as usize + 1] += 1;
    }
    for j in 0..n_features {
        ptr[j + 1] += ptr[j];
    }
    let mut fill = ptr.clone();
    let mut clauses = vec![0u32; pairs.len()];
    for &(j, c) in pairs {
        clauses[fill[j as usize]] = c;
        fill[j as usize] += 1;
    }
    (ptr, clauses)
}

fn clause_index(cfg: &Config, action: &[u64]) -> ClauseIndex {
    let lw = cfg.literal_words();
    let fw = cfg.feature_words();
    let mut positive = Vec::new();
    let mut negated = Vec::new();
    let mut nonempty = Vec::new();
    let mut n_positive = Vec::new();
    let mut negation_only = Vec::new();
    for (c, clause) in action.chunks_exact(lw).enumerate() {
        let before = positive.len();
        for (w, &word) in clause.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let j = ((w % fw) * 64) as u32 + bits.trailing_zeros();
                if w < fw {
                    positive.push((j, c as u32));
                } else {
                    negated.push((j, c as u32));
                }
                bits &= bits - 1;
            }
        }
        let np = (positive.len() - before) as u32;
        let ne = clause.iter().any(|&a| a != 0);
        if ne && np == 0 {
            negation_only.push(c as u32);
        }
        nonempty.push(ne);
        n_positive.push(np);
    }
    let (positive_ptr, positive_clauses) = by_feature(&positive, cfg.n_features);
    let (negated_ptr, negated_clauses) = by_feature(&negated, cfg.n_features);
    ClauseIndex {
        nonempty,
        n_positive,
        positive_ptr,
        positive_clauses,
        negated_ptr,
        negated_clauses,
        negation_only,
    }
}

/// Per-thread marks for the sparse test; stamps avoid clearing them for every document.
struct SparseMarks {
    stamp: u32,
    killed: Vec<u32>,
    hits_stamp: Vec<u32>,
    hits: Vec<u32>,
}

impl SparseMarks {
    fn new(total: usize) -> Self {
        SparseMarks {
            stamp: 0,
            killed: vec![0; total],
            hits_stamp: vec![0; total],
            hits: vec![0; total],
        }
    }
}

/// Prediction-time clause outputs of one document for every clause in `action`. A sparse
/// document (at most 2 present features per feature word) walks the feature -> clause lists of
/// its present features: a clause fires when every included positive feature was seen and no
/// included negation was; a denser one uses the word-parallel AND over the include bits.
#[allow(clippy::too_many_arguments)]
fn clause_outputs_predict(
    cfg: &Config,
    action: &[u64],
    index: &ClauseIndex,
    present: &[u32],
    literals: &[u64],
    marks: &mut SparseMarks,
    fired: &mut Vec<u32>,
) {
    let lw = cfg.literal_words();
    let fw = cfg.feature_words();
    fired.clear();
    if present.len() > 2 * fw {
        for (c, clause) in action.chunks_exact(lw).enumerate() {
            if index.nonempty[c] && fires_training(clause, literals) {
                fired.push(c as u32);
            }
        }
        return;
    }
    marks.stamp = marks.stamp.wrapping_add(1);
    if marks.stamp == 0 {
        marks.killed.fill(0);
        marks.hits_stamp.fill(0);
        marks.stamp = 1;
    }
    let stamp = marks.stamp;
    for &j in present {
        let j = j as usize;
        for &c in &index.negated_clauses[index.negated_ptr[j]..index.negated_ptr[j + 1]] {
            marks.killed[c as usize] = stamp;
        }
    }
    for &j in present {
        let j = j as usize;
        for &c in &index.positive_clauses[index.positive_ptr[j]..index.positive_ptr[j + 1]] {
            let c = c as usize;
            if marks.hits_stamp[c] != stamp {
                marks.hits_stamp[c] = stamp;
                marks.hits[c] = 0;
            }
            marks.hits[c] += 1;
            if marks.hits[c] == index.n_positive[c] && marks.killed[c] != stamp {
                fired.push(c as u32);
            }
        }
    }
    for &c in &index.negation_only {
        if marks.killed[c as usize] != stamp {
            fired.push(c);
        }
    }
}

/// Present features of a packed document, in increasing order.
fn present_features(features: &[u64], out: &mut Vec<u32>) {
    out.clear();
    for (w, &word) in features.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            out.push((w * 64) as u32 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
}

/// Prediction-time clause outputs `[n_docs, n_banks * n_clauses]` (empty clauses output 0).
pub fn clause_outputs(cfg: &Config, action: &[u64], docs: &Docs) -> CoreResult<Vec<u8>> {
    cfg.validate()?;
    docs.validate(cfg.n_features)?;
    let total = cfg.n_banks() * cfg.n_clauses;
    if action.len() != cfg.action_len() {
        return invalid("action plane has the wrong size for this model");
    }
    let index = clause_index(cfg, action);
    let mut out = vec![0u8; docs.n_docs() * total];
    out.par_chunks_mut(total.max(1))
        .with_min_len(16)
        .enumerate()
        .for_each_init(
            || (DocScratch::new(cfg), SparseMarks::new(total), Vec::new()),
            |(scratch, marks, fired), (i, row)| {
                scratch.load(docs, i);
                clause_outputs_predict(
                    cfg,
                    action,
                    &index,
                    &scratch.present,
                    &scratch.literals,
                    marks,
                    fired,
                );
                for &c in fired.iter() {
                    row[c as usize] = 1;
                }
            },
        );
    Ok(out)
}

struct DocScratch {
    features: Vec<u64>,
    literals: Vec<u64>,
    present: Vec<u32>,
    valid: Vec<u64>,
}

impl DocScratch {
    fn new(cfg: &Config) -> Self {
        DocScratch {
            features: vec![0; cfg.feature_words()],
            literals: vec![0; cfg.literal_words()],
            present: Vec::new(),
            valid: feature_masks(cfg.n_features),
        }
    }
    fn load(&mut self, docs: &Docs, i: usize) {
        docs.features_into(i, &mut self.features);
        literals_from_features(&self.features, &self.valid, &mut self.literals);
        present_features(&self.features, &mut self.present);
    }
}

/// Raw class sums `[n_docs, n_classes]`: sum over clauses of weight x prediction-time output.
pub fn class_sums(
    cfg: &Config,
    action: &[u64],
    weights: &[i32],
    docs: &Docs,
) -> CoreResult<Vec<i64>> {
    cfg.validate()?;
    docs.validate(cfg.n_features)?;
    if action.len() != cfg.action_len() || weights.len() != cfg.weights_len() {
        return invalid("model state has the wrong size for this configuration");
    }
    let k = cfg.n_classes;
    let total = cfg.n_banks() * cfg.n_clauses;
    let index = clause_index(cfg, action);
    let mut sums = vec![0i64; docs.n_docs() * k];
    sums.par_chunks_mut(k)
        .with_min_len(16)
        .enumerate()
        .for_each_init(
            || (DocScratch::new(cfg), SparseMarks::new(total), Vec::new()),
            |(scratch, marks, fired), (i, row)| {
                scratch.load(docs, i);
                clause_outputs_predict(
                    cfg,
                    action,
                    &index,
                    &scratch.present,
                    &scratch.literals,
                    marks,
                    fired,
                );
                row.fill(0);
                let k = cfg.n_classes;
                for &c in fired.iter() {
                    let c = c as usize;
                    if cfg.coalesced {
                        for (s, &w) in row.iter_mut().zip(&weights[c * k..(c + 1) * k]) {
                            *s += w as i64;
                        }
                    } else {
                        row[c / cfg.n_clauses] += weights[c] as i64;
                    }
                }
            },
        );
    Ok(sums)
}

/// `row[class] = sum_c weight(class, c) * outputs[c]` for the bank layout of `cfg`.
fn accumulate_sums(cfg: &Config, weights: &[i32], outputs: &[u8], row: &mut [i64]) {
    let c_per = cfg.n_clauses;
    row.fill(0);
    if cfg.coalesced {
        let k = cfg.n_classes;
        for (c, &o) in outputs.iter().enumerate() {
            if o != 0 {
                for (class, s) in row.iter_mut().enumerate() {
                    *s += weights[c * k + class] as i64;
                }
            }
        }
    } else {
        for (class, s) in row.iter_mut().enumerate() {
            let outs = &outputs[class * c_per..(class + 1) * c_per];
            let ws = &weights[class * c_per..(class + 1) * c_per];
            *s = outs
                .iter()
                .zip(ws)
                .map(|(&o, &w)| if o != 0 { w as i64 } else { 0 })
                .sum();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Training

/// Feedback probabilities of one example as exact fractions `num / (2T)`.
#[derive(Clone, Copy)]
struct Update {
    class: usize,
    /// Numerator of the update probability; the denominator is 2T.
    num: u64,
    role: u64,
}

/// Per-call constants of the feedback.
struct Feedback<'a> {
    cfg: &'a Config,
    lw: usize,
    forget_pool: Vec<u64>,
    reward_pool: Vec<u64>,
    valid_literals: Vec<u64>,
}

enum Kind {
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

    /// `apply` for byte-stored automata of a clause that fired (the feedback of clauses that
    /// did not fire is handled by `ByteStore`): the same steps, one vector operation per word.
    #[allow(clippy::too_many_arguments)]
    fn apply_bytes_fired(
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
        let boost = self.cfg.boost_true_positive;
        kernels.update_clause(action, lanes, summary, |w, act, lane| {
            let valid = self.valid_literals[w];
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
                    if let Some(left) = budget.as_mut() {
                        up = limit_new_includes(up, kernels.at_edge(lane), left);
                    }
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
                        if let Some(left) = budget.as_mut() {
                            up = limit_new_includes(up, kernels.at_edge(lane), left);
                        }
                    }
                    Step { up, down: 0 }
                }
            }
        });
    }

    /// Update one clause's automata given its (training-time) output on `literals`.
    fn apply<const P: usize>(
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
                        if let Some(left) = budget.as_mut() {
                            up = limit_new_includes(up, plane_edge(*act, &low[..]), left);
                        }
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
                    if let Some(left) = budget.as_mut() {
                        up = limit_new_includes(up, plane_edge(action[w], &low[..]), left);
                    }
                    if up != 0 {
                        increment(low, &mut action[w], up);
                    }
                }
            }
        }
    }
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

/// The bank's slices, each cut per clause into `lw`, `per_clause` and `sw` elements.
struct BankMut<'a, C> {
    action: &'a mut [u64],
    cells: &'a mut [C],
    summary: &'a mut [u64],
    weights: &'a mut [i32],
}

fn bank_items<'a, C: Send>(
    which: usize,
    bank: BankMut<'a, C>,
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

/// How the automata are held while training: bit planes (any `state_bits`) or bytes.
trait Store: Sync {
    type Cell: Send;
    fn cells_per_clause(&self, lw: usize) -> usize;
    #[allow(clippy::too_many_arguments)]
    fn feedback(
        &self,
        fb: &Feedback,
        kind: Kind,
        fired: bool,
        action: &mut [u64],
        cells: &mut [Self::Cell],
        summary: &mut [u64],
        literals: &[u64],
        cursor: MaskCursor,
    );
}

/// Bit-sliced storage with `P` lower planes, the model's own layout.
struct Planes<const P: usize>;

impl<const P: usize> Store for Planes<P> {
    type Cell = u64;
    fn cells_per_clause(&self, lw: usize) -> usize {
        lw * P
    }
    fn feedback(
        &self,
        fb: &Feedback,
        kind: Kind,
        fired: bool,
        action: &mut [u64],
        cells: &mut [u64],
        summary: &mut [u64],
        literals: &[u64],
        cursor: MaskCursor,
    ) {
        fb.apply::<P>(kind, fired, action, cells, literals, cursor);
        summarize(action, summary);
    }
}

/// Byte storage. Each clause's `lw` lanes are followed by a header that defers forgetting:
/// Type I feedback on a clause that did not fire only decrements (each automaton with
/// probability 1/s) and is by far the most frequent update, so it is applied at once to the
/// words that hold include bits (they decide the clause's output) and queued for the others,
/// which catch up in one pass, each lane loaded once for the whole queue, before the clause's
/// next increment or at the end of the call. Decrements of excluded automata never change an
/// output, and each lane takes the queued steps in their original order with their original
/// masks, so the states are exactly those of immediate updates.
struct ByteStore {
    kernels: Kernels,
    lw: usize,
    header: usize,
}

/// Deferred forgetting steps a clause may queue before it catches up.
const MAX_DEFERRED: usize = 16;
const CURSORS_AT: usize = 4;
const APPLIED_AT: usize = CURSORS_AT + 4 * MAX_DEFERRED;

/// The header of one clause, bytes over whole lanes: byte 0 the number of queued steps, then
/// their mask cursors (4 bytes each), then per word how many queued steps it has taken.
struct Deferred<'a>(&'a mut [Lane]);

impl Deferred<'_> {
    fn lanes_for(lw: usize) -> usize {
        (APPLIED_AT + lw).div_ceil(64)
    }
    fn get(&self, i: usize) -> u8 {
        self.0[i / 64].0[i % 64]
    }
    fn set(&mut self, i: usize, v: u8) {
        self.0[i / 64].0[i % 64] = v;
    }
    fn queued(&self) -> usize {
        self.get(0) as usize
    }
    fn cursor(&self, j: usize) -> MaskCursor {
        let at = CURSORS_AT + 4 * j;
        let packed = u32::from_le_bytes([
            self.get(at),
            self.get(at + 1),
            self.get(at + 2),
            self.get(at + 3),
        ]);
        MaskCursor {
            offset: (packed & 0xffff) as usize,
            rotation: packed >> 16,
        }
    }
    fn push(&mut self, cursor: MaskCursor) {
        let j = self.queued();
        let packed = (cursor.offset as u32) | (cursor.rotation << 16);
        for (k, b) in packed.to_le_bytes().into_iter().enumerate() {
            self.set(CURSORS_AT + 4 * j + k, b);
        }
        self.set(0, (j + 1) as u8);
    }
}

impl ByteStore {
    /// Bring every word of the clause up to date and empty its queue.
    fn catch_up(&self, fb: &Feedback, action: &[u64], cells: &mut [Lane]) {
        let (lanes, header) = cells.split_at_mut(self.lw);
        let mut deferred = Deferred(header);
        let n = deferred.queued();
        if n == 0 {
            return;
        }
        let mut cursors = [MaskCursor {
            offset: 0,
            rotation: 0,
        }; MAX_DEFERRED];
        for (j, c) in cursors.iter_mut().enumerate().take(n) {
            *c = deferred.cursor(j);
        }
        self.kernels.catch_up(
            action,
            lanes,
            n,
            |w| {
                let first = deferred.get(APPLIED_AT + w);
                if first != 0 {
                    deferred.set(APPLIED_AT + w, 0);
                }
                first as usize
            },
            |j, w| fb.valid_literals[w] & cursors[j].mask(&fb.forget_pool, w),
        );
        deferred.set(0, 0);
    }
}

impl Store for ByteStore {
    type Cell = Lane;
    fn cells_per_clause(&self, lw: usize) -> usize {
        lw + self.header
    }
    fn feedback(
        &self,
        fb: &Feedback,
        kind: Kind,
        fired: bool,
        action: &mut [u64],
        cells: &mut [Lane],
        summary: &mut [u64],
        literals: &[u64],
        cursor: MaskCursor,
    ) {
        match kind {
            Kind::TypeII if !fired => {}
            Kind::TypeI if !fired => {
                if Deferred(&mut cells[self.lw..]).queued() == MAX_DEFERRED {
                    self.catch_up(fb, action, cells);
                }
                let (lanes, header) = cells.split_at_mut(self.lw);
                let mut deferred = Deferred(header);
                let taken = (deferred.queued() + 1) as u8;
                self.kernels.forget_included(
                    action,
                    lanes,
                    summary,
                    |w| fb.valid_literals[w] & cursor.mask(&fb.forget_pool, w),
                    |w| deferred.set(APPLIED_AT + w, taken),
                );
                deferred.push(cursor);
            }
            _ => {
                self.catch_up(fb, action, cells);
                let lanes = &mut cells[..self.lw];
                fb.apply_bytes_fired(
                    &self.kernels,
                    kind,
                    action,
                    lanes,
                    summary,
                    literals,
                    cursor,
                );
            }
        }
    }
}

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
    let mut valid_literals = feature_valid.clone();
    valid_literals.extend_from_slice(&feature_valid);
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
    let per_clause = store.cells_per_clause(lw);
    let c_per = cfg.n_clauses;
    let k = cfg.n_classes;
    let t = cfg.threshold;
    let drop_num = (cfg.clause_drop_p * (1u64 << 32) as f64).round() as u64;

    let mut scratch = DocScratch::new(cfg);
    let total = cfg.n_banks() * c_per;
    let mut outputs = vec![0u8; total];
    let mut dropped = vec![false; total];
    let mut sums = vec![0i64; k];
    let mut evaluated = vec![false; cfg.n_banks()];
    let sw = lw.div_ceil(64);
    let mut summary = vec![0u64; total * sw];
    summary
        .par_chunks_mut(sw)
        .zip(action.par_chunks(lw))
        .for_each(|(s, a)| summarize(a, s));

    for &example in order {
        let i = example as usize;
        let target = y[i] as usize;
        let ex = example as u64;
        scratch.load(docs, i);
        let literals = &scratch.literals;

        if drop_num > 0 {
            let prefix = stream_key(cfg.seed, &[epoch, ex, ROLE_DROP]);
            dropped
                .par_iter_mut()
                .enumerate()
                .with_min_len(256)
                .for_each(|(c, d)| {
                    *d = below(stream_step(prefix, c as u64), drop_num, 1 << 32);
                });
        }

        // Which banks must be evaluated: uniform sampling picks the negative class first.
        let pick = stream_key(cfg.seed, &[epoch, ex, ROLE_PICK_NEGATIVE]);
        let uniform_negative = {
            let r = ((pick as u128 * (k as u128 - 1)) >> 64) as usize;
            if r >= target {
                r + 1
            } else {
                r
            }
        };
        evaluated.fill(false);
        if cfg.coalesced {
            evaluated[0] = true;
        } else if cfg.focused_negatives {
            evaluated.fill(true);
        } else {
            evaluated[target] = true;
            evaluated[uniform_negative] = true;
        }
        // Every needed bank in one parallel pass.
        outputs
            .par_iter_mut()
            .zip(&dropped)
            .enumerate()
            .with_min_len(64)
            .for_each(|(g, (o, &d))| {
                if evaluated[g / c_per] {
                    *o = (!d
                        && fires_training_summarized(
                            &action[g * lw..(g + 1) * lw],
                            &summary[g * sw..(g + 1) * sw],
                            literals,
                        )) as u8;
                }
            });
        // Class sums (clamped to [-T, T]) of the classes whose banks were evaluated.
        if cfg.coalesced {
            accumulate_sums(cfg, weights, &outputs, &mut sums);
        } else {
            for class in 0..k {
                sums[class] = if evaluated[class] {
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
        let clamped = |class: usize| sums[class].clamp(-t, t);

        let negative = if cfg.focused_negatives {
            // Focused: a negative class is drawn in proportion to (T + v) / 2T.
            let total_w: u64 = (0..k)
                .filter(|&c| c != target)
                .map(|c| (t + clamped(c)) as u64)
                .sum();
            if total_w == 0 {
                uniform_negative
            } else {
                let mut r = ((mix64(pick) as u128 * total_w as u128) >> 64) as u64;
                let mut chosen = uniform_negative;
                for c in (0..k).filter(|&c| c != target) {
                    let w = (t + clamped(c)) as u64;
                    if r < w {
                        chosen = c;
                        break;
                    }
                    r -= w;
                }
                chosen
            }
        } else {
            uniform_negative
        };
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
        let den = 2 * t as u64;
        let prefixes = updates.map(|u| stream_key(cfg.seed, &[epoch, ex, u.role, u.class as u64]));

        if cfg.coalesced {
            let kw = k;
            action
                .par_chunks_exact_mut(lw)
                .zip(cells.par_chunks_exact_mut(per_clause))
                .zip(summary.par_chunks_exact_mut(sw))
                .zip(weights.par_chunks_exact_mut(kw))
                .enumerate()
                .with_min_len(16)
                .for_each(|(c, (((act, low), summ), ws))| {
                    if dropped[c] {
                        return;
                    }
                    let fired = outputs[c] != 0;

                    for (u, &prefix) in updates.iter().zip(&prefixes) {
                        let h = stream_step(prefix, c as u64);
                        if u.num == 0 || !below(h, u.num, den) {
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
                        store.feedback(fb, kind, fired, act, low, summ, literals, cursor);
                        if fired && cfg.weighted {
                            *w = if u.role == ROLE_TARGET {
                                w.saturating_add(1)
                            } else {
                                w.saturating_sub(1)
                            };
                        }
                    }
                });
        } else {
            // Both updated banks in one parallel pass (one fork-join per example, not two).
            let (t_bank, n_bank) = (updates[0].class, updates[1].class);
            let (act_t, act_n) = two_banks_mut(action, t_bank, n_bank, c_per * lw);
            let (low_t, low_n) = two_banks_mut(cells, t_bank, n_bank, c_per * per_clause);
            let (sum_t, sum_n) = two_banks_mut(&mut summary, t_bank, n_bank, c_per * sw);
            let (ws_t, ws_n) = two_banks_mut(weights, t_bank, n_bank, c_per);
            let cuts = (lw, per_clause, sw);
            let bank_t = BankMut {
                action: act_t,
                cells: low_t,
                summary: sum_t,
                weights: ws_t,
            };
            let bank_n = BankMut {
                action: act_n,
                cells: low_n,
                summary: sum_n,
                weights: ws_n,
            };
            bank_items(0, bank_t, cuts)
                .chain(bank_items(1, bank_n, cuts))
                .with_min_len(16)
                .for_each(|(which, c, clause, w)| {
                    let u = &updates[which];
                    let global = u.class * c_per + c;
                    if u.num == 0 || dropped[global] {
                        return;
                    }
                    let h = stream_step(prefixes[which], c as u64);
                    if !below(h, u.num, den) {
                        return;
                    }
                    let cursor = MaskCursor::new(h);
                    let fired = outputs[global] != 0;
                    let positive = *w > 0;
                    let type_one = positive == (u.role == ROLE_TARGET);
                    let kind = if type_one { Kind::TypeI } else { Kind::TypeII };
                    store.feedback(
                        fb,
                        kind,
                        fired,
                        clause.action,
                        clause.cells,
                        clause.summary,
                        literals,
                        cursor,
                    );
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(n_features: usize, coalesced: bool) -> Config {
        Config {
            n_features,
            n_classes: 2,
            n_clauses: 10,
            state_bits: 8,
            threshold: 5,
            specificity: 3.0,
            weighted: true,
            boost_true_positive: true,
            focused_negatives: true,
            max_included_literals: 0,
            absorbing: None,
            clause_drop_p: 0.0,
            coalesced,
            seed: 7,
        }
    }

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

#[cfg(test)]
mod timing {
    use super::*;

    /// Cost of Type I feedback on a non-firing clause (`cargo test --release -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn type_one_feedback_cost() {
        let cfg = Config {
            n_features: 5000,
            n_classes: 2,
            n_clauses: 200,
            state_bits: 8,
            threshold: 80,
            specificity: 10.0,
            weighted: true,
            boost_true_positive: true,
            focused_negatives: true,
            max_included_literals: 0,
            absorbing: None,
            clause_drop_p: 0.0,
            coalesced: false,
            seed: 1,
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
