"""Plain oracles for the Tsetlin Machine, written from the papers' definitions with one integer
state per automaton (no bit slicing, no bit packing, no threads).

- `clause_outputs` / `class_sums`: a clause is the AND of its included literals (features, then
  negated features); an empty clause outputs 1 while training and 0 at prediction; a class sum
  is the sum of the signed weights of the clauses that output 1.
- `train`: online training (Granmo 2018) with Type I / Type II feedback, integer weights and the
  coalesced pool, drawing its random numbers from the same counter-based stream as the library
  (a keyed SplitMix64 hash of (seed, epoch, example, role, class, clause); per epoch a table
  of 64-literal Bernoulli masks from wyrand generators, read by each updated clause at an
  offset and rotation drawn from its key), so the two must agree bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

M64 = (1 << 64) - 1
ROLE_TARGET, ROLE_NEGATIVE, ROLE_PICK, ROLE_DROP, ROLE_INIT, ROLE_MASKS, ROLE_POOL = 1, 2, 3, 4, 5, 6, 7
POOL_WORDS, POOL_CHUNK = 1 << 15, 256


def literals(X):
    """[n, 2f] bool: the features followed by their negations."""
    X = np.asarray(X, dtype=bool)
    return np.concatenate([X, ~X], axis=1)


def clause_outputs(include, X, training=False):
    """include: [clauses, 2f] bool. Returns [n, clauses] uint8."""
    lit = literals(X)
    violated = include[None, :, :] & ~lit[:, None, :]
    out = ~violated.any(axis=2)
    if not training:
        out &= include.any(axis=1)[None, :]
    return out.astype(np.uint8)


def class_sums(include, weights, X, coalesced):
    """include: [banks, clauses, 2f]; weights: [classes, clauses] (per-class) or
    [clauses, classes] (coalesced). Returns [n, classes] int64."""
    if coalesced:
        out = clause_outputs(include[0], X).astype(np.int64)
        return out @ weights.astype(np.int64)
    return np.stack([clause_outputs(include[k], X).astype(np.int64) @ weights[k].astype(np.int64)
                     for k in range(weights.shape[0])], axis=1)


# -- the random stream --------------------------------------------------------------------------


def mix64(z):
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def stream_key(seed, parts):
    h = mix64(seed ^ 0x5851F42D4C957F2D)
    for p in parts:
        h = mix64(h ^ ((p * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & M64))
    return h


def below(h, num, den):
    return (h >> 11) * den < (num << 53)


def threshold32(p):
    return int(math.floor(min(max(p, 0.0), 1.0) * 2**32 + 0.5))


class Wy:
    def __init__(self, state):
        self.s = state & M64

    def next(self):
        self.s = (self.s + 0xA0761D6478BD642F) & M64
        t = self.s * (self.s ^ 0xE7037ED1A0B428DB)
        return ((t >> 64) ^ t) & M64

    def bernoulli_mask(self, t):
        """64 lanes, each 1 iff a uniform 32-bit number (bits drawn most significant first) < t."""
        if t >= 1 << 32:
            return M64
        if t == 0:
            return 0
        lt, eq = 0, M64
        for bit in range(31, -1, -1):
            r = self.next()
            if (t >> bit) & 1:
                lt |= eq & ~r & M64
                eq &= r
            else:
                eq &= ~r & M64
            if eq == 0:
                break
        return lt


def mask_pool(seed, epoch, kind, t):
    """The epoch's table of Bernoulli(t / 2^32) masks: chunk i from Wy(stream_key(seed, epoch, POOL, kind, i))."""
    pool = []
    for i in range(POOL_WORDS // POOL_CHUNK):
        rng = Wy(stream_key(seed, [epoch, ROLE_POOL, kind, i]))
        pool.extend(rng.bernoulli_mask(t) for _ in range(POOL_CHUNK))
    return pool


class Cursor:
    """An updated clause reads the mask of literal word w at pool[(offset + w) % size], rotated."""

    def __init__(self, h):
        g = mix64(h ^ ROLE_MASKS)
        self.offset, self.rotation = g & (POOL_WORDS - 1), g >> 58

    def mask(self, pool, w):
        m = pool[(self.offset + w) & (POOL_WORDS - 1)]
        r = self.rotation
        return ((m << r) | (m >> (64 - r))) & M64 if r else m


# -- training -----------------------------------------------------------------------------------


class Machine:
    """Integer automaton states ``state[bank, clause, literal]`` in [0, 2^b), literal index
    in the padded layout: feature j at j, its negation at fw*64 + j."""

    def __init__(self, n_features, n_classes, n_clauses, *, state_bits=8, threshold=10, specificity=3.0,
                 weighted=True, boost=True, focused=True, clause_drop_p=0.0, coalesced=False, seed=0,
                 absorbing=None, negated_literals=True):
        self.f, self.k, self.c = n_features, n_classes, n_clauses
        # States at or below `absorbing` never go up again (None: none absorb).
        self.absorbing = -1 if absorbing is None else absorbing
        self.b, self.t, self.s = state_bits, threshold, specificity
        self.weighted, self.boost, self.focused, self.coalesced, self.seed = weighted, boost, focused, coalesced, seed
        self.fw = (n_features + 63) // 64
        self.lw = 2 * self.fw
        self.banks = 1 if coalesced else n_classes
        self.drop_num = int(round(clause_drop_p * 2**32))
        half = 1 << (state_bits - 1)
        self.state = np.zeros((self.banks, n_clauses, self.lw * 64), dtype=np.int64)
        self.valid = np.zeros(self.lw * 64, dtype=bool)
        self.valid[:n_features] = True
        self.valid[self.fw * 64: self.fw * 64 + n_features] = True
        self.state[:, :, self.valid] = half - 1
        # The automata feedback may move: without negated literals, the negations stay put.
        self.learnable = self.valid.copy()
        if not negated_literals:
            self.learnable[self.fw * 64:] = False
        if coalesced:
            self.weights = np.array([[1 if stream_key(seed, [ROLE_INIT, k, c]) >> 63 == 0 else -1
                                      for k in range(n_classes)] for c in range(n_clauses)], dtype=np.int64)
        else:
            self.weights = np.array([[1 if c % 2 == 0 else -1 for c in range(n_clauses)]
                                     for _ in range(n_classes)], dtype=np.int64)

    def include(self):
        """[banks, clauses, 2f] bool in the unpadded literal order (features, negations)."""
        inc = self.state >= (1 << (self.b - 1))
        return np.concatenate([inc[:, :, :self.f], inc[:, :, self.fw * 64: self.fw * 64 + self.f]], axis=2)

    def _literal_bits(self, x):
        lit = np.zeros(self.lw * 64, dtype=bool)
        lit[:self.f] = x
        lit[self.fw * 64: self.fw * 64 + self.f] = ~x
        return lit

    def _apply(self, bank, c, type_one, fired, lit, cursor):
        st = self.state[bank, c]
        top = (1 << self.b) - 1
        half = 1 << (self.b - 1)
        for w in range(self.lw):
            sl = slice(w * 64, (w + 1) * 64)
            valid, lw_bits = self.learnable[sl], lit[sl]
            if type_one:
                if fired:
                    up = lw_bits & valid & (st[sl] > self.absorbing)
                    if not self.boost:
                        up &= _bits(cursor.mask(self.reward_pool, w))
                    st[sl][up] = np.minimum(st[sl][up] + 1, top)
                    cand = ~lw_bits & valid
                    if cand.any():
                        down = cand & _bits(cursor.mask(self.forget_pool, w))
                        st[sl][down] = np.maximum(st[sl][down] - 1, 0)
                else:
                    down = valid & _bits(cursor.mask(self.forget_pool, w))
                    st[sl][down] = np.maximum(st[sl][down] - 1, 0)
            elif fired:
                up = ~lw_bits & (st[sl] < half) & valid & (st[sl] > self.absorbing)
                st[sl][up] = st[sl][up] + 1

    def train(self, X, y, order, epoch):
        X = np.asarray(X, dtype=bool)
        t, k, C = self.t, self.k, self.c
        self.forget_pool = mask_pool(self.seed, epoch, 0, threshold32(1.0 / self.s))
        self.reward_pool = None if self.boost else mask_pool(self.seed, epoch, 1, threshold32(1.0 - 1.0 / self.s))
        for ex in order:
            ex = int(ex)
            target = int(y[ex])
            lit = self._literal_bits(X[ex])
            inc = self.state >= (1 << (self.b - 1))
            dropped = np.array([below(stream_key(self.seed, [epoch, ex, ROLE_DROP, i]), self.drop_num, 1 << 32)
                                if self.drop_num else False for i in range(self.banks * C)]).reshape(self.banks, C)
            fired = (~(inc & ~lit[None, None, :]).any(axis=2)) & ~dropped
            pick = stream_key(self.seed, [epoch, ex, ROLE_PICK])
            r = (pick * (k - 1)) >> 64
            uniform_negative = r + 1 if r >= target else r
            if self.coalesced:
                sums = fired[0].astype(np.int64) @ self.weights
            else:
                evaluated = set(range(k)) if self.focused else {target, uniform_negative}
                sums = np.array([int(fired[j].astype(np.int64) @ self.weights[j]) if j in evaluated else 0
                                 for j in range(k)])
            v = np.clip(sums, -t, t)
            negative = uniform_negative
            if self.focused:
                others = [j for j in range(k) if j != target]
                total = sum(int(t + v[j]) for j in others)
                if total > 0:
                    rr = (mix64(pick) * total) >> 64
                    for j in others:
                        wgt = int(t + v[j])
                        if rr < wgt:
                            negative = j
                            break
                        rr -= wgt
            updates = [(target, int(t - v[target]), ROLE_TARGET), (negative, int(t + v[negative]), ROLE_NEGATIVE)]
            den = 2 * t
            if self.coalesced:
                for c in range(C):
                    if dropped[0, c]:
                        continue
                    out = bool(fired[0, c])
                    for cls, num, role in updates:
                        h = stream_key(self.seed, [epoch, ex, role, cls, c])
                        if num == 0 or not below(h, num, den):
                            continue
                        cursor = Cursor(h)
                        positive = self.weights[c, cls] >= 0
                        self._apply(0, c, positive == (role == ROLE_TARGET), out, lit, cursor)
                        if out and self.weighted:
                            self.weights[c, cls] += 1 if role == ROLE_TARGET else -1
            else:
                for cls, num, role in updates:
                    if num == 0:
                        continue
                    for c in range(C):
                        if dropped[cls, c]:
                            continue
                        h = stream_key(self.seed, [epoch, ex, role, cls, c])
                        if not below(h, num, den):
                            continue
                        cursor = Cursor(h)
                        out = bool(fired[cls, c])
                        w = self.weights[cls, c]
                        positive = w > 0
                        type_one = positive == (role == ROLE_TARGET)
                        self._apply(cls, c, type_one, out, lit, cursor)
                        if out and self.weighted:
                            mag = abs(w) + 1 if type_one else max(abs(w) - 1, 1)
                            self.weights[cls, c] = mag if positive else -mag


def _bits(mask):
    return np.array([(mask >> i) & 1 == 1 for i in range(64)], dtype=bool)


def states_from_planes(action, lower, state_bits):
    """Integer states [banks, clauses, lw*64] from the library's bit-sliced arrays."""
    banks, clauses, lw = action.shape
    act = np.unpackbits(action.astype("<u8").view(np.uint8), axis=-1, bitorder="little").reshape(banks, clauses, lw * 64)
    state = act.astype(np.int64) << (state_bits - 1)
    for p in range(state_bits - 1):
        plane = np.ascontiguousarray(lower[..., p])
        bits = np.unpackbits(plane.astype("<u8").view(np.uint8), axis=-1, bitorder="little").reshape(banks, clauses, lw * 64)
        state |= bits.astype(np.int64) << p
    return state
