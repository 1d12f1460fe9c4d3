//! Hyper-parameters, the shapes they imply, and the documents of one call.

use crate::error::{invalid, CoreResult};

/// More model state than any machine holds (1 TiB): refused before allocating.
pub const MAX_STATE_BYTES: usize = 1 << 40;

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
    /// Whether clauses may include negated features (false: present features only).
    pub negated_literals: bool,
    /// At most this many negated literals per clause (0 means no cap).
    pub max_negated_literals: usize,
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
        let words = self
            .n_banks()
            .checked_mul(self.n_clauses)?
            .checked_mul(fw.checked_mul(2)?)?;
        let planes = words.checked_mul(self.state_bits.max(1))?.checked_mul(8)?;
        let bytes_copy = words.checked_mul(64)?;
        let weights = self
            .n_banks()
            .checked_mul(self.n_clauses)?
            .checked_mul(self.n_classes.max(1))?
            .checked_mul(4)?;
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
        let limit = crate::pool::available_memory()
            .unwrap_or(MAX_STATE_BYTES)
            .min(MAX_STATE_BYTES);
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
    pub(super) fn features_into(&self, i: usize, out: &mut [u64]) {
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
pub(super) fn literals_from_features(features: &[u64], valid: &[u64], literals: &mut [u64]) {
    let fw = features.len();
    literals[..fw].copy_from_slice(features);
    for w in 0..fw {
        literals[fw + w] = !features[w] & valid[w];
    }
}

/// Valid-bit masks of the feature words (the last word may be partial).
pub(super) fn feature_masks(n_features: usize) -> Vec<u64> {
    let fw = n_features.div_ceil(64);
    let mut masks = vec![!0u64; fw];
    let spare = fw * 64 - n_features;
    if spare > 0 {
        masks[fw - 1] = !0u64 >> spare;
    }
    masks
}

/// A small machine for the unit tests (the settings vary per test from here).
#[cfg(test)]
pub(super) fn test_config(n_features: usize, coalesced: bool) -> Config {
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
        negated_literals: true,
        max_negated_literals: 0,
        coalesced,
        seed: 7,
    }
}
