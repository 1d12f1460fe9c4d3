"""Real-data accuracy of the Tsetlin Machine against scikit-learn baselines on the same features.

Protocol (Berge et al. 2019 features): CountVectorizer(binary=True, ngram_range=(1, 2),
min_df=10) fitted on the training split, SelectKBest(chi2, k=5000) on the training split,
the same binary matrix for every model. The data lives in ../shared/data (or
FASTCORE_AD_DATA); the script exits with a message when it is absent.

    .venv/bin/python bench/realdata_tsetlin.py imdb --clauses 1000 --threshold 400 --s 5 --epochs 3
    .venv/bin/python bench/realdata_tsetlin.py 20newsgroups --coalesced --clauses 2000 ...
"""

import argparse
import gzip
import json
import os
import sys
import time

import numpy as np


def data_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.environ.get("FASTCORE_AD_DATA") or os.path.join(here, "..", "..", "shared", "data")
    return path if os.path.isdir(path) else None


def load(name, split):
    path = os.path.join(data_dir(), name, f"{split}.jsonl.gz")
    texts, labels = [], []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(row["label"])
    return texts, np.array(labels)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", choices=["imdb", "20newsgroups"])
    parser.add_argument("--clauses", type=int, default=1000)
    parser.add_argument("--threshold", type=int, default=400)
    parser.add_argument("--s", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--drop", type=float, default=0.0)
    parser.add_argument("--coalesced", action="store_true")
    parser.add_argument("--train-docs", type=int, default=0, help="use only the first N training documents (0: all)")
    args = parser.parse_args()
    if data_dir() is None:
        sys.exit("no ../shared/data (set FASTCORE_AD_DATA): skipped")

    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.feature_selection import SelectKBest, chi2
    from sklearn.metrics import f1_score
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.svm import LinearSVC

    from fastcore_ad import TsetlinMachine

    tr_text, ytr = load(args.dataset, "train")
    te_text, yte = load(args.dataset, "test")
    if args.train_docs:
        order = np.random.default_rng(0).permutation(len(tr_text))[: args.train_docs]
        tr_text, ytr = [tr_text[i] for i in order], ytr[order]
    t = time.perf_counter()
    vec = CountVectorizer(binary=True, ngram_range=(1, 2), min_df=10)
    Xtr = vec.fit_transform(tr_text)
    sel = SelectKBest(chi2, k=min(5000, Xtr.shape[1])).fit(Xtr, ytr)
    Xtr, Xte = sel.transform(Xtr).tocsr(), sel.transform(vec.transform(te_text)).tocsr()
    print(f"{args.dataset}: {Xtr.shape[0]} train / {Xte.shape[0]} test docs, {Xtr.shape[1]} features, "
          f"density {Xtr.nnz / np.prod(Xtr.shape):.4f}, features in {time.perf_counter() - t:.1f} s", flush=True)

    def report(name, pred, seconds):
        acc = float(np.mean(pred == yte))
        f1 = f1_score(yte, pred, average="macro")
        print(f"| {name} | {acc:.4f} | {f1:.4f} | {seconds:.1f} |", flush=True)

    for name, model in [("MultinomialNB", MultinomialNB()), ("LinearSVC", LinearSVC(C=0.1))]:
        t = time.perf_counter()
        model.fit(Xtr, ytr)
        report(name, model.predict(Xte), time.perf_counter() - t)

    tm = TsetlinMachine(args.clauses, args.threshold, args.s, clause_drop_p=args.drop, coalesced=args.coalesced, seed=1)
    t = time.perf_counter()
    tm.fit(Xtr, ytr, epochs=args.epochs, validation_data=(Xte, yte), progress_bar=False)
    secs = time.perf_counter() - t
    for h in tm.history_:
        print(f"  epoch {h['epoch']}: {h['seconds']:.1f} s, test accuracy {h['val_accuracy']:.4f}", flush=True)
    report(f"TsetlinMachine({args.clauses}, T={args.threshold}, s={args.s}, coalesced={args.coalesced}, "
           f"{args.epochs} epochs)", tm.predict(Xte), secs)


if __name__ == "__main__":
    main()
