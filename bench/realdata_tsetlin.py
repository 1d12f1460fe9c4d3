"""Real-text accuracy of the Tsetlin Machine beside scikit-learn baselines, on the same splits.

    python bench/realdata_tsetlin.py --dataset r8                # defaults: text_pipeline(seed=0)
    python bench/realdata_tsetlin.py --dataset r8 --positive-only --rules 3
    python bench/realdata_tsetlin.py --dataset 20ng --clauses 800 --threshold 640 --epochs 15

TM: ``text_pipeline(seed=0)`` (binary unigrams, plus bigrams from 20,000 training documents on,
seen in 2+ training documents, chi2-ranked vocabulary, machine sized from the data, early
stopping on a held-out 10% of the training split; from 20 classes on, one vote of three machines
per class, each class on the terms of the whole vocabulary significantly associated with it, with
count levels 1, 2, 4), or the settings given. Baselines, fitted on
the training split only: tf-idf (sublinear tf) uni+bigrams with min_df=2 into
``LinearSVC(C=1)`` and ``LogisticRegression(C=10)``; counts (uni+bigrams, min_df=2) into
``MultinomialNB(alpha=0.1)``. Printed: accuracy, macro-F1 and fit
seconds per model; with ``--cv K`` also the TM's K-fold cross-validated accuracy on the
training split (to choose a configuration without the test split); with ``--late-holdout F``
(20 Newsgroups) only the accuracy on the latest fraction F of each newsgroup's training
postings, the models fit on the rest (see ``latest_postings``); with ``--estimators M`` a vote
of M machines (``TsetlinEnsemble``, seeds seed, seed + 1, ...; ``--features-per-machine F``: each
on its own random fraction F of the vocabulary); with ``--rules N`` the N
heaviest rules of each class and the share of positive (present-word) literals among each
class's 10 heaviest rules; with ``--ceiling`` also linear models on the TM's own binary features
and on every binary word (a plain LinearSVC and an NB-scaled one, C picked by 3-fold CV on the
training split): what a linear model gets from word presence alone, beside the tf-idf baselines.

The data lives in ../shared/data (or FASTCORE_AD_DATA); the script exits with a message when it
is absent. MTSamples has no official split, and most notes appear twice in it (under a document
type such as "Surgery" or "Consult - History and Phy." and under their specialty). Protocol:
distinct transcriptions, labelled by their one specialty outside the document types (notes with
two specialties dropped), specialties with at least 20 such notes (17), stratified 75/25 split,
seed 0.
"""

import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

DATASETS = {"r8": "r8", "20ng": "20newsgroups", "20newsgroups": "20newsgroups", "ohsumed": "ohsumed",
            "mtsamples": "mtsamples", "imdb": "imdb"}


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


def latest_postings(fraction):
    """Mask over 20 Newsgroups' training split: per newsgroup, the ``fraction`` of its postings
    with the highest message numbers. A news server numbers a group's articles as they arrive,
    and the bydate test split holds later postings (most test numbers lie above most training
    numbers of their group), so these are the training postings nearest the test period. A
    shuffled held-out part ranks configurations differently from the test split on this corpus
    (bench/RESULTS.md); this one ranks them the same way."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--late-holdout: a fraction in (0, 1), got {fraction}")
    path = os.path.join(data_dir(), "20newsgroups", "train.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [(r["label"], r["id"]) for r in map(json.loads, fh)]
    labels, numbers = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    latest = np.zeros(len(rows), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep = max(1, int(round(fraction * len(members))))
        latest[members[np.argsort(numbers[members], kind="stable")[-keep:]]] = True
    return latest


def load_dataset(name):
    """((train_texts, train_labels), (test_texts, test_labels), class_names or None)."""
    folder = DATASETS[name]
    if folder == "mtsamples":
        return (*load_mtsamples(), None)
    train, test = load(folder, "train"), load(folder, "test")
    path = os.path.join(data_dir(), folder, "train.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        named = {r["label"]: r.get("label_name") for r in map(json.loads, fh)}
    names = None if None in named.values() else [named[c] for c in sorted(named)]
    return train, test, names


def epochs_kept(machines):
    """"8 of 11 epochs" per machine, or the ranges when there are many machines."""
    kept, run = [m.epochs_ for m in machines], [len(m.history_) for m in machines]
    if len(machines) <= 12:
        return f"{'/'.join(map(str, kept))} of {'/'.join(map(str, run))} epochs"
    return f"{min(kept)}-{max(kept)} of {min(run)}-{max(run)} epochs ({len(machines)} machines)"


def baselines(tr_text, ytr, te_text):
    """(name, predictions, seconds) of the three linear baselines."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.svm import LinearSVC

    out = []
    t = time.perf_counter()
    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    A, B = tfidf.fit_transform(tr_text), tfidf.transform(te_text)
    shared = time.perf_counter() - t
    for name, model in [("LinearSVC(C=1), tf-idf uni+bigrams", LinearSVC(C=1.0)),
                        ("LogisticRegression(C=10), tf-idf uni+bigrams", LogisticRegression(C=10.0, max_iter=3000))]:
        t = time.perf_counter()
        model.fit(A, ytr)
        out.append((name, model.predict(B), shared + time.perf_counter() - t))
    t = time.perf_counter()
    counts = CountVectorizer(ngram_range=(1, 2), min_df=2)
    nb = MultinomialNB(alpha=0.1).fit(counts.fit_transform(tr_text), ytr)
    out.append(("MultinomialNB(alpha=0.1), counts uni+bigrams", nb.predict(counts.transform(te_text)),
                time.perf_counter() - t))
    return out


class NBScaledSVC(BaseEstimator, ClassifierMixin):
    """NBSVM (Wang & Manning 2012) without interpolation: one-vs-rest LinearSVCs, each on the
    presence bits scaled by the log-count ratio of its class (add-one smoothing). Strong
    regularisation then keeps the model close to naive Bayes: what presence bits carry when the
    linear model is regularised towards word evidence rather than towards zero."""

    def __init__(self, C=0.01):
        self.C = C

    def fit(self, X, y):
        import scipy.sparse as sp
        from sklearn.svm import LinearSVC

        X = sp.csr_matrix(X, dtype=np.float64)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.models_ = []
        for label in self.classes_[1:] if len(self.classes_) == 2 else self.classes_:
            pos = y == label
            p = np.asarray(X[pos].sum(0)).ravel() + 1.0
            q = np.asarray(X[~pos].sum(0)).ravel() + 1.0
            ratio = sp.diags(np.log((p / p.sum()) / (q / q.sum())))
            self.models_.append((ratio, LinearSVC(C=self.C).fit(X @ ratio, pos)))
        return self

    def predict(self, X):
        import scipy.sparse as sp

        X = sp.csr_matrix(X, dtype=np.float64)
        scores = np.column_stack([svc.decision_function(X @ ratio) for ratio, svc in self.models_])
        if len(self.classes_) == 2:
            return self.classes_[(scores[:, 0] > 0).astype(int)]
        return self.classes_[scores.argmax(1)]


def binary_ceiling(tr_text, ytr, te_text, features):
    """(name, predictions, seconds) of linear models on presence-only features: the fitted
    vectorizer + selection of the TM (``features``) and every word seen in 2+ documents, each
    with a plain LinearSVC and with an NB-scaled one (``NBScaledSVC``); C by 3-fold CV."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import LinearSVC

    out = []
    every = CountVectorizer(binary=True, min_df=2)
    for name, transform, fit_transform in [("{} on the TM's {} binary terms", features.transform,
                                            features.transform),
                                           ("{} on every binary word ({})", every.transform,
                                            every.fit_transform)]:
        t = time.perf_counter()
        A = fit_transform(tr_text)
        B = transform(te_text)
        shared = time.perf_counter() - t
        for model_name, model, grid in [("LinearSVC", LinearSVC(), [0.01, 0.03, 0.1, 0.3]),
                                        ("NB-scaled LinearSVC", NBScaledSVC(), [0.001, 0.003, 0.01, 0.03, 0.1])]:
            t = time.perf_counter()
            search = GridSearchCV(model, {"C": grid}, cv=3, scoring="accuracy").fit(A, ytr)
            out.append((f"{name.format(model_name, A.shape[1])} (C={search.best_params_['C']:g} by 3-fold CV)",
                        search.predict(B), shared + time.perf_counter() - t))
    return out


def positive_share(rules, classes, top=10):
    """Share of present-word literals among the ``top`` heaviest positive rules of each class."""
    pos = total = 0
    for label in classes:
        for rule in [r for r in rules if r.class_label == label and r.weight > 0][:top]:
            pos += sum(not neg for _, neg in rule.literals)
            total += len(rule.literals)
    return pos / max(total, 1)


def per_class_rule(text):
    """--features-per-class: "auto", "none" or a count."""
    return None if text == "none" else text if text == "auto" else int(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--clauses", type=int, help="clauses per class (default: sized from the data)")
    parser.add_argument("--threshold", type=int, help="T (default: 0.8 x clauses)")
    parser.add_argument("--s", type=float, help="specificity (default 3)")
    parser.add_argument("--epochs", type=int, help="fixed epochs (default: early stopping)")
    parser.add_argument("--max-features", type=int, help="vocabulary size (default: sized from the data)")
    parser.add_argument("--ngram", type=int, help="longest n-gram of the TM's vocabulary (default: by corpus size)")
    parser.add_argument("--count-levels", default="auto",
                        help='bits "occurs at least c times", e.g. 1,2,4; none: presence; auto (default): '
                             '1,2,4 from 20 classes on, else presence')
    parser.add_argument("--coalesced", action="store_true")
    parser.add_argument("--positive-only", action="store_true", help="negated_literals=False")
    parser.add_argument("--max-literals", type=int, help="max_included_literals (default: no budget)")
    parser.add_argument("--max-negated", type=int, help="max_negated_literals (default: no cap)")
    parser.add_argument("--clause-drop", type=float, help="clause_drop_p (default 0)")
    parser.add_argument("--stop-words", action="store_true", help="drop scikit-learn's English stop words")
    parser.add_argument("--rules", type=int, default=0, help="print the N heaviest rules of every class")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--ceiling", action="store_true",
                        help="also plain and NB-scaled LinearSVC on presence-only features (the TM's terms, every word)")
    parser.add_argument("--no-tm", action="store_true", help="baselines (and --ceiling) only, no TM training")
    parser.add_argument("--features-per-machine", type=float,
                        help="each machine of the vote reads this fraction of the vocabulary, its own random part")
    parser.add_argument("--features-per-class", type=per_class_rule, default="auto",
                        help="K: one binary model per class, each on its class's K chi2-best terms of the "
                             "whole vocabulary (TsetlinOneVsRest); none: one multi-class model; auto "
                             "(default): one model per class on its significant terms from 20 classes on")
    parser.add_argument("--estimators", type=lambda t: t if t == "auto" else int(t), default="auto",
                        help="a vote of this many machines (seeds seed, seed + 1, ...); auto (default): 3 "
                             "per class from 20 classes on, else 1")
    parser.add_argument("--cv", type=int, help="also print the TM's K-fold CV accuracy on the training split")
    parser.add_argument("--late-holdout", type=float,
                        help="20ng only: fit on the training split less the latest fraction F of each "
                             "newsgroup's postings, print accuracy on those, and stop (no test split)")
    parser.add_argument("--views", choices=["all", "words"],
                        help="the vote of feature views, tsetlin.text_views(): all seven views, or the four "
                             "word views (word_pairs=False); the TM sizing options go to every view")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.late_holdout is not None and DATASETS[args.dataset] != "20newsgroups":
        parser.error("--late-holdout needs message numbers in time order: 20ng only")
    if data_dir() is None:
        sys.exit("no ../shared/data (set FASTCORE_AD_DATA): skipped")
    from sklearn.metrics import f1_score

    from fastcore_ad.tsetlin import TsetlinOneVsRest, text_pipeline, text_views

    (tr_text, ytr), (te_text, yte), class_names = load_dataset(args.dataset)
    if args.late_holdout is not None:
        # Choosing a configuration without the test split: the latest training postings stand in.
        latest = latest_postings(args.late_holdout)
        texts = np.array(tr_text, dtype=object)
        tr_text, te_text = list(texts[~latest]), list(texts[latest])
        ytr, yte = ytr[~latest], ytr[latest]
        print(f"late hold-out: fit on {len(tr_text)} earlier postings, scored on the latest {len(te_text)} "
              f"({args.late_holdout:g} of each newsgroup); the test split is not used", flush=True)
    scored = "held-out" if args.late_holdout is not None else "test"
    print(f"{args.dataset}: {len(tr_text)} train / {len(te_text)} {scored} documents, {len(np.unique(ytr))} classes",
          flush=True)
    print("| model | accuracy | macro-F1 | fit + predict s |\n| --- | --- | --- | --- |", flush=True)

    def report(name, pred, seconds):
        acc, f1 = float(np.mean(pred == yte)), f1_score(yte, pred, average="macro")
        print(f"| {name} | {acc:.4f} | {f1:.4f} | {seconds:.1f} |", flush=True)
        return acc

    best = 0.0
    if not args.no_baselines:
        for name, pred, seconds in baselines(tr_text, ytr, te_text):
            best = max(best, report(name, pred, seconds))
    tm_params = {"seed": args.seed, "coalesced": args.coalesced, "negated_literals": not args.positive_only}
    for key, value in (("n_clauses", args.clauses), ("threshold", args.threshold), ("specificity", args.s),
                       ("max_included_literals", args.max_literals), ("max_negated_literals", args.max_negated),
                       ("clause_drop_p", args.clause_drop)):
        if value is not None:
            tm_params[key] = value

    def make_pipeline():
        levels = (args.count_levels if args.count_levels == "auto" else None if args.count_levels == "none"
                  else tuple(int(c) for c in args.count_levels.split(",")))
        pipe = text_pipeline(max_features=args.max_features or "auto",
                             ngram_range="auto" if args.ngram is None else (1, args.ngram),
                             count_levels=levels, n_estimators=args.estimators,
                             features_per_machine=args.features_per_machine,
                             features_per_class=args.features_per_class, **tm_params)
        if args.stop_words:
            pipe.set_params(vectorizer__stop_words="english")
        return pipe

    if args.views:
        params = {k: v for k, v in tm_params.items() if k != "seed"}
        vote = text_views(seed=args.seed, word_pairs=args.views == "all", **params)
        t = time.perf_counter()
        vote.fit(tr_text, ytr, tm__epochs=args.epochs, tm__progress_bar=False)
        pred = vote.predict(te_text)
        acc = report(f"text_views(seed={args.seed}{'' if args.views == 'all' else ', word_pairs=False'}): "
                     f"vote of {len(vote.estimators_)} views, one machine per class each",
                     pred, time.perf_counter() - t)
        print("each view alone: " + " ".join(f"{member.score(te_text, yte):.4f}" for member in vote.estimators_),
              flush=True)
        if best:
            print(f"TM - best baseline: {100 * (acc - best):+.2f} points", flush=True)
        return
    if args.cv:
        # Choosing a configuration without looking at the test split: K folds of the training split.
        from sklearn.model_selection import StratifiedKFold

        texts, scores = np.array(tr_text, dtype=object), []
        for fit_rows, score_rows in StratifiedKFold(args.cv, shuffle=True, random_state=0).split(texts, ytr):
            fold = make_pipeline().fit(list(texts[fit_rows]), ytr[fit_rows], tm__epochs=args.epochs,
                                       tm__progress_bar=False)
            scores.append(fold.score(list(texts[score_rows]), ytr[score_rows]))
        print(f"TM {args.cv}-fold CV accuracy on the training split: {np.mean(scores):.4f} "
              f"(folds {' '.join(f'{a:.4f}' for a in scores)})", flush=True)
    if args.no_tm:
        if args.ceiling:
            features = make_pipeline()[:-1]
            features.fit(tr_text, ytr)
            for ceiling_name, ceiling_pred, ceiling_seconds in binary_ceiling(tr_text, ytr, te_text, features):
                report(ceiling_name, ceiling_pred, ceiling_seconds)
        return
    pipe = make_pipeline()
    t = time.perf_counter()
    pipe.fit(tr_text, ytr, tm__epochs=args.epochs, tm__progress_bar=False)
    pred = pipe.predict(te_text)
    seconds = time.perf_counter() - t
    final = pipe.named_steps["tm"]
    one_vs_rest = isinstance(final, TsetlinOneVsRest)
    members = getattr(final, "estimators_", [final])
    if one_vs_rest:  # one model per class, each a machine or a vote of machines
        machines = [m for member in members for m in getattr(member, "estimators_", [member])]
        sizes = [len(c) for c in final.feature_columns_] if final.feature_columns_ is not None else [0]
        read = (f"{sizes[0]}" if min(sizes) == max(sizes) else
                f"{min(sizes)}-{max(sizes)} (median {int(np.median(sizes))}, significant)")
    else:
        machines = members
    tm = machines[0]
    epochs = tm.history_
    levels_step = pipe.named_steps.get("levels")
    levels_used = levels_step.levels_ if levels_step is not None else (1,)
    per_class = (f"one-vs-rest, {read} terms per class, "
                 f"{f'{len(machines) // len(members)} x ' if len(machines) > len(members) else ''}" if one_vs_rest else
                 f"{f'{len(machines)} x ' if len(machines) > 1 else ''}")
    name = (f"{per_class}TsetlinMachine({tm.n_clauses_} clauses{' pool' if args.coalesced else '/class'}, T={tm.threshold_}, "
            f"s={tm.specificity_:g}{', positive literals only' if args.positive_only else ''}"
            f"{f', max_included_literals={args.max_literals}' if args.max_literals else ''}"
            f"{f', max_negated_literals={args.max_negated}' if args.max_negated is not None else ''}"
            f"{f', clause_drop_p={args.clause_drop:g}' if args.clause_drop else ''}"
            f"{', English stop words dropped' if args.stop_words else ''}), "
            f"{pipe.named_steps['select'].get_support().sum()} "
            f"{'terms (uni+bigrams)' if pipe[0].ngram_range_ == (1, 2) else 'words'}"
            f"{' x count levels ' + ','.join(map(str, levels_used)) if len(levels_used) > 1 else ''}, "
            f"{epochs_kept(machines)}")
    acc = report(name, pred, seconds)
    if len(machines) > 1 and not one_vs_rest:
        te_bits = pipe[:-1].transform(te_text)
        subsets = pipe.named_steps["tm"].feature_subsets_ or [slice(None)] * len(machines)
        print("each machine alone: " + " ".join(f"{m.score(te_bits[:, cols], yte):.4f}"
                                                for m, cols in zip(machines, subsets)), flush=True)
    if args.ceiling:
        for ceiling_name, ceiling_pred, ceiling_seconds in binary_ceiling(tr_text, ytr, te_text, pipe[:-1]):
            report(ceiling_name, ceiling_pred, ceiling_seconds)
    if best:
        print(f"TM - best baseline: {100 * (acc - best):+.2f} points", flush=True)
    print("epoch seconds: " + " ".join(f"{e['seconds']:.1f}" for e in epochs), flush=True)
    if args.rules:
        rules = pipe.rules(class_names=class_names)
        if len(machines) > 1 and not one_vs_rest:
            rules = [r for _, r in rules]
        print(f"present-word share of the literals of the 10 heaviest rules per class: "
              f"{positive_share(rules, pipe.classes_):.3f}", flush=True)
        for label in pipe.classes_:
            for rule in [r for r in rules if r.class_label == label and r.weight > 0][: args.rules]:
                print(f"  {rule}", flush=True)


if __name__ == "__main__":
    main()
