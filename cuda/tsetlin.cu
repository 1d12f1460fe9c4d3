// Tsetlin Machine prediction: clause evaluation and class sums for many bit-packed documents
// per launch. One thread evaluates one clause on one document; the include bits are stored
// word-major on the device (`action_t[word][clause]`) so a warp's 32 clauses read one
// contiguous segment per literal word, while the document word is a broadcast.

typedef unsigned long long u64;

// docs:     [n, fw] packed features (bit j % 64 of word j / 64 is feature j; padding bits 0)
// action_t: [2 fw, total_clauses] include bits (word w < fw: features, w >= fw: negations)
// weights:  per-class machine [n_classes, clauses_per_bank] (bank = class), flattened so the
//           weight of global clause c is weights[c]; coalesced [clauses, n_classes].
// sums:     [n, n_classes] int64, zeroed by the caller; firing clauses add their weights.
// Grid: x = documents from doc0, y = tiles of blockDim.x clauses from clause_tile0 (a launch
// covers at most 65,535 tiles; larger models take several launches).
__global__ void tsetlin_class_sums(const u64* __restrict__ docs, i64 n, i64 fw,
                                   const u64* __restrict__ action_t, i64 total_clauses,
                                   i64 clauses_per_bank, const int* __restrict__ weights,
                                   i64 n_classes, int coalesced, i64 doc0, i64 clause_tile0,
                                   i64* __restrict__ sums) {
    const i64 d = doc0 + (i64)blockIdx.x;
    const i64 c = (clause_tile0 + (i64)blockIdx.y) * blockDim.x + threadIdx.x;
    if (d >= n || c >= total_clauses) return;
    const u64* doc = docs + d * fw;
    bool fires = true;
    u64 any = 0;
    for (i64 w = 0; w < fw; ++w) {
        const u64 x = doc[w];
        const u64 pos = action_t[w * total_clauses + c];
        const u64 neg = action_t[(fw + w) * total_clauses + c];
        any |= pos | neg;
        // An included feature that is absent, or an included negation whose feature is present.
        if ((pos & ~x) | (neg & x)) {
            fires = false;
            break;
        }
    }
    // Empty clauses output 0 at prediction.
    if (!fires || any == 0) return;
    unsigned long long* out = reinterpret_cast<unsigned long long*>(sums + d * n_classes);
    if (coalesced) {
        for (i64 k = 0; k < n_classes; ++k) {
            const int w = weights[c * n_classes + k];
            if (w != 0) atomicAdd(out + k, (unsigned long long)(long long)w);
        }
    } else {
        atomicAdd(out + c / clauses_per_bank, (unsigned long long)(long long)weights[c]);
    }
}
