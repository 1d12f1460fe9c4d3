"""Real-data accuracy of the Tsetlin Machine against scikit-learn baselines on the same features.

Protocol (Berge et al. 2019 features): CountVectorizer(binary=True, ngram_range=(1, 2),
min_df=10) fitted on the training split, SelectKBest(chi2, k=5000) on the training split,
the same binary matrix for every model. The data lives in ../shared/data (or
FASTCORE_AD_DATA); the script exits with a message when it is absent.

    .venv/bin/python bench/realdata_tsetlin.py imdb --clauses 1000 --threshold 400 --s 5 --epochs 3
    .venv/bin/python bench/realdata_tsetlin.py 20newsgroups --coalesced --clauses 2000 ...
    .venv/bin/python bench/realdata_tsetlin.py ohsumed --rules 3 ...
    .venv/bin/python bench/realdata_tsetlin.py mtsamples --rules 3 ...

MTSamples has no official split, and most notes appear twice in it (under a document type such
as "Surgery" or "Consult - History and Phy." and under their specialty). Protocol: distinct
transcriptions, labelled by their one specialty outside the document types (notes with two
specialties dropped), specialties with at least 20 such notes (17), stratified 75/25 split,
seed 0.
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


# Document-type categories of MTSamples: most notes appear twice, once under one of these and
# once under their medical specialty, so they are not used as labels.
DOCUMENT_TYPES = {"Surgery", "Consult - History and Phy.", "SOAP / Chart / Progress Notes", "Discharge Summary",
                  "Letters", "Office Notes", "Emergency Room Reports", "IME-QME-Work Comp etc.", "General Medicine"}


def load_mtsamples(min_notes=20):
    from sklearn.model_selection import train_test_split

    path = os.path.join(data_dir(), "mtsamples", "mtsamples.jsonl.gz")
    specialties = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for row in map(json.loads, fh):
            if row["transcription"]:
                text = row["transcription"].strip()
                specialties.setdefault(text, set()).add(row["medical_specialty"].strip())
    # One row per distinct note; its label is its one specialty outside the document types.
    notes = [(t, next(iter(s - DOCUMENT_TYPES))) for t, s in specialties.items() if len(s - DOCUMENT_TYPES) == 1]
    names, counts = np.unique([label for _, label in notes], return_counts=True)
    kept = set(names[counts >= min_notes])
    notes = [(t, label) for t, label in notes if label in kept]
    texts = [t for t, _ in notes]
    labels = np.array([label for _, label in notes])
    tr_text, te_text, ytr, yte = train_test_split(texts, labels, test_size=0.25, stratify=labels, random_state=0)
    return (tr_text, ytr), (te_text, yte)


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
    parser.add_argument("dataset", choices=["imdb", "20newsgroups", "ohsumed", "mtsamples"])
    parser.add_argument("--clauses", type=int, default=1000)
    parser.add_argument("--threshold", type=int, default=400)
    parser.add_argument("--s", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--drop", type=float, default=0.0)
    parser.add_argument("--coalesced", action="store_true")
    parser.add_argument("--max-literals", type=int, default=0, help="max_included_literals (0: no budget)")
    parser.add_argument("--rules", type=int, default=0, help="print the N heaviest rules of every class")
    parser.add_argument("--forest", action="store_true", help="add a RandomForest baseline")
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

    if args.dataset == "mtsamples":
        (tr_text, ytr), (te_text, yte) = load_mtsamples()
    else:
        tr_text, ytr = load(args.dataset, "train")
        te_text, yte = load(args.dataset, "test")
    class_names = None
    if args.dataset == "ohsumed":
        path = os.path.join(data_dir(), "ohsumed", "train.jsonl.gz")
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            named = {r["label"]: r["label_name"] for r in map(json.loads, fh)}
        class_names = [named[c] for c in sorted(named)]
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

    baselines = [("MultinomialNB", MultinomialNB()), ("LinearSVC", LinearSVC(C=0.1))]
    if args.forest:
        from sklearn.ensemble import RandomForestClassifier

        baselines.append(("RandomForest(300 trees)", RandomForestClassifier(300, n_jobs=2, random_state=0)))
    for name, model in baselines:
        t = time.perf_counter()
        model.fit(Xtr, ytr)
        report(name, model.predict(Xte), time.perf_counter() - t)

    tm = TsetlinMachine(args.clauses, args.threshold, args.s, clause_drop_p=args.drop, coalesced=args.coalesced,
                        max_included_literals=args.max_literals or None, seed=1)
    # One epoch per call (partial_fit continues exactly like fit), so progress shows as it goes.
    secs = 0.0
    for epoch in range(1, args.epochs + 1):
        t = time.perf_counter()
        tm.partial_fit(Xtr, ytr, classes=np.unique(ytr))
        secs += time.perf_counter() - t
        print(f"  epoch {epoch}: {time.perf_counter() - t:.1f} s, test accuracy {tm.score(Xte, yte):.4f}", flush=True)
    report(f"TsetlinMachine({args.clauses}, T={args.threshold}, s={args.s}, coalesced={args.coalesced}, "
           f"drop={args.drop}, max_literals={args.max_literals}, {args.epochs} epochs)", tm.predict(Xte), secs)
    if args.rules:
        words = sel.get_feature_names_out(vec.get_feature_names_out())
        rules = tm.rules(feature_names=words, class_names=class_names)
        for label in tm.classes_:
            mine = [r for r in rules if r.class_label == label and r.weight > 0][: args.rules]
            for r in mine:
                print(f"  {r}", flush=True)


if __name__ == "__main__":
    main()
