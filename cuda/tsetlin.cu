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

// ---------------------------------------------------------------------------------------------
// Training: one pass of online training over `order`, the exact replay of the Rust plane path
// (rust/tsetlin/train.rs). Per example three launches: tsetlin_train_evaluate (drop draws,
// training-time outputs, class sums), tsetlin_train_pick (negative class, update probabilities)
// and tsetlin_train_feedback (Type I / II feedback, one thread per updated clause). Clauses are
// independent within one example's feedback, and every random number is a keyed hash of its
// position in the stream, so the parallel updates give the same state as the CPU's.
//
// State layout (as the Rust kernels hold it): action [banks * clauses, lw] include bits,
// lower [banks * clauses, lw, planes] the other state bits (plane 0 least significant), weights
// per-class [banks * clauses] or coalesced [clauses, n_classes].

#define TSETLIN_POOL_WORDS 32768
#define TSETLIN_POOL_CHUNK 256
#define TSETLIN_MAX_PLANES 15

#define TSETLIN_ROLE_TARGET 1ull
#define TSETLIN_ROLE_NEGATIVE 2ull
#define TSETLIN_ROLE_PICK_NEGATIVE 3ull
#define TSETLIN_ROLE_DROP 4ull
#define TSETLIN_ROLE_MASKS 6ull
#define TSETLIN_ROLE_POOL 7ull

// Flags of a training call.
#define TSETLIN_COALESCED 1
#define TSETLIN_FOCUSED 2
#define TSETLIN_WEIGHTED 4
#define TSETLIN_BOOST 8
#define TSETLIN_POSITIVE_ONLY 16

// The per-example plan written by tsetlin_train_pick for tsetlin_train_feedback.
#define TSETLIN_PLAN_TARGET 0
#define TSETLIN_PLAN_NEGATIVE 1
#define TSETLIN_PLAN_NUM_TARGET 2
#define TSETLIN_PLAN_NUM_NEGATIVE 3
#define TSETLIN_PLAN_PREFIX_TARGET 4
#define TSETLIN_PLAN_PREFIX_NEGATIVE 5
#define TSETLIN_PLAN_WORDS 6

__device__ __forceinline__ u64 tsetlin_mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ u64 tsetlin_stream_step(u64 h, u64 part) {
    return tsetlin_mix64(h ^ (part * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull));
}

__device__ __forceinline__ u64 tsetlin_stream_root(u64 seed) {
    return tsetlin_mix64(seed ^ 0x5851f42d4c957f2dull);
}

// High 64 bits of the 128-bit product, from 32-bit pieces (the same code on every target).
__device__ __forceinline__ u64 tsetlin_mulhi(u64 a, u64 b) {
    const u64 a_lo = a & 0xffffffffull, a_hi = a >> 32;
    const u64 b_lo = b & 0xffffffffull, b_hi = b >> 32;
    const u64 ll = a_lo * b_lo, lh = a_lo * b_hi, hl = a_hi * b_lo, hh = a_hi * b_hi;
    const u64 mid = (ll >> 32) + (lh & 0xffffffffull) + (hl & 0xffffffffull);
    return hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
}

// `u < num / den` for the 53 high bits of `h` as a uniform in [0, 1), in exact 128-bit integers.
__device__ __forceinline__ bool tsetlin_below(u64 h, u64 num, u64 den) {
    const u64 a = h >> 11;
    const u64 lhs_hi = tsetlin_mulhi(a, den), lhs_lo = a * den;
    const u64 rhs_hi = num >> 11, rhs_lo = num << 53;
    return lhs_hi < rhs_hi || (lhs_hi == rhs_hi && lhs_lo < rhs_lo);
}

__device__ __forceinline__ u64 tsetlin_rotl(u64 x, unsigned r) {
    return r == 0 ? x : (x << r) | (x >> (64 - r));
}

__device__ __forceinline__ u64 tsetlin_popcount(u64 x) { return (u64)__popcll(x); }

// Valid-bit mask of feature word w (the last word may be partial).
__device__ __forceinline__ u64 tsetlin_valid_word(i64 w, i64 fw, i64 n_features) {
    const i64 spare = fw * 64 - n_features;
    return (w == fw - 1 && spare > 0) ? (~0ull >> spare) : ~0ull;
}

// Literal word w of a document: features, then their negations (padding bits 0).
__device__ __forceinline__ u64 tsetlin_literal(const u64* doc, i64 w, i64 fw, i64 n_features) {
    return w < fw ? doc[w] : (~doc[w - fw] & tsetlin_valid_word(w - fw, fw, n_features));
}

// The negative class of uniform sampling: one of the k - 1 classes other than `target`.
__device__ __forceinline__ i64 tsetlin_uniform_negative(u64 pick, i64 k, i64 target) {
    const i64 r = (i64)tsetlin_mulhi(pick, (u64)(k - 1));
    return r >= target ? r + 1 : r;
}

// A table of Bernoulli(t / 2^32) masks for one epoch: thread i fills chunk i from its own
// wyrand generator keyed by (seed, epoch, ROLE_POOL, kind, i), as `mask_pool` does.
__global__ void tsetlin_mask_pool(u64 seed, u64 epoch, u64 kind, u64 t, u64* __restrict__ pool) {
    const i64 chunk = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (chunk >= TSETLIN_POOL_WORDS / TSETLIN_POOL_CHUNK) return;
    u64 key = tsetlin_stream_root(seed);
    key = tsetlin_stream_step(key, epoch);
    key = tsetlin_stream_step(key, TSETLIN_ROLE_POOL);
    key = tsetlin_stream_step(key, kind);
    u64 state = tsetlin_stream_step(key, (u64)chunk);
    u64* out = pool + chunk * TSETLIN_POOL_CHUNK;
    for (int m = 0; m < TSETLIN_POOL_CHUNK; ++m) {
        u64 mask;
        if (t >= (1ull << 32)) {
            mask = ~0ull;
        } else if (t == 0) {
            mask = 0;
        } else {
            // A bit-sliced comparison of 64 uniform 32-bit numbers with t, most significant
            // bit first, stopping once every lane is decided (the draws it takes are the stream).
            u64 lt = 0, eq = ~0ull;
            for (int bit = 31; bit >= 0; --bit) {
                state += 0xa0761d6478bd642full;
                const u64 other = state ^ 0xe7037ed1a0b428dbull;
                const u64 r = tsetlin_mulhi(state, other) ^ (state * other);
                if ((t >> bit) & 1) {
                    lt |= eq & ~r;
                    eq &= r;
                } else {
                    eq &= ~r;
                }
                if (eq == 0) break;
            }
            mask = lt;
        }
        out[m] = mask;
    }
}

// One thread per clause of every bank: whether it sits this example out, and for the banks the
// example needs (the shared pool; every class bank under focused sampling; else the target's and
// the uniform negative's), its training-time output (AND of the included literals: an empty
// clause outputs 1, a dropped one 0), added with its weight to the class sums.
// sums: [n_classes] zero on entry (tsetlin_train_pick zeroes it again after reading).
__global__ void tsetlin_train_evaluate(const u64* __restrict__ docs, i64 fw, i64 n_features,
                                       const i64* __restrict__ y, const i64* __restrict__ order,
                                       i64 step, const u64* __restrict__ action, i64 lw,
                                       const int* __restrict__ weights, i64 n_classes,
                                       i64 clauses, i64 banks, int flags, u64 seed, u64 epoch,
                                       u64 drop_num, unsigned char* __restrict__ outputs,
                                       unsigned char* __restrict__ dropped,
                                       unsigned long long* __restrict__ sums) {
    const i64 g = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= banks * clauses) return;
    const i64 ex = order[step];
    const i64 target = y[ex];
    const u64 root = tsetlin_stream_root(seed);
    const u64 example_key = tsetlin_stream_step(tsetlin_stream_step(root, epoch), (u64)ex);

    bool is_dropped = false;
    if (drop_num > 0) {
        const u64 prefix = tsetlin_stream_step(example_key, TSETLIN_ROLE_DROP);
        is_dropped = tsetlin_below(tsetlin_stream_step(prefix, (u64)g), drop_num, 1ull << 32);
    }
    dropped[g] = is_dropped ? 1 : 0;

    const i64 bank = g / clauses;
    bool evaluated;
    if (flags & TSETLIN_COALESCED) {
        evaluated = true;
    } else if (flags & TSETLIN_FOCUSED) {
        evaluated = true;
    } else {
        const u64 pick = tsetlin_stream_step(example_key, TSETLIN_ROLE_PICK_NEGATIVE);
        evaluated = bank == target || bank == tsetlin_uniform_negative(pick, n_classes, target);
    }
    if (!evaluated) {
        outputs[g] = 0;
        return;
    }
    bool fires = !is_dropped;
    const u64* doc = docs + ex * fw;
    const u64* clause = action + g * lw;
    for (i64 w = 0; fires && w < lw; ++w) {
        if (clause[w] & ~tsetlin_literal(doc, w, fw, n_features)) fires = false;
    }
    outputs[g] = fires ? 1 : 0;
    if (!fires) return;
    if (flags & TSETLIN_COALESCED) {
        for (i64 k = 0; k < n_classes; ++k) {
            const int w = weights[g * n_classes + k];
            if (w != 0) atomicAdd(sums + k, (unsigned long long)(long long)w);
        }
    } else {
        atomicAdd(sums + bank, (unsigned long long)(long long)weights[g]);
    }
}

// One thread: the negative class (uniform, or focused: drawn in proportion to (T + v) / 2T over
// the other classes, v the class sum clamped to [-T, T]), the two updates' probability
// numerators over 2T and stream prefixes; then zeroes the sums for the next example.
__global__ void tsetlin_train_pick(const i64* __restrict__ y, const i64* __restrict__ order,
                                   i64 step, i64 n_classes, i64 threshold, int flags, u64 seed,
                                   u64 epoch, unsigned long long* __restrict__ sums,
                                   u64* __restrict__ plan) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const i64 ex = order[step];
    const i64 target = y[ex];
    const i64 t = threshold;
    const u64 example_key =
        tsetlin_stream_step(tsetlin_stream_step(tsetlin_stream_root(seed), epoch), (u64)ex);
    const u64 pick = tsetlin_stream_step(example_key, TSETLIN_ROLE_PICK_NEGATIVE);
    const i64 uniform = tsetlin_uniform_negative(pick, n_classes, target);
    auto clamped = [&](i64 c) {
        const i64 v = (i64)sums[c];
        return v < -t ? -t : (v > t ? t : v);
    };
    i64 negative = uniform;
    if (flags & TSETLIN_FOCUSED) {
        u64 total = 0;
        for (i64 c = 0; c < n_classes; ++c) {
            if (c != target) total += (u64)(t + clamped(c));
        }
        if (total != 0) {
            u64 r = tsetlin_mulhi(tsetlin_mix64(pick), total);
            for (i64 c = 0; c < n_classes; ++c) {
                if (c == target) continue;
                const u64 chance = (u64)(t + clamped(c));
                if (r < chance) {
                    negative = c;
                    break;
                }
                r -= chance;
            }
        }
    }
    plan[TSETLIN_PLAN_TARGET] = (u64)target;
    plan[TSETLIN_PLAN_NEGATIVE] = (u64)negative;
    plan[TSETLIN_PLAN_NUM_TARGET] = (u64)(t - clamped(target));
    plan[TSETLIN_PLAN_NUM_NEGATIVE] = (u64)(t + clamped(negative));
    plan[TSETLIN_PLAN_PREFIX_TARGET] = tsetlin_stream_step(
        tsetlin_stream_step(example_key, TSETLIN_ROLE_TARGET), (u64)target);
    plan[TSETLIN_PLAN_PREFIX_NEGATIVE] = tsetlin_stream_step(
        tsetlin_stream_step(example_key, TSETLIN_ROLE_NEGATIVE), (u64)negative);
    for (i64 c = 0; c < n_classes; ++c) sums[c] = 0;
}

// Add 1 (saturating at the top state) to the automata of one word selected by `mask`.
__device__ __forceinline__ void tsetlin_increment(u64* low, i64 planes, u64* act, u64 mask) {
    u64 saturated = *act;
    for (i64 k = 0; k < planes; ++k) saturated &= low[k];
    u64 carry = mask & ~saturated;
    if (carry == 0) return;
    for (i64 k = 0; k < planes; ++k) {
        const u64 old = low[k];
        low[k] = old ^ carry;
        carry &= old;
    }
    const u64 old = *act;
    *act = old ^ carry;
    carry &= old;
    if (carry != 0) {
        *act |= carry;
        for (i64 k = 0; k < planes; ++k) low[k] |= carry;
    }
}

// Subtract 1 (saturating at state 0) from the automata of one word selected by `mask`.
__device__ __forceinline__ void tsetlin_decrement(u64* low, i64 planes, u64* act, u64 mask) {
    u64 nonzero = *act;
    for (i64 k = 0; k < planes; ++k) nonzero |= low[k];
    u64 borrow = mask & nonzero;
    if (borrow == 0) return;
    for (i64 k = 0; k < planes; ++k) {
        const u64 old = low[k];
        low[k] = old ^ borrow;
        borrow &= ~old;
    }
    const u64 old = *act;
    *act = old ^ borrow;
    borrow &= ~old;
    if (borrow != 0) {
        *act &= ~borrow;
        for (i64 k = 0; k < planes; ++k) low[k] &= ~borrow;
    }
}

// Automata of one word whose state is at most `a` (an exclude state): a bit-sliced comparison,
// most significant plane first.
__device__ __forceinline__ u64 tsetlin_at_most(u64 act, const u64* low, i64 planes, i64 a) {
    u64 less = 0, equal = ~act;
    for (i64 k = planes - 1; k >= 0; --k) {
        const u64 x = low[k];
        if ((a >> k) & 1) {
            less |= equal & ~x;
            equal &= x;
        } else {
            equal &= ~x;
        }
    }
    return less | equal;
}

// Automata of one word at the last exclude state.
__device__ __forceinline__ u64 tsetlin_at_edge(u64 act, const u64* low, i64 planes) {
    u64 edge = ~act;
    for (i64 k = 0; k < planes; ++k) edge &= low[k];
    return edge;
}

// The literal budget: of the automata in `up` about to cross into "include", keep the lowest
// `left` (in bit order); the others are not rewarded.
__device__ __forceinline__ u64 tsetlin_limit_new_includes(u64 up, u64 at_edge, i64* left) {
    u64 crossing = up & at_edge;
    const i64 n = (i64)tsetlin_popcount(crossing);
    if (n <= *left) {
        *left -= n;
        return up;
    }
    u64 kept = 0;
    for (i64 i = 0; i < *left; ++i) {
        const u64 lowest = crossing & (0 - crossing);
        kept |= lowest;
        crossing ^= lowest;
    }
    *left = 0;
    return up & ~(up & at_edge & ~kept);
}

// The literal limits on a word's automata about to step up: the negation cap first (on words
// of negations), then the clause's literal budget, on what is left.
__device__ __forceinline__ u64 tsetlin_limit_includes(u64 up, u64 act, const u64* low, i64 planes,
                                                      bool capped, i64* negated_left,
                                                      bool budgeted, i64* left) {
    if (!capped && !budgeted) return up;
    const u64 edge = tsetlin_at_edge(act, low, planes);
    if (capped) up = tsetlin_limit_new_includes(up, edge, negated_left);
    if (budgeted) up = tsetlin_limit_new_includes(up, edge, left);
    return up;
}

// Type I (fired: reward the present literals, forget the absent ones; not fired: forget all) or
// Type II (fired: push the absent, excluded literals towards include) on one clause.
__device__ void tsetlin_clause_feedback(bool type_one, bool fired, u64* action, u64* lower,
                                        const u64* doc, i64 fw, i64 n_features, i64 lw,
                                        i64 planes, int flags, i64 max_included,
                                        i64 max_negated, i64 absorbing,
                                        const u64* forget_pool, const u64* reward_pool,
                                        u64 cursor_key) {
    if (!type_one && !fired) return;
    const u64 g = tsetlin_mix64(cursor_key ^ TSETLIN_ROLE_MASKS);
    const u64 offset = g & (TSETLIN_POOL_WORDS - 1);
    const unsigned rotation = (unsigned)(g >> 58);
    // The budget counts the literals included before this update.
    bool budgeted = max_included > 0;
    i64 left = 0;
    if (budgeted) {
        i64 included = 0;
        for (i64 w = 0; w < lw; ++w) included += (i64)tsetlin_popcount(action[w]);
        left = included >= max_included ? 0 : max_included - included;
    }
    bool capped = max_negated > 0;
    i64 negated_left = 0;
    if (capped) {
        i64 negated = 0;
        for (i64 w = fw; w < lw; ++w) negated += (i64)tsetlin_popcount(action[w]);
        negated_left = negated >= max_negated ? 0 : max_negated - negated;
    }
    u64 low[TSETLIN_MAX_PLANES];
    for (i64 w = 0; w < lw; ++w) {
        // Negations never move when clauses take present features only.
        const u64 valid = (w >= fw && (flags & TSETLIN_POSITIVE_ONLY)) ? 0
                          : tsetlin_valid_word(w % fw, fw, n_features);
        const u64 lit = tsetlin_literal(doc, w, fw, n_features);
        u64* act = action + w;
        u64* cells = lower + w * planes;
        if (type_one) {
            const u64 forget = tsetlin_rotl(forget_pool[(offset + w) & (TSETLIN_POOL_WORDS - 1)],
                                            rotation);
            for (i64 k = 0; k < planes; ++k) low[k] = cells[k];
            if (fired) {
                u64 up = lit & valid;
                if (!(flags & TSETLIN_BOOST)) {
                    up &= tsetlin_rotl(reward_pool[(offset + w) & (TSETLIN_POOL_WORDS - 1)],
                                       rotation);
                }
                if (absorbing >= 0) up &= ~tsetlin_at_most(*act, low, planes, absorbing);
                up = tsetlin_limit_includes(up, *act, low, planes, capped && w >= fw, &negated_left,
                                            budgeted, &left);
                if (up != 0) tsetlin_increment(low, planes, act, up);
                const u64 down = ~lit & valid & forget;
                if (down != 0) tsetlin_decrement(low, planes, act, down);
            } else {
                const u64 down = valid & forget;
                if (down != 0) tsetlin_decrement(low, planes, act, down);
            }
            for (i64 k = 0; k < planes; ++k) cells[k] = low[k];
        } else {
            u64 up = ~lit & ~*act & valid;
            if (up == 0) continue;
            for (i64 k = 0; k < planes; ++k) low[k] = cells[k];
            if (absorbing >= 0) up &= ~tsetlin_at_most(*act, low, planes, absorbing);
            up = tsetlin_limit_includes(up, *act, low, planes, capped && w >= fw, &negated_left,
                                        budgeted, &left);
            if (up != 0) {
                tsetlin_increment(low, planes, act, up);
                for (i64 k = 0; k < planes; ++k) cells[k] = low[k];
            }
        }
    }
}

// One thread per updated clause: per-class machine, x covers the target's bank then the
// negative's (2 * clauses threads); coalesced, the shared pool (clauses threads), each clause
// taking the target's update then the negative's. A clause is updated with probability
// num / 2T drawn from its own key; the feedback type follows the clause's polarity (per-class)
// or the sign of the updated class's weight (coalesced).
__global__ void tsetlin_train_feedback(const u64* __restrict__ docs, i64 fw, i64 n_features,
                                       const i64* __restrict__ order, i64 step,
                                       const u64* __restrict__ plan, u64* __restrict__ action,
                                       u64* __restrict__ lower, int* __restrict__ weights, i64 lw,
                                       i64 planes, i64 n_classes, i64 clauses, int flags,
                                       i64 max_included, i64 max_negated, i64 absorbing,
                                       i64 threshold,
                                       const u64* __restrict__ forget_pool,
                                       const u64* __restrict__ reward_pool,
                                       const unsigned char* __restrict__ outputs,
                                       const unsigned char* __restrict__ dropped) {
    const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const bool coalesced = (flags & TSETLIN_COALESCED) != 0;
    if (tid >= (coalesced ? clauses : 2 * clauses)) return;
    const u64* doc = docs + order[step] * fw;
    const u64 den = 2 * (u64)threshold;
    const i64 classes[2] = {(i64)plan[TSETLIN_PLAN_TARGET], (i64)plan[TSETLIN_PLAN_NEGATIVE]};
    const u64 nums[2] = {plan[TSETLIN_PLAN_NUM_TARGET], plan[TSETLIN_PLAN_NUM_NEGATIVE]};
    const u64 prefixes[2] = {plan[TSETLIN_PLAN_PREFIX_TARGET], plan[TSETLIN_PLAN_PREFIX_NEGATIVE]};
    const bool weighted = (flags & TSETLIN_WEIGHTED) != 0;

    if (coalesced) {
        const i64 c = tid;
        if (dropped[c]) return;
        const bool fired = outputs[c] != 0;
        for (int which = 0; which < 2; ++which) {
            const u64 h = tsetlin_stream_step(prefixes[which], (u64)c);
            if (nums[which] == 0 || !tsetlin_below(h, nums[which], den)) continue;
            int* w = weights + c * n_classes + classes[which];
            const bool positive = *w >= 0;
            const bool type_one = positive == (which == 0);
            tsetlin_clause_feedback(type_one, fired, action + c * lw, lower + c * lw * planes,
                                    doc, fw, n_features, lw, planes, flags, max_included,
                                    max_negated, absorbing, forget_pool, reward_pool, h);
            if (fired && weighted) {
                if (which == 0) {
                    if (*w != 2147483647) *w += 1;
                } else {
                    if (*w != -2147483647 - 1) *w -= 1;
                }
            }
        }
        return;
    }

    const int which = tid < clauses ? 0 : 1;
    const i64 c = tid - which * clauses;
    const i64 g = classes[which] * clauses + c;
    if (nums[which] == 0 || dropped[g]) return;
    const u64 h = tsetlin_stream_step(prefixes[which], (u64)c);
    if (!tsetlin_below(h, nums[which], den)) return;
    const bool fired = outputs[g] != 0;
    int* w = weights + g;
    const bool positive = *w > 0;
    const bool type_one = positive == (which == 0);
    tsetlin_clause_feedback(type_one, fired, action + g * lw, lower + g * lw * planes, doc, fw,
                            n_features, lw, planes, flags, max_included, max_negated, absorbing,
                            forget_pool, reward_pool, h);
    if (fired && weighted) {
        const int magnitude_now = *w < 0 ? -*w : *w;
        int magnitude;
        if (type_one) {
            magnitude = magnitude_now == 2147483647 ? magnitude_now : magnitude_now + 1;
        } else {
            magnitude = magnitude_now - 1 > 1 ? magnitude_now - 1 : 1;
        }
        *w = positive ? magnitude : -magnitude;
    }
}
