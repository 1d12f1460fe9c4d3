//! Clause evaluation: training-time outputs over the include plane, prediction-time outputs
//! and class sums (feature -> clause lists for sparse documents).

use rayon::prelude::*;

use super::config::{feature_masks, literals_from_features, Config, Docs};
use crate::error::{invalid, CoreResult};

/// Training-time output: AND of the included literals (an empty clause outputs 1).
#[inline(always)]
fn fires_training(action: &[u64], literals: &[u64]) -> bool {
    action.iter().zip(literals).all(|(&a, &l)| a & !l == 0)
}

/// Bit `w` of a clause's summary says whether include word `w` is non-zero. Clauses include
/// a few literals each, so training-time evaluation visits those words and skips the rest.
pub(super) fn summarize(action: &[u64], summary: &mut [u64]) {
    summary.fill(0);
    for (w, &a) in action.iter().enumerate() {
        if a != 0 {
            summary[w / 64] |= 1 << (w % 64);
        }
    }
}

/// Words after each clause's summary bits in training: the witness, an include word (index,
/// bits) that made the clause output 0 on an earlier example. Most clauses output 0 and most
/// do so again on the same word, so its bits, next to the summary, answer without reading
/// the include plane; they are refreshed whenever feedback touches the clause.
pub(super) const WITNESS_WORDS: usize = 2;

/// `fires_training` reading only the include words the summary marks, the witness first (a
/// new one is recorded); `summary` is the clause's summary bits followed by its witness.
#[inline(always)]
pub(super) fn fires_training_witnessed(
    action: &[u64],
    summary: &mut [u64],
    literals: &[u64],
) -> bool {
    let (bits, witness) = summary.split_at_mut(summary.len() - WITNESS_WORDS);
    if witness[1] & !literals[witness[0] as usize] != 0 {
        return false;
    }
    for (i, &word) in bits.iter().enumerate() {
        let mut word = word;
        while word != 0 {
            let w = i * 64 + word.trailing_zeros() as usize;
            let missing = action[w] & !literals[w];
            if missing != 0 {
                witness[0] = w as u64;
                witness[1] = action[w];
                return false;
            }
            word &= word - 1;
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
    let mut out = vec![0u8; docs.n_docs() * total];
    for_each_document(cfg, action, docs, &mut out, total.max(1), |row, fired| {
        for &c in fired {
            row[c as usize] = 1;
        }
    });
    Ok(out)
}

/// For every document, in parallel: the clauses that fire on it at prediction time, handed to
/// `write` with the document's `width` elements of `out`.
fn for_each_document<T: Send>(
    cfg: &Config,
    action: &[u64],
    docs: &Docs,
    out: &mut [T],
    width: usize,
    write: impl Fn(&mut [T], &[u32]) + Sync,
) {
    let index = clause_index(cfg, action);
    let total = cfg.n_banks() * cfg.n_clauses;
    out.par_chunks_mut(width)
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
                write(row, fired);
            },
        );
}

/// One worker's buffers for the document it is on: feature words, literal words and the
/// present features.
pub(super) struct DocScratch {
    features: Vec<u64>,
    pub(super) literals: Vec<u64>,
    present: Vec<u32>,
    valid: Vec<u64>,
}

impl DocScratch {
    pub(super) fn new(cfg: &Config) -> Self {
        DocScratch {
            features: vec![0; cfg.feature_words()],
            literals: vec![0; cfg.literal_words()],
            present: Vec::new(),
            valid: feature_masks(cfg.n_features),
        }
    }
    pub(super) fn load(&mut self, docs: &Docs, i: usize) {
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
    let mut sums = vec![0i64; docs.n_docs() * k];
    for_each_document(cfg, action, docs, &mut sums, k, |row, fired| {
        row.fill(0);
        for &c in fired {
            let c = c as usize;
            if cfg.coalesced {
                for (s, &w) in row.iter_mut().zip(&weights[c * k..(c + 1) * k]) {
                    *s += w as i64;
                }
            } else {
                row[c / cfg.n_clauses] += weights[c] as i64;
            }
        }
    });
    Ok(sums)
}

/// `row[class] = sum_c weight(class, c) * outputs[c]` for the bank layout of `cfg`.
pub(super) fn accumulate_sums(cfg: &Config, weights: &[i32], outputs: &[u8], row: &mut [i64]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsetlin::mix64;

    /// The witness answers as the full test does, through include words that change between
    /// examples as feedback changes them (the witness refreshed after each change).
    #[test]
    fn witnessed_evaluation_equals_the_full_test() {
        let lw = 7;
        let mut action = vec![0u64; lw];
        let mut summary = vec![0u64; 1 + WITNESS_WORDS];
        let mut outputs = [0usize; 2];
        for step in 0..4000u64 {
            // Sparse include words and literals with most bits set, so both outputs occur.
            let w = (mix64(step) % lw as u64) as usize;
            action[w] = mix64(step ^ 1) & mix64(step ^ 2) & mix64(step ^ 3) & mix64(step ^ 4);
            summarize(&action, &mut summary[..1]);
            let witness = summary[1] as usize;
            summary[2] = action[witness];
            let literals: Vec<u64> = (0..lw as u64)
                .map(|i| !(mix64(step * 31 + i) & mix64(step * 37 + i) & mix64(step * 41 + i)))
                .collect();
            let fired = fires_training_witnessed(&action, &mut summary, &literals);
            assert_eq!(fired, fires_training(&action, &literals), "step {step}");
            outputs[fired as usize] += 1;
            if !fired {
                let witness = summary[1] as usize;
                assert_ne!(summary[2] & !literals[witness], 0);
                assert_eq!(summary[2], action[witness]);
            }
        }
        assert!(outputs.iter().all(|&n| n > 100), "{outputs:?}");
    }
}
