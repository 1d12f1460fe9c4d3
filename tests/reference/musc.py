"""Plain numpy MuSc (Li et al., ICLR 2024), written from the method's description.

Full distance matrices, float64 throughout: slow and obviously correct, the oracle of the
tests. Steps: LNAMD, mutual scoring, mean over (layer, degree), image score = max, RsCIN,
bilinear (align_corners=True) upsampling.
"""

from __future__ import annotations

import numpy as np


def lnamd(features, r):
    """features [N, H, W, C] -> [N, H, W, C]."""
    x = np.asarray(features, dtype=np.float64)
    n, h, w, c = x.shape
    out = np.empty_like(x)
    pad = (r - 1) // 2
    for i in range(n):
        m = x[i]
        standard = (m - m.mean()) / np.sqrt(m.var() + 1e-5)
        padded = np.zeros((h + 2 * pad, w + 2 * pad, c))
        padded[pad:pad + h, pad:pad + w] = standard
        boxed = np.zeros((h, w, c))
        for y in range(h):
            for xx in range(w):
                boxed[y, xx] = padded[y:y + r, xx:xx + r].sum(axis=(0, 1)) / (r * r)
        norms = np.sqrt((boxed ** 2).sum(axis=-1, keepdims=True))
        out[i] = boxed / np.maximum(norms, 1e-12)
    return out


def nearest_distances(a, b):
    """[Pa] distances from each row of a to its nearest row of b (full distance matrix)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))
    return d.min(axis=1)


def top_k(references, top_ratio):
    return max(1, int(references * top_ratio))


def mutual_scores(patches, top_ratio=0.3):
    """patches [N, P, C] -> [N, P]."""
    z = np.asarray(patches, dtype=np.float64)
    n, p, _ = z.shape
    k = top_k(n - 1, top_ratio)
    out = np.zeros((n, p))
    for i in range(n):
        per_image = np.stack([nearest_distances(z[i], z[j]) for j in range(n) if j != i], axis=1)
        out[i] = np.sort(per_image, axis=1)[:, :k].mean(axis=1)
    return out


def scores_against_bank(queries, bank, top_ratio=0.3):
    q = np.asarray(queries, dtype=np.float64)
    b = np.asarray(bank, dtype=np.float64)
    k = top_k(b.shape[0], top_ratio)
    out = np.zeros(q.shape[:2])
    for i in range(q.shape[0]):
        per_image = np.stack([nearest_distances(q[i], b[j]) for j in range(b.shape[0])], axis=1)
        out[i] = np.sort(per_image, axis=1)[:, :k].mean(axis=1)
    return out


def rscin(image_scores, embeddings, k_list=(1, 2, 3)):
    s = np.asarray(image_scores, dtype=np.float64)
    span = s.max() - s.min()
    s = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    f = np.asarray(embeddings, dtype=np.float64)
    f = f / np.abs(f).max(axis=1, keepdims=True)  # unit rows at any scale
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    w = f @ f.T
    n = len(s)
    results = []
    for k in k_list:
        k = min(k, n)
        wk = np.zeros_like(w)
        for i in range(n):
            order = sorted(range(n), key=lambda j: (-w[i, j], j))[:k]
            wk[i, order] = np.maximum(w[i, order], 0.0)  # anti-similar images weigh nothing
        wk = wk / wk.sum(axis=1, keepdims=True)
        results.append(wk @ s)
    return np.mean(results, axis=0)


def musc(layers, degrees=(1, 3, 5), top_ratio=0.3, embeddings=None, k_list=(1, 2, 3)):
    """layers: list of [N, H, W, C]. Returns (image_scores [N], patch_scores [N, H, W])."""
    n, h, w, _ = layers[0].shape
    maps = []
    for layer in layers:
        for r in degrees:
            z = lnamd(layer, r).reshape(n, h * w, -1)
            maps.append(mutual_scores(z, top_ratio).reshape(n, h, w))
    patch = np.mean(maps, axis=0)
    image = patch.reshape(n, -1).max(axis=1)
    if embeddings is not None:
        image = rscin(image, embeddings, k_list)
    return image, patch


def bilinear_align_corners(maps, size):
    """[N, h, w] -> [N, H, W] bilinear with align_corners=True, one output pixel at a time."""
    maps = np.asarray(maps, dtype=np.float64)
    n, h, w = maps.shape
    out_h, out_w = size
    out = np.zeros((n, out_h, out_w))
    for y in range(out_h):
        sy = y * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
        y0 = int(np.floor(sy))
        y1 = min(y0 + 1, h - 1)
        fy = sy - y0
        for x in range(out_w):
            sx = x * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            x0 = int(np.floor(sx))
            x1 = min(x0 + 1, w - 1)
            fx = sx - x0
            out[:, y, x] = ((1 - fy) * (1 - fx) * maps[:, y0, x0] + (1 - fy) * fx * maps[:, y0, x1]
                            + fy * (1 - fx) * maps[:, y1, x0] + fy * fx * maps[:, y1, x1])
    return out
