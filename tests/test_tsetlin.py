"""Tsetlin Machine: kernels against the plain oracle, training bit for bit against the oracle's
replay of the random stream, faithfulness of the rules, reproducibility, persistence, input
kinds, learning, scikit-learn integration and every bad-input error."""

import dataclasses
import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

from fastcore_ad import TsetlinEnsemble, TsetlinMachine, _core
from fastcore_ad import tsetlin as tsetlin_module
from fastcore_ad.tsetlin import Rule, text_pipeline

from .reference import tsetlin as ref


def _random_model(rng, n_features, n_classes, n_clauses, coalesced, include_p):
    """A fitted-looking model with random include bits and weights (lower planes unused)."""
    tm = TsetlinMachine(n_clauses, 10, 3.0, coalesced=coalesced, seed=0)
    X0 = np.zeros((n_classes, n_features), dtype=np.uint8)
    tm._start(np.arange(n_classes), n_features)
    banks, clauses, lw = tm.action_.shape
    fw = lw // 2
    include = rng.random((banks, clauses, 2 * n_features)) < include_p
    include[:, 0, :] = False  # one empty clause per bank
    padded = np.zeros((banks, clauses, lw * 64), dtype=bool)
    padded[:, :, :n_features] = include[:, :, :n_features]
    padded[:, :, fw * 64: fw * 64 + n_features] = include[:, :, n_features:]
    tm.action_[...] = np.packbits(padded, axis=-1, bitorder="little").view("<u8").reshape(banks, clauses, lw)
    tm.weights_[...] = rng.integers(-9, 10, size=tm.weights_.shape)
    del X0
    return tm, include


def _sample(rng, n, f, density):
    return (rng.random((n, f)) < density).astype(np.uint8)


@pytest.mark.parametrize("n_features", [1, 63, 64, 65, 130])
@pytest.mark.parametrize("coalesced", [False, True])
@pytest.mark.parametrize("density", [0.02, 0.5, 0.97])
def test_clause_outputs_and_class_sums_match_the_oracle(rng, n_features, coalesced, density):
    n_classes, n_clauses = 3, 12
    # Clauses need few literals to ever fire; sparse includes keep both outcomes common.
    tm, include = _random_model(rng, n_features, n_classes, n_clauses, coalesced, include_p=1.5 / n_features)
    X = _sample(rng, 40, n_features, density)
    for Xin in (X, X.astype(bool), sp.csr_matrix(X)):
        outs = tm.clause_outputs(Xin)
        for b in range(include.shape[0]):
            np.testing.assert_array_equal(outs[:, b, :], ref.clause_outputs(include[b], X))
        sums = tm.decision_function(Xin)
        assert sums.dtype == np.int64
        np.testing.assert_array_equal(sums, ref.class_sums(include, tm.weights_, X, coalesced))


def test_empty_clauses_never_fire_at_prediction(rng):
    tm, include = _random_model(rng, 10, 2, 4, False, include_p=0.0)
    X = _sample(rng, 5, 10, 0.5)
    assert not tm.clause_outputs(X).any()
    assert not tm.decision_function(X).any()
    assert tm.rules() == []


TRAIN_CASES = {
    "focused": dict(),
    "uniform": dict(focused=False),
    "unweighted_no_boost": dict(weighted=False, boost=False),
    "coalesced": dict(coalesced=True),
    "clause_drop": dict(clause_drop_p=0.3),
    "few_state_bits": dict(state_bits=3, specificity=1.5),
    "absorbing": dict(state_bits=3, specificity=1.5, absorbing=1),
    "positive_literals_only": dict(negated_literals=False),
    "positive_literals_only_coalesced": dict(negated_literals=False, coalesced=True),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_training_equals_the_oracle_bit_for_bit(rng, case):
    opts = dict(TRAIN_CASES[case])
    n, f, k, c = 30, 70, 3, 6
    X = _sample(rng, n, f, 0.3)
    X[:, 0] = rng.integers(0, 2, n)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    seed = int(rng.integers(0, 2**62))
    absorbing = opts.get("absorbing")
    oracle = ref.Machine(f, k, c, threshold=4, seed=seed, specificity=opts.pop("specificity", 3.0),
                         state_bits=opts.pop("state_bits", 8), **opts)
    tm = TsetlinMachine(c, 4, oracle.s, state_bits=oracle.b, weighted=oracle.weighted,
                        boost_true_positive=oracle.boost,
                        negative_sampling="focused" if oracle.focused else "uniform",
                        clause_drop_p=opts.get("clause_drop_p", 0.0), coalesced=oracle.coalesced,
                        absorbing=absorbing, negated_literals=opts.get("negated_literals", True), seed=seed)
    tm.fit(X, y, epochs=2, progress_bar=False)
    if not tm.negated_literals:
        assert not any(neg for rule in tm.rules() for _, neg in rule.literals)
    for epoch in range(2):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        oracle.train(X, y, order, epoch)
    np.testing.assert_array_equal(ref.states_from_planes(tm.action_, tm.lower_, tm.state_bits), oracle.state)
    np.testing.assert_array_equal(tm.weights_, oracle.weights)
    assert tm.weights_.any()


def test_the_random_stream_is_the_documented_hash(rng):
    for _ in range(20):
        seed = int(rng.integers(0, 2**63))
        parts = [int(p) for p in rng.integers(0, 2**40, size=int(rng.integers(0, 6)))]
        assert _core.tsetlin_stream_key(seed, parts) == ref.stream_key(seed, parts)


def _text_like(rng, n=1500, f=300, density=0.02, words=10):
    """Two classes each owning `words` indicative features (p=0.3 in class, density elsewhere)."""
    y = rng.integers(0, 2, n)
    X = rng.random((n, f)) < density
    for cls in (0, 1):
        own = slice(cls * words, (cls + 1) * words)
        rows = y == cls
        X[rows, own] = rng.random((rows.sum(), words)) < 0.3
    return X.astype(np.uint8), y


def test_rules_are_faithful_to_the_class_sums(rng):
    X, y = _text_like(rng, n=600)
    for coalesced in (False, True):
        tm = TsetlinMachine(40, 15, 4.0, coalesced=coalesced, seed=3).fit(X, y, epochs=3, progress_bar=False)
        rules = tm.rules()
        assert rules and all(r.literals for r in rules)
        assert [r.weight for r in rules] == sorted((r.weight for r in rules), reverse=True)
        sums = tm.class_sums(X[:60])
        for i in range(60):
            expected = {label: 0 for label in tm.classes_}
            for r in rules:
                if r.fires(X[i]):
                    expected[r.class_label] += r.weight
            assert [expected[label] for label in tm.classes_] == sums[i].tolist()
        why = tm.explain(X[0])
        assert list(why["class_sums"].values()) == sums[0].tolist()
        assert why["prediction"] == tm.predict(X[:1])[0]
        assert sum(r.weight for r in why["rules"]) == sum(why["class_sums"].values())
        assert all(r.fires(X[0]) for r in why["rules"])
        assert tm.explain(sp.csr_matrix(X[:1]))["class_sums"] == why["class_sums"]


def test_rule_text():
    rule = Rule("allergy", 12, ((0, False), (1, False), (2, True)), 0, ("rash", "reaction", "placebo"))
    assert str(rule) == "IF rash AND reaction AND NOT placebo THEN allergy (weight 12)"
    assert rule.fires(np.array([1, 1, 0])) and not rule.fires(np.array([1, 1, 1]))
    assert rule.fires(sp.csr_matrix(np.array([[1, 1, 0]])))
    # One document of the rule's features: several rows or a wrong width are refused by name.
    for bad in (np.array([[1, 1, 0], [0, 0, 0]]), sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0]])),
                np.array([1, 1]), np.array([1, 1, 0, 0]), np.ones((1, 1, 3))):
        with pytest.raises(ValueError, match="^x: expected one document of 3 features"):
            rule.fires(bad)
    unnamed = Rule(1, 2, ((4, False),), 0)
    assert unnamed.fires(np.eye(6)[4]) and not unnamed.fires(np.eye(6)[3])
    with pytest.raises(ValueError, match="^x: the rule reads feature 4, but x has 2 features"):
        unnamed.fires(np.ones(2))


def test_printed_thresholds_say_what_the_rule_tests(rng):
    income = np.round(rng.uniform(1e5, 2e5, 400), 2)
    tm = TsetlinMachine(20, 10, 3.0, seed=1).fit(income[:, None], (income > 150000.5).astype(int), epochs=5,
                                                  progress_bar=False)
    rules = tm.rules(feature_names=["income"])
    assert any(r.thresholds for r in rules)
    for rule in rules:
        printed = [float(term.split()[0]) for term in str(rule).split(" > ")[1:]]
        assert printed == list(rule.thresholds), str(rule)
        with pytest.raises(ValueError, match="^x: expected one document of 1 features"):
            rule.fires(income[:2])
    rule = Rule(1, 2, ((0, False),), 0, thresholds=(0.27,))
    assert str(rule) == "IF x0 > 0.27 THEN 1 (weight 2)"
    assert str(dataclasses.replace(rule, thresholds=(148884.6,))) == "IF x0 > 148884.6 THEN 1 (weight 2)"


def test_same_seed_same_model_for_any_thread_count(rng):
    X, y = _text_like(rng, n=400)
    models = [TsetlinMachine(60, 15, 4.0, seed=11, n_jobs=j, clause_drop_p=0.1).fit(X, y, epochs=2, progress_bar=False)
              for j in (1, 2)]
    for name in ("action_", "lower_", "weights_"):
        np.testing.assert_array_equal(getattr(models[0], name), getattr(models[1], name))
    other = TsetlinMachine(60, 15, 4.0, seed=12).fit(X, y, epochs=2, progress_bar=False)
    assert not np.array_equal(other.lower_, models[0].lower_)


def test_dense_and_csr_train_identical_models(rng):
    X, y = _text_like(rng, n=300)
    dense = TsetlinMachine(20, 10, 4.0, seed=5).fit(X, y, epochs=2, progress_bar=False)
    sparse = TsetlinMachine(20, 10, 4.0, seed=5).fit(sp.csr_matrix(X), y, epochs=2, progress_bar=False)
    csc = TsetlinMachine(20, 10, 4.0, seed=5).fit(sp.csc_matrix(X.astype(bool)), y, epochs=2, progress_bar=False)
    for m in (sparse, csc):
        np.testing.assert_array_equal(dense.lower_, m.lower_)
        np.testing.assert_array_equal(dense.weights_, m.weights_)


def test_partial_fit_continues_like_fit(rng):
    X, y = _text_like(rng, n=300)
    full = TsetlinMachine(20, 10, 4.0, seed=5).fit(X, y, epochs=3, progress_bar=False)
    online = TsetlinMachine(20, 10, 4.0, seed=5)
    for _ in range(3):
        online.partial_fit(X, y, classes=[0, 1])
    np.testing.assert_array_equal(full.lower_, online.lower_)
    np.testing.assert_array_equal(full.weights_, online.weights_)


def test_save_load_and_pickle_predict_identically(rng, tmp_path):
    X, y = _text_like(rng, n=300)
    labels = np.array(["neg", "pos"])[y]
    for coalesced in (False, True):
        tm = TsetlinMachine(20, 10, 4.0, seed=5, coalesced=coalesced).fit(X, labels, epochs=2, progress_bar=False)
        path = tmp_path / f"tm{coalesced}.npz"
        tm.save(path)
        loaded = TsetlinMachine.load(path)
        clone = pickle.loads(pickle.dumps(tm))
        for m in (loaded, clone):
            np.testing.assert_array_equal(m.decision_function(X), tm.decision_function(X))
            assert list(m.predict(X)) == list(tm.predict(X))
            assert m.get_params() == tm.get_params()
            assert [str(r) for r in m.rules()] == [str(r) for r in tm.rules()]
        # Training continues identically after a round trip.
        loaded.partial_fit(X, labels)
        tm.partial_fit(X, labels)
        np.testing.assert_array_equal(loaded.lower_, tm.lower_)
    with pytest.raises(ValueError, match="not a fastcore_ad"):
        np.savez(tmp_path / "other.npz", a=np.zeros(3))
        TsetlinMachine.load(tmp_path / "other.npz")


def test_a_thermometer_model_saves_after_set_params(rng, tmp_path):
    """set_params(max_bits=...) or (booleanizer="none") after fit asks the next fit; the file
    holds the encoder the arrays were made with, and loads into the same predictions."""
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    for change in ({"max_bits": 2}, {"booleanizer": "none"}):
        tm = TsetlinMachine(20, 10, 3.0, seed=1).fit(X, y, epochs=2, progress_bar=False).set_params(**change)
        path = tmp_path / "changed.npz"
        tm.save(path)
        loaded = TsetlinMachine.load(path)
        np.testing.assert_array_equal(loaded.class_sums(X), tm.class_sums(X))
        assert loaded.booleanizer == "auto" and loaded.max_bits >= 2
        assert [str(r) for r in loaded.rules()] == [str(r) for r in tm.rules()]


def test_object_labels_round_trip(tmp_path, rng):
    X, y = _text_like(rng, n=200)
    labels = np.array([(1, "a"), (2, "b")], dtype=object)[y]
    labels = np.array([None] * len(y), dtype=object)
    labels[:] = [("x" if v else 7) for v in y]  # mixed types: not sortable by np.unique
    with pytest.raises(TypeError):
        TsetlinMachine(10, 5, 3.0, seed=0).fit(X, labels, progress_bar=False)
    labels = np.array([True, False])[y]
    tm = TsetlinMachine(10, 5, 3.0, seed=0).fit(X, labels, progress_bar=False)
    tm.save(tmp_path / "b.npz")
    assert TsetlinMachine.load(tmp_path / "b.npz").classes_.tolist() == [False, True]


def test_learns_xor():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, size=(3000, 12), dtype=np.uint8)
    y = X[:, 3] ^ X[:, 7]
    noisy = y.copy()
    flip = rng.random(len(y)) < 0.05
    noisy[flip] ^= 1
    tm = TsetlinMachine(20, 10, 3.9, seed=2).fit(X[:2000], noisy[:2000], epochs=30, progress_bar=False)
    assert tm.score(X[2000:], y[2000:]) >= 0.97


def test_learns_noisy_text_like_data_and_many_classes():
    rng = np.random.default_rng(1)
    X, y = _text_like(rng, n=3000, f=500)
    tm = TsetlinMachine(100, 20, 8.0, seed=0).fit(sp.csr_matrix(X[:2000]), y[:2000], epochs=4, progress_bar=False)
    assert tm.score(sp.csr_matrix(X[2000:]), y[2000:]) >= 0.9
    # Five classes, each signalled by its own feature pair.
    n, k = 4000, 5
    y = rng.integers(0, k, n)
    X = (rng.random((n, 60)) < 0.05).astype(np.uint8)
    X[np.arange(n), 2 * y] = 1
    X[np.arange(n), 2 * y + 1] = rng.random(n) < 0.8
    for coalesced in (False, True):
        clauses = 100 if coalesced else 20
        tm = TsetlinMachine(clauses, 15, 5.0, coalesced=coalesced, seed=0).fit(X[:3000], y[:3000], epochs=5, progress_bar=False)
        assert tm.score(X[3000:], y[3000:]) >= 0.9


def test_literal_budget_is_kept():
    rng = np.random.default_rng(3)
    X, y = _text_like(rng, n=500)
    tm = TsetlinMachine(20, 10, 2.0, max_included_literals=3, seed=1).fit(X, y, epochs=3, progress_bar=False)
    counts = np.unpackbits(tm.action_.view(np.uint8), axis=-1).sum(axis=-1)
    assert counts.max() <= 3
    assert counts.max() >= 1
    free = TsetlinMachine(20, 10, 2.0, seed=1).fit(X, y, epochs=3, progress_bar=False)
    assert np.unpackbits(free.action_.view(np.uint8), axis=-1).sum(axis=-1).max() > 3


def test_validation_history_and_progress(rng):
    X, y = _text_like(rng, n=300)
    tm = TsetlinMachine(10, 5, 3.0, seed=0).fit(X, y, epochs=2, validation_data=(X, y))
    assert [h["epoch"] for h in tm.history_] == [1, 2]
    assert 0.0 <= tm.history_[-1]["val_accuracy"] <= 1.0


def test_sklearn_pipeline_and_cross_validation(rng):
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    # A fixed draw: on some random ones a fold trains badly (0.745 seen once in 2,600).
    X, y = _text_like(np.random.default_rng(0), n=600)
    pipe = make_pipeline(FunctionTransformer(lambda a: a.astype(bool)), TsetlinMachine(40, 15, 4.0, seed=0))
    scores = cross_val_score(pipe, X, y, cv=3, params={"tsetlinmachine__epochs": 6})
    assert scores.min() > 0.8
    tm = TsetlinMachine(40, 15, 4.0, seed=0, coalesced=True)
    assert clone(tm).get_params() == tm.get_params()
    assert tm.set_params(threshold=7).threshold == 7


def test_text_pipeline_speaks_words():
    texts = (["patient has rash and reaction after penicillin"] * 30 + ["fracture of the left arm, cast applied"] * 30
             + ["rash on the arm"] * 5)
    labels = ["allergy"] * 30 + ["ortho"] * 30 + ["allergy"] * 5
    pipe = text_pipeline(max_features=20, ngram_range=(1, 1), min_df=2, n_clauses=10, threshold=5,
                         specificity=3.0, seed=0)
    pipe.fit(texts, labels, tm__epochs=5, tm__progress_bar=False)
    assert pipe.score(texts, labels) == 1.0
    words = set(pipe.feature_names())
    rules = pipe.rules()
    assert rules and all(str(r).startswith("IF ") for r in rules)
    assert all(name in words for r in rules for name in (r.feature_names[j] for j, _ in r.literals))
    why = pipe.explain("rash after penicillin")
    assert why["prediction"] == "allergy"


def test_count_levels_are_count_thresholds_of_the_binary_vocabulary(rng):
    """``count_levels``: the vocabulary the binary pipeline picks (chi2 of presence), each term
    then as the bits "count >= c" (a numpy oracle on the vectorizer's counts), named per level;
    rules and explanations read those names, and the fitted pipeline pickles."""
    words = [f"w{i}" for i in range(30)]
    texts, labels = [], []
    for d in range(120):
        label = d % 2
        counts = rng.poisson(0.4 + 1.5 * (np.arange(30) % 2 == label), 30)
        texts.append(" ".join(w for w, c in zip(words, counts) for _ in range(c)) or "w0")
        labels.append(["even", "odd"][label])
    kwargs = dict(max_features=12, ngram_range=(1, 1), min_df=2, n_clauses=10, threshold=8, seed=0)
    binary = text_pipeline(**kwargs).fit(texts, labels, tm__epochs=2, tm__progress_bar=False)
    pipe = text_pipeline(count_levels=(1, 2, 4), **kwargs).fit(texts, labels, tm__epochs=2, tm__progress_bar=False)
    chosen = list(binary.feature_names())
    assert list(pipe.feature_names()) == chosen + [f"{w} (2+ times)" for w in chosen] + [f"{w} (4+ times)" for w in chosen]
    counts = pipe[:2].transform(texts).toarray()  # counts of the chosen terms
    assert counts.max() >= 4
    want = np.hstack([(counts >= c) for c in (1, 2, 4)]).astype(np.uint8)
    got = pipe[:-1].transform(texts)
    assert got.dtype == np.uint8 and (got.toarray() == want).all()
    assert pipe.named_steps["tm"].n_features_in_ == 3 * len(chosen)
    names = set(pipe.feature_names())
    assert all(r.feature_names[j] in names for r in pipe.rules() for j, _ in r.literals)
    assert pipe.explain(texts[0])["prediction"] in ("even", "odd")
    back = pickle.loads(pickle.dumps(pipe))
    assert list(back.predict(texts)) == list(pipe.predict(texts))


def test_count_levels_take_any_sequence_of_whole_numbers():
    texts = ["pain pain knee", "knee", "rash rash rash", "rash"] * 10
    labels = ["ortho", "ortho", "derm", "derm"] * 10
    names = []
    for levels in ([1, 2], np.array([1, 2]), range(1, 3)):
        pipe = text_pipeline(count_levels=levels, max_features=5, min_df=1, n_clauses=4, threshold=4, seed=0)
        pipe.fit(texts, labels, tm__epochs=1, tm__progress_bar=False)
        names.append(list(pipe.feature_names()))
    assert names[0] == names[1] == names[2] and "rash (2+ times)" in names[0]


@pytest.mark.parametrize("levels", [(), (0, 1), (2, 1), (1, 1), (1.5,), (True,), "1,2", 3, (1, 2**70)])
def test_count_levels_must_be_increasing_whole_numbers(levels):
    with pytest.raises(ValueError, match="count_levels"):
        text_pipeline(count_levels=levels)


def test_auto_ngram_range_follows_the_corpus_size(rng, monkeypatch):
    """``ngram_range="auto"``: the vocabulary is exactly CountVectorizer's with words, or with
    words and pairs from ``_BIGRAMS_FROM_DOCUMENTS`` documents on; transform uses the range
    fitted, and parameters keep "auto"."""
    from sklearn.feature_extraction.text import CountVectorizer

    words = np.array(["rash", "penicillin", "fracture", "arm", "cough", "fever", "cast", "throat"])
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 7))) for _ in range(60)]
    labels = rng.integers(0, 2, 60)
    for limit, want in ((61, (1, 1)), (60, (1, 2))):
        monkeypatch.setattr(tsetlin_module, "_BIGRAMS_FROM_DOCUMENTS", limit)
        pipe = text_pipeline(max_features="auto", min_df=2, n_clauses=10, threshold=5, seed=0)
        pipe.fit(iter(texts), labels, tm__epochs=1, tm__progress_bar=False)  # a generator too
        vec = pipe.named_steps["vectorizer"]
        assert vec.ngram_range_ == want and vec.ngram_range == "auto"
        assert pipe.get_params()["vectorizer__ngram_range"] == "auto"
        oracle = CountVectorizer(binary=vec.binary, ngram_range=want, min_df=2).fit(texts)
        assert list(vec.get_feature_names_out()) == list(oracle.get_feature_names_out())
        assert (vec.transform(texts[:7]) != oracle.transform(texts[:7])).nnz == 0
        assert vec.build_analyzer()("rash arm") == oracle.build_analyzer()("rash arm")
    fixed = text_pipeline(ngram_range=(1, 2), min_df=1, n_clauses=10, threshold=5, seed=0)
    fixed.fit(texts, labels, tm__epochs=1, tm__progress_bar=False)
    assert fixed.named_steps["vectorizer"].ngram_range_ == (1, 2)
    with pytest.raises(ValueError, match="ngram_range"):
        text_pipeline(ngram_range="bigrams").fit(texts, labels)
    with pytest.raises(ValueError, match="raw_documents"):
        text_pipeline().fit("one string", [0])


def test_auto_ngram_vectorizer_edges(monkeypatch):
    vec_class = type(text_pipeline().named_steps["vectorizer"])
    texts = ["rash after penicillin", "fracture of the arm", "penicillin rash again", "arm in a cast"] * 5
    with pytest.raises(NotFittedError, match="ngram_range"):
        vec_class(ngram_range="auto").transform(texts)
    # A given vocabulary needs no fit: its longest term sets the range.
    given = vec_class(ngram_range="auto", vocabulary=["rash after", "arm"])
    assert given.transform(["rash after penicillin"]).toarray().tolist() == [[1, 0]]
    with pytest.raises(ValueError, match="ngram_range"):
        vec_class(ngram_range="auto", analyzer="char").fit(texts)
    # A failed refit keeps the fitted range and vocabulary together.
    monkeypatch.setattr(tsetlin_module, "_BIGRAMS_FROM_DOCUMENTS", 20)
    vec = vec_class(ngram_range="auto", min_df=2).fit(texts)
    assert vec.ngram_range_ == (1, 2) and "rash after" in vec.vocabulary_
    with pytest.raises(ValueError):
        vec.set_params(min_df=5).fit(texts[:3])
    assert vec.ngram_range_ == (1, 2) and vec.transform(["rash after"]).sum() == 3



def test_text_pipeline_names_bad_documents_and_arguments():
    texts = ["rash after penicillin", "fracture of the arm", "penicillin rash again", "arm in a cast"] * 5
    labels = [0, 1, 0, 1] * 5
    small = {"n_clauses": 10, "threshold": 5, "seed": 0}
    fitted = text_pipeline(**small).fit(texts, labels, tm__epochs=2, tm__progress_bar=False)
    for bad, kind in ((None, "NoneType"), (3, "int"), (2.5, "float")):
        docs = texts[:3] + [bad] + texts[4:]
        with pytest.raises(TypeError, match=f"raw_documents: item 3 is {kind}, expected str or bytes"):
            text_pipeline(**small).fit(docs, labels)
        with pytest.raises(TypeError, match=f"raw_documents: item 3 is {kind}"):
            fitted.predict(docs)
    # bytes, numpy strings and a generator read as the same texts
    want = fitted.predict(texts)
    assert (fitted.predict([t.encode() for t in texts]) == want).all()
    assert (fitted.predict(np.array(texts)) == want).all()
    again = text_pipeline(**small).fit((t for t in texts), labels, tm__epochs=2, tm__progress_bar=False)
    assert (again.predict(texts) == want).all()
    with pytest.raises(ValueError, match="raw_documents: 1 document"):
        text_pipeline(**small).fit(["rash after penicillin"], [0])
    with pytest.raises(ValueError, match="y: 19 labels for 20 documents"):
        text_pipeline(**small).fit(texts, labels[:-1])
    with pytest.raises(ValueError, match=r"^y: the documents' labels are required"):
        text_pipeline(**small).fit(texts)
    # No documents to predict: the model says so, not a private selection step.
    for call in (fitted.predict, fitted.decision_function):
        with pytest.raises(ValueError, match=r"^X: no samples: 0 sample\(s\)"):
            call([])
    assert fitted[:-1].transform([]).shape == (0, fitted[:-1].transform(texts[:1]).shape[1])
    for bad in (0, -3, 1.5, True, None, "most"):
        with pytest.raises(ValueError, match="max_features"):
            text_pipeline(max_features=bad)
    for bad in ((0, 1), (2, 1), (1,), [1, 2], (1.0, 2), (True, 2)):
        with pytest.raises(ValueError, match="ngram_range"):
            text_pipeline(ngram_range=bad)
    # set_params reaches the vectorizer past text_pipeline's checks: it checks again at fit
    with pytest.raises(ValueError, match="ngram_range"):
        text_pipeline(**small).set_params(vectorizer__ngram_range=(0, 2)).fit(texts, labels)

def test_chi2_selection_equals_select_k_best_and_leaves_k_alone(rng):
    """The pipeline's selector picks SelectKBest's columns (ties and constant columns included),
    keeps every column when k exceeds them, and never rewrites ``k`` (concurrent transforms)."""
    import threading

    from sklearn.feature_selection import SelectKBest, chi2

    select_class = type(text_pipeline().named_steps["select"])
    X = (rng.random((60, 40)) < 0.3).astype(np.int64)
    X[:, 5] = X[:, 6]  # a tie
    X[:, 7] = 0  # a constant column: NaN score
    y = rng.integers(0, 3, 60)
    for k in (0, 1, 7, 39, 40):
        ours = select_class(chi2, k=k).fit(X, y)
        assert (ours.get_support() == SelectKBest(chi2, k=k).fit(X, y).get_support()).all(), k
    assert select_class(chi2, k=500).fit(X, y).get_support().all()
    auto = select_class(chi2, k="auto").fit(X, y)
    assert auto.k_ == 1000 and auto.get_support().all()
    chosen = select_class(chi2, k=9).fit(X, y)
    errors = []

    def hammer():
        try:
            for _ in range(200):
                chosen.transform(X)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and chosen.get_params()["k"] == 9 and chosen.transform(X).shape == (60, 9)


def test_fitted_text_pipeline_pickles(tmp_path):
    texts = ["rash after penicillin", "fracture of the arm", "penicillin rash again", "arm in a cast"] * 10
    labels = ["allergy", "ortho", "allergy", "ortho"] * 10
    pipe = text_pipeline(max_features=20, min_df=2, n_clauses=10, threshold=5, seed=0)
    pipe.fit(texts, labels, tm__epochs=3, tm__progress_bar=False)
    back = pickle.loads(pickle.dumps(pipe))
    assert list(back.predict(texts)) == list(pipe.predict(texts))
    assert list(back.feature_names()) == list(pipe.feature_names())
    assert [str(r) for r in back.rules()] == [str(r) for r in pipe.rules()]


def test_demo_runs():
    rows = tsetlin_module.demo()
    assert rows[0]["result"].startswith("accuracy")
    assert float(rows[0]["result"].split()[1]) > 0.6
    assert any(r["result"].startswith("IF ") for r in rows[1:])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_clauses=7), ValueError, "n_clauses"),
    (dict(n_clauses=0), ValueError, "n_clauses"),
    (dict(n_clauses=2.5), TypeError, "n_clauses"),
    (dict(threshold=0), ValueError, "threshold"),
    (dict(specificity=0.5), ValueError, "specificity"),
    (dict(specificity=float("nan")), ValueError, "specificity"),
    (dict(specificity="a"), TypeError, "specificity"),
    (dict(state_bits=1), ValueError, "state_bits"),
    (dict(state_bits=17), ValueError, "state_bits"),
    (dict(negative_sampling="random"), ValueError, "negative_sampling"),
    (dict(max_included_literals=0), ValueError, "max_included_literals"),
    (dict(absorbing=128), ValueError, "absorbing"),
    (dict(absorbing=4, state_bits=3), ValueError, "absorbing"),
    (dict(absorbing=-1), ValueError, "absorbing"),
    (dict(absorbing=1.5), TypeError, "absorbing"),
    (dict(clause_drop_p=1.0), ValueError, "clause_drop_p"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_bad_parameters(kwargs, error, match):
    X = np.eye(4, dtype=np.uint8)
    params = dict(n_clauses=4, threshold=5, specificity=3.0)
    params.update(kwargs)
    with pytest.raises(error, match=match):
        TsetlinMachine(**params).fit(X, [0, 1, 0, 1])


def test_bad_inputs():
    X = np.eye(4, dtype=np.uint8)
    y = [0, 1, 0, 1]
    tm = TsetlinMachine(4, 5, 3.0, seed=0, booleanizer="none")
    with pytest.raises(RuntimeError, match="not fitted"):
        tm.predict(X)
    with pytest.raises(ValueError, match="binary"):
        tm.fit(X * 2, y)
    with pytest.raises(ValueError, match="binary"):
        tm.fit(sp.csr_matrix(X * 3), y)
    with pytest.raises(TypeError, match="X"):
        tm.fit(X.astype(complex), y)
    with pytest.raises(ValueError, match="2 dimensions"):
        tm.fit(X[0], y)
    with pytest.raises(ValueError, match="no samples"):
        tm.fit(X[:0], [])
    with pytest.raises(ValueError, match="no features"):
        tm.fit(np.zeros((4, 0), dtype=np.uint8), y)
    with pytest.raises(ValueError, match="labels for"):
        tm.fit(X, [0, 1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        tm.fit(X, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="epochs"):
        tm.fit(X, y, epochs=0)
    with pytest.raises(ValueError, match="NaN"):
        tm.fit(X, [0.0, 1.0, np.nan, 1.0])
    tm.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        tm.predict(np.eye(5, dtype=np.uint8))
    with pytest.raises(ValueError, match="not among classes_"):
        tm.partial_fit(X, [0, 1, 2, 1])
    with pytest.raises(ValueError, match="classes"):
        tm.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="feature_names"):
        tm.rules(feature_names=["a"])
    with pytest.raises(ValueError, match="class_names"):
        tm.rules(class_names=["a"])
    with pytest.raises(ValueError, match="one document"):
        tm.explain(X)
    # The kernel checks what Python does not: CSR indices outside the feature range.
    cfg = tm._config()
    bad = (np.array([0, 1], dtype=np.int64), np.array([9], dtype=np.int32))
    with pytest.raises(ValueError, match="feature index"):
        _core.tsetlin_class_sums(cfg, tm.action_, tm.weights_, bad)
    with pytest.raises(ValueError, match="class index"):
        _core.tsetlin_train_epoch(cfg, tm.action_, tm.lower_, tm.weights_, (np.array([0, 1], dtype=np.int64), np.array([1], dtype=np.int32)),
                                  np.array([5], dtype=np.int64), np.array([0], dtype=np.int64), 0)


@pytest.mark.gpu
def test_cuda_class_sums_equal_the_cpu(rng):
    import cupy as cp

    X, y = _text_like(rng, n=500, f=130)
    for coalesced in (False, True):
        tm = TsetlinMachine(40, 15, 4.0, coalesced=coalesced, seed=3).fit(X, y, epochs=2, progress_bar=False)
        cpu = tm.decision_function(X)
        gpu = tm.decision_function(cp.asarray(X))
        assert isinstance(gpu, cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(gpu), cpu)
        tm.set_params(device="cuda")
        np.testing.assert_array_equal(tm.decision_function(sp.csr_matrix(X)), cpu)
        np.testing.assert_array_equal(tm.decision_function(X), cpu)


def test_cuda_device_without_a_gpu_is_a_clear_error(rng):
    from .conftest import GPU

    if GPU:
        pytest.skip("a GPU is present")
    X, y = _text_like(rng, n=100, f=20)
    with pytest.raises(RuntimeError, match="device='cuda'"):
        TsetlinMachine(10, 5, 3.0, seed=0, device="cuda").fit(X, y, progress_bar=False)
    tm = TsetlinMachine(10, 5, 3.0, seed=0).fit(X, y, progress_bar=False).set_params(device="cuda")
    with pytest.raises(RuntimeError, match="device='cuda'"):
        tm.predict(X)
    with pytest.raises(RuntimeError, match="device='cuda'"):
        tm.partial_fit(X, y)


# ------------------------------------------------------------------------------------------------
# Real text: the default pipeline on R8


def _rows(name, split):
    """The records of a corpus split in ../shared/data, or a skip with the reason."""
    import gzip
    import json

    from .conftest import data_dir

    folder = data_dir()
    path = None if folder is None else os.path.join(folder, name, f"{split}.jsonl.gz")
    if path is None or not os.path.isfile(path):
        pytest.skip(f"{name} is not in ../shared/data (or FASTCORE_AD_DATA): the real-text check needs it")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _corpus(name, split):
    rows = _rows(name, split)
    return [r["text"] for r in rows], np.array([r["label"] for r in rows])


def _r8(split):
    return _corpus("r8", split)


def test_default_text_pipeline_on_r8():
    """``text_pipeline(seed=0)`` with no sizes given: the R8 figure of bench/RESULTS.md."""
    train_texts, train_labels = _r8("train")
    test_texts, test_labels = _r8("test")
    pipe = text_pipeline(seed=0).fit(train_texts, train_labels, tm__progress_bar=False)
    tm = pipe.named_steps["tm"]
    accuracy = pipe.score(test_texts, test_labels)
    assert accuracy >= 0.96, (accuracy, tm.history_)
    # Early stopping kept its best epoch, before the cap.
    assert tm.epochs_ == tm.best_epoch_ < len(tm.history_) <= tm.max_epochs
    assert max(h["val_accuracy"] for h in tm.history_) == tm.history_[tm.best_epoch_ - 1]["val_accuracy"]
    assert (tm.n_clauses_, tm.threshold_) == (984, 787)


def test_vote_of_five_default_machines_on_r8():
    """``text_pipeline(seed=0, n_estimators=5)``: within 1 point of LinearSVC's 0.9767 on R8
    (bench/RESULTS.md, "A vote of machines"), and above the mean of its machines."""
    train_texts, train_labels = _r8("train")
    test_texts, test_labels = _r8("test")
    pipe = text_pipeline(seed=0, n_estimators=5).fit(train_texts, train_labels, tm__progress_bar=False)
    accuracy = pipe.score(test_texts, test_labels)
    bits = pipe[:-1].transform(test_texts)
    alone = [m.score(bits, test_labels) for m in pipe.named_steps["tm"].estimators_]
    assert accuracy >= 0.9667 and accuracy > np.mean(alone), (accuracy, alone)


def test_default_pipeline_on_ohsumed_is_one_vote_per_class():
    """``text_pipeline(seed=0)`` on Ohsumed (23 classes): the many-class recipe, the figure of
    bench/RESULTS.md ("Defaults from 20 classes on", 0.6651), 5.7 points above the multi-class
    machine's 0.6077 and within 3 points of LinearSVC (0.6770)."""
    train_texts, train_labels = _corpus("ohsumed", "train")
    test_texts, test_labels = _corpus("ohsumed", "test")
    pipe = text_pipeline(seed=0)
    pipe.fit(train_texts, train_labels, tm__progress_bar=False)
    ovr = pipe.named_steps["tm"]
    assert len(ovr.estimators_) == 23 and all(len(m.estimators_) == 3 for m in ovr.estimators_)
    assert pipe.named_steps["levels"].levels_ == (1, 2, 4)
    assert pipe.score(test_texts, test_labels) >= 0.66


def _bench_module(name):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "bench", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_latest_postings_of_20_newsgroups_are_each_groups_highest_numbers():
    """The late hold-out of ``bench/realdata_tsetlin.py --late-holdout``: per newsgroup, the 10%
    of training postings with the highest message numbers. At least 99% of each group's test
    postings are numbered above the median of its earlier training postings: numbers follow
    time, the premise that makes the latest ones the training postings nearest the test period."""
    def numbered(split):
        rows = _rows("20newsgroups", split)
        return np.array([r["label"] for r in rows]), np.array([r["id"] for r in rows])

    labels, numbers = numbered("train")
    test_labels, test_numbers = numbered("test")
    bench = _bench_module("realdata_tsetlin")
    latest = bench.latest_postings(0.1)
    assert latest.shape == labels.shape
    for group in np.unique(labels):
        late, early = numbers[(labels == group) & latest], numbers[(labels == group) & ~latest]
        assert len(late) == round(0.1 * (len(late) + len(early))) >= 1
        assert late.min() > early.max()
        assert np.mean(test_numbers[test_labels == group] > np.median(early)) >= 0.99
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="late-holdout"):
            bench.latest_postings(bad)


# ------------------------------------------------------------------------------------------------
# Sizes from the data, early stopping


def test_auto_sizes_follow_the_documented_rule(rng):
    X, y = _text_like(rng, n=400, f=50)
    tm = TsetlinMachine(seed=1).fit(X, y, epochs=1, progress_bar=False)
    want = 2 * round(14 * np.sqrt(400) / 2)
    assert (tm.n_clauses_, tm.threshold_, tm.specificity_) == (want, round(0.8 * want), 3.0)
    assert tm.action_.shape[1] == want
    many = TsetlinMachine(seed=1, max_epochs=1).fit(*_text_like(rng, n=40_000, f=20, words=4), progress_bar=False)
    assert many.n_clauses_ == 2000  # the cap
    given = TsetlinMachine(30, 7, 2.5, seed=1).fit(X, y, epochs=1, progress_bar=False)
    assert (given.n_clauses_, given.threshold_, given.specificity_) == (30, 7, 2.5)
    # From 20 classes on the margin widens to 3.6 x clauses; 19 classes and a coalesced pool keep 0.8.
    for n_classes, coalesced, margin in ((20, False, 3.6), (19, False, 0.8), (20, True, 0.8)):
        labels = np.arange(400) % n_classes
        tm = TsetlinMachine(seed=1, coalesced=coalesced).fit(X, labels, epochs=1, progress_bar=False)
        assert tm.n_clauses_ == want
        assert tm.threshold_ == round(margin * want), (n_classes, coalesced)


def test_fit_without_epochs_stops_early_and_keeps_the_best_epoch(rng):
    X, y = _text_like(rng, n=600, f=60, density=0.05, words=3)
    tm = TsetlinMachine(20, 10, 3.0, seed=3, max_epochs=12, n_iter_no_change=2).fit(X, y, progress_bar=False)
    accs = [h["val_accuracy"] for h in tm.history_]
    best = int(np.argmax(accs)) + 1  # the first best epoch
    assert tm.best_epoch_ == tm.epochs_ == best
    assert len(accs) == 12 or len(accs) == best + 2 or accs[best - 1] == 1.0
    # The kept model is the best epoch's: its held-out accuracy is the best one recorded, and
    # it is the model of training the same rows for that many epochs.
    train_rows, held_out = tsetlin_module._holdout(np.searchsorted(np.unique(y), y), 0.1, 3)
    assert tm.score(X[held_out], y[held_out]) == accs[best - 1]
    replay = TsetlinMachine(20, 10, 3.0, seed=3)
    replay._check_params()
    replay._start(y, X.shape[1], None, n_samples=len(train_rows))
    docs = tsetlin_module._pack(X)
    for _ in range(best):
        replay._epoch(docs, replay._encode(y), len(y), "numpy", train_rows)
    np.testing.assert_array_equal(replay.action_, tm.action_)
    np.testing.assert_array_equal(replay.weights_, tm.weights_)
    # Explicit epochs keep their meaning.
    fixed = TsetlinMachine(20, 10, 3.0, seed=3).fit(X, y, epochs=4, progress_bar=False)
    assert len(fixed.history_) == fixed.epochs_ == 4


def test_ctrl_c_during_early_stopping_leaves_the_best_epoch_so_far(rng, monkeypatch):
    """A KeyboardInterrupt arriving after epoch k (a Ctrl-C in the kernel surfaces when it
    returns) propagates, and the model is the best of the epochs already scored."""
    X, y = _text_like(rng, n=600, f=60, density=0.05, words=3)
    params = dict(n_clauses=20, threshold=10, specificity=3.0, seed=3, max_epochs=30, n_iter_no_change=30)
    whole = TsetlinMachine(**params).fit(X, y, epochs=8, validation_data=(X[:200], y[:200]), progress_bar=False)
    accs = [h["val_accuracy"] for h in whole.history_]
    for stop in (1, 5, 8):
        states, tm = [], TsetlinMachine(**params)
        epoch = tm._epoch

        def interrupted(*args, **kwargs):
            epoch(*args, **kwargs)
            states.append((tm.action_.copy(), tm.weights_.copy()))
            if len(states) == stop:
                raise KeyboardInterrupt

        monkeypatch.setattr(tm, "_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            tm.fit(X, y, validation_data=(X[:200], y[:200]), progress_bar=False)
        scored = accs[:stop - 1]  # the interrupted epoch was never scored
        best = int(np.argmax(scored)) + 1 if scored else stop
        assert tm.epochs_ == tm.best_epoch_ == best, (stop, accs)
        np.testing.assert_array_equal(tm.action_, states[best - 1][0])
        np.testing.assert_array_equal(tm.weights_, states[best - 1][1])
        assert len(tm.history_) == stop - 1


def test_holdout_is_stratified_and_falls_back_on_tiny_sets(rng):
    y = np.repeat([0, 1, 2], [500, 300, 200])
    train, held = tsetlin_module._holdout(y, 0.1, 0)
    assert np.bincount(y[held]).tolist() == [50, 30, 20]
    assert sorted(np.r_[train, held].tolist()) == list(range(1000))
    assert tsetlin_module._holdout(np.r_[np.zeros(999, int), 1], 0.1, 0) == (None, None)  # one class-1 doc
    # 100 held out for 3 classes is enough; 119 for 6 is not (20 per class on average).
    assert tsetlin_module._holdout(np.arange(1000) % 3, 0.1, 0)[1] is not None
    assert tsetlin_module._holdout(np.arange(1190) % 6, 0.1, 0) == (None, None)
    # Too small to hold out: every document trains, for the fixed count (capped by max_epochs).
    X, yy = _text_like(rng, n=300, f=40)
    for cap, want in ((30, 25), (7, 7)):
        tm = TsetlinMachine(10, 5, 3.0, seed=0, max_epochs=cap).fit(X, yy, progress_bar=False)
        assert tm.epochs_ == tm.best_epoch_ == len(tm.history_) == want
        assert all("val_accuracy" not in h for h in tm.history_)
        same = TsetlinMachine(10, 5, 3.0, seed=0).fit(X, yy, epochs=want, progress_bar=False)
        np.testing.assert_array_equal(same.action_, tm.action_)


@pytest.mark.parametrize("name, value", [("max_epochs", 0), ("n_iter_no_change", 0), ("validation_fraction", 1.0),
                                         ("validation_fraction", 0.0), ("n_clauses", "many"), ("specificity", "x")])
def test_bad_stopping_and_size_parameters_are_named(name, value):
    X, y = np.eye(4, dtype=np.uint8), [0, 1, 0, 1]
    with pytest.raises((ValueError, TypeError), match=name):
        TsetlinMachine(seed=0, **{name: value}).fit(X, y, progress_bar=False)


def test_saved_auto_model_keeps_its_sizes(rng, tmp_path):
    X, y = _text_like(rng, n=300, f=40)
    tm = TsetlinMachine(seed=2).fit(X, y, epochs=2, progress_bar=False)
    tm.save(tmp_path / "m.npz")
    back = TsetlinMachine.load(tmp_path / "m.npz")
    assert back.n_clauses == "auto" and (back.n_clauses_, back.threshold_) == (tm.n_clauses_, tm.threshold_)
    np.testing.assert_array_equal(back.class_sums(X), tm.class_sums(X))


@pytest.mark.parametrize("cap, budget", [(1, None), (3, None), (2, 4)])
def test_negation_cap_bounds_every_clause(rng, cap, budget):
    X, y = _text_like(rng, n=300, f=70, density=0.1)
    capped = TsetlinMachine(20, 10, 4.0, seed=5, max_negated_literals=cap, max_included_literals=budget).fit(
        X, y, epochs=3, progress_bar=False)
    fw = capped.action_.shape[2] // 2
    negated = np.vectorize(lambda w: bin(int(w)).count("1"))(capped.action_[:, :, fw:]).sum(axis=2)
    assert negated.max() <= cap
    if budget is not None:
        assert np.vectorize(lambda w: bin(int(w)).count("1"))(capped.action_).sum(axis=2).max() <= budget
    # Without the cap the same machine includes more negations: the cap did something. (On a
    # fixed draw: a fresh one occasionally leaves the free machine at <= 3 negations.)
    Xf, yf = _text_like(np.random.default_rng(0), n=300, f=70, density=0.1)
    free = TsetlinMachine(20, 10, 4.0, seed=5, max_included_literals=budget).fit(Xf, yf, epochs=3, progress_bar=False)
    capped_f = TsetlinMachine(20, 10, 4.0, seed=5, max_negated_literals=cap, max_included_literals=budget).fit(
        Xf, yf, epochs=3, progress_bar=False)
    count = np.vectorize(lambda w: bin(int(w)).count("1"))
    assert count(free.action_[:, :, fw:]).sum(axis=2).max() > cap >= count(capped_f.action_[:, :, fw:]).sum(axis=2).max()
    assert all(sum(neg for _, neg in r.literals) <= cap for r in capped.rules())
    # 0 is "no negated literals".
    none = TsetlinMachine(20, 10, 4.0, seed=5, max_negated_literals=0).fit(X, y, epochs=2, progress_bar=False)
    assert none._config()["negated_literals"] is False and not none.action_[:, :, fw:].any()


def test_speed_workload_bayes_limit_matches_a_fresh_draw(rng):
    """The synthetic speed workload's Bayes-optimal accuracy (bench/tsetlin_workload.py), the
    ceiling its accuracy figures are read against, agrees with the Bayes rule scored on a fresh
    draw (ties scored 1/2), within 5 standard errors."""
    workload = _bench_module("tsetlin_workload")
    X, y = workload.make(40_000, seed=int(rng.integers(2**31)))
    pred, ties = workload.bayes_rule(X)
    drawn = np.mean(np.where(ties, 0.5, pred == y))
    exact = workload.bayes_accuracy()
    assert abs(drawn - exact) < 5 * np.sqrt(exact * (1 - exact) / len(y)), (drawn, exact)
    # The indicative words' background presence matters: without it the limit would be 93.87%.
    assert abs(workload.bayes_accuracy(density=0.0) - 0.9387) < 1e-4 and exact < 0.925


# ------------------------------------------------------------------------------------------------
# Ensembles of machines


def _machines_oracle(X, y, Xq, seeds, **params):
    """Independently fitted machines with `seeds`: their class sums over their thresholds, added."""
    votes = 0.0
    for s in seeds:
        tm = TsetlinMachine(**params, seed=s).fit(X, y, epochs=3, progress_bar=False)
        votes = votes + tm.class_sums(Xq).astype(np.float64) / tm.threshold_
    return votes


@pytest.mark.parametrize("n_estimators", [1, 3])
def test_ensemble_votes_are_its_machines_sums_over_their_thresholds(rng, n_estimators):
    X, y = _text_like(rng, n=500, f=80)
    three = np.array(["a", "b", "c"])[y + (X[:, 20] & (y == 0))]  # three classes too
    base = int(rng.integers(0, 2**32))
    for labels in (y, three):
        vote = TsetlinEnsemble(TsetlinMachine(30, 12, 3.0, seed=base), n_estimators=n_estimators)
        vote.fit(X, labels, epochs=3, progress_bar=False)
        assert [m.seed for m in vote.estimators_] == [base + i for i in range(n_estimators)] and vote.seed_ == base
        expected = _machines_oracle(X, labels, X, [base + i for i in range(n_estimators)], n_clauses=30,
                                    threshold=12, specificity=3.0)
        np.testing.assert_array_equal(vote.votes(X), expected)
        np.testing.assert_array_equal(vote.predict(X), np.unique(labels)[np.argmax(expected, axis=1)])
        margin = vote.decision_function(X)
        if len(vote.classes_) == 2:
            np.testing.assert_array_equal(margin, expected[:, 1] - expected[:, 0])
        else:
            np.testing.assert_array_equal(margin, expected)
        assert vote.score(X, labels) == np.mean(vote.predict(X) == labels)
    if n_estimators == 1:
        alone = TsetlinMachine(30, 12, 3.0, seed=base).fit(X, three, epochs=3, progress_bar=False)
        np.testing.assert_array_equal(vote.predict(X), alone.predict(X))


def test_ensemble_ties_go_to_the_first_class_and_seeds_wrap(rng):
    X, y = _text_like(rng, n=200, f=40)
    vote = TsetlinEnsemble(TsetlinMachine(10, 5, 3.0, seed=2**64 - 1), n_estimators=2).fit(X, y, epochs=1,
                                                                                          progress_bar=False)
    assert [m.seed for m in vote.estimators_] == [2**64 - 1, 0]
    empty = np.zeros((3, 40), dtype=np.uint8)
    for m in vote.estimators_:
        m.action_[...] = 0  # no clause includes anything: every sum 0, a tie
    assert list(vote.predict(empty)) == [vote.classes_[0]] * 3
    drawn = TsetlinEnsemble(TsetlinMachine(10, 5, 3.0), n_estimators=3).fit(X, y, epochs=1, progress_bar=False)
    assert [m.seed_ for m in drawn.estimators_] == [(drawn.seed_ + i) % 2**64 for i in range(3)]


def test_ensemble_save_load_and_hostile_folders(rng, tmp_path):
    import json

    X, y = _text_like(rng, n=300, f=70)
    labels = np.array(["neg", "pos"])[y]
    vote = TsetlinEnsemble(TsetlinMachine(20, 8, 3.0, seed=5), n_estimators=3).fit(X, labels, epochs=2,
                                                                                  progress_bar=False)
    folder = tmp_path / "vote"
    vote.save(folder)
    back = TsetlinEnsemble.load(folder)
    np.testing.assert_array_equal(back.votes(X), vote.votes(X))
    assert back.n_estimators == 3 and back.estimator.seed == 5 and back.seed_ == 5
    assert list(back.predict(X)) == list(pickle.loads(pickle.dumps(vote)).predict(X))
    manifest = json.loads((folder / "ensemble.json").read_text())

    def broken(name, change):
        bad = tmp_path / name
        import shutil

        shutil.copytree(folder, bad)
        change(bad)
        return bad

    cases = [
        ("not_json", lambda d: (d / "ensemble.json").write_text("{nope")),
        ("huge", lambda d: (d / "ensemble.json").write_text(" " * 5000 + json.dumps(manifest))),
        ("format", lambda d: (d / "ensemble.json").write_text(json.dumps({**manifest, "format": "x"}))),
        ("count", lambda d: (d / "ensemble.json").write_text(json.dumps({**manifest, "n_estimators": 10**9}))),
        ("bool", lambda d: (d / "ensemble.json").write_text(json.dumps({**manifest, "n_estimators": True}))),
        ("seed", lambda d: (d / "ensemble.json").write_text(json.dumps({**manifest, "seed_": -1}))),
        ("list", lambda d: (d / "ensemble.json").write_text("[1, 2]")),
        ("swapped", lambda d: os.replace(d / "machine_0.npz", d / "machine_1.npz")
         or vote.estimators_[1].save(d / "machine_0.npz")),
        ("regular", lambda d: os.remove(d / "machine_1.npz") or os.mkfifo(d / "machine_1.npz")),
    ]
    for name, change in cases:
        with pytest.raises(ValueError, match=name):
            TsetlinEnsemble.load(broken(name, change))
    other = TsetlinEnsemble(TsetlinMachine(22, 8, 3.0, seed=6), n_estimators=2).fit(X, labels, epochs=1,
                                                                                   progress_bar=False)
    stranger = broken("stranger", lambda d: other.estimators_[0].save(d / "machine_1.npz"))
    with pytest.raises(ValueError, match="machine_1.npz does not belong"):
        TsetlinEnsemble.load(stranger)
    with pytest.raises(ValueError, match="missing: machine_2.npz is missing"):  # a defect of the folder
        TsetlinEnsemble.load(broken("missing", lambda d: os.remove(d / "machine_2.npz")))
    with pytest.raises(FileNotFoundError, match="no ensemble.json"):
        TsetlinEnsemble.load(tmp_path)
    with pytest.raises(ValueError, match="not a saved TsetlinEnsemble folder"):
        TsetlinEnsemble.load(folder / "machine_0.npz")  # a file, not a folder
    with pytest.raises(ValueError, match="not a saved TsetlinEnsemble folder"):
        TsetlinEnsemble.load(broken("manifest_dir", lambda d: os.remove(d / "ensemble.json")
                                    or os.mkdir(d / "ensemble.json")))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_estimators=0), ValueError, "n_estimators"),
    (dict(n_estimators=10**6), ValueError, "n_estimators"),
    (dict(n_estimators=True), TypeError, "n_estimators"),
    (dict(n_estimators=2.0), TypeError, "n_estimators"),
    (dict(estimator="tm"), TypeError, "estimator"),
    (dict(estimator=TsetlinMachine(n_clauses=3)), ValueError, "n_clauses"),
])
def test_ensemble_bad_parameters(kwargs, error, match):
    X = np.eye(8, dtype=np.uint8)
    with pytest.raises(error, match=match):
        TsetlinEnsemble(**kwargs).fit(X, [0, 1] * 4, epochs=1, progress_bar=False)
    if "n_estimators" in kwargs:
        with pytest.raises(error, match=match):
            text_pipeline(n_estimators=kwargs["n_estimators"])  # at once, before any vocabulary


def test_failed_ensemble_fit_keeps_the_fitted_machines(rng):
    X, y = _text_like(rng, n=200, f=40)
    vote = TsetlinEnsemble(TsetlinMachine(10, 5, 3.0, seed=1), n_estimators=2).fit(X, y, epochs=1,
                                                                                  progress_bar=False)
    before = vote.votes(X)
    vote.set_params(estimator__seed=7)
    with pytest.raises(ValueError, match="y"):
        vote.fit(X, y[:-1], epochs=1, progress_bar=False)
    np.testing.assert_array_equal(vote.votes(X), before)
    assert vote.seed_ == 1 and [m.seed_ for m in vote.estimators_] == [1, 2]
    with pytest.raises(NotFittedError):
        TsetlinEnsemble().predict(X)


def test_ensemble_partial_fit_is_its_machines_partial_fits(rng):
    X, y = _text_like(rng, n=300, f=60)
    three = np.array(["a", "b", "c"])[y + (X[:, 20] & (y == 0))]
    base = int(rng.integers(0, 2**32))
    for labels in (y, three):
        classes = np.unique(labels)
        halves = (slice(0, 150), slice(150, 300))
        first = halves[0] if len(classes) == 2 else np.flatnonzero(labels != classes[-1])[:100]
        vote = TsetlinEnsemble(TsetlinMachine(20, 8, 3.0, seed=base), n_estimators=3)
        vote.partial_fit(X[first], labels[first], classes=classes)  # the first batch may lack a label
        for _ in range(2):
            vote.partial_fit(X[halves[1]], labels[halves[1]])
        expected = 0.0
        for i in range(3):
            tm = TsetlinMachine(20, 8, 3.0, seed=base + i).partial_fit(X[first], labels[first], classes=classes)
            for _ in range(2):
                tm.partial_fit(X[halves[1]], labels[halves[1]])
            expected = expected + tm.class_sums(X).astype(np.float64) / tm.threshold_
        np.testing.assert_array_equal(vote.votes(X), expected)
        assert list(vote.classes_) == list(classes) and vote.seed_ == base and vote.n_features_in_ == 60
    # fit, then more passes: each machine continues from its fitted state
    vote = TsetlinEnsemble(TsetlinMachine(20, 8, 3.0, seed=base), n_estimators=2).fit(X, y, epochs=2,
                                                                                     progress_bar=False)
    vote.partial_fit(X, y)
    expected = 0.0
    for i in range(2):
        tm = TsetlinMachine(20, 8, 3.0, seed=base + i).fit(X, y, epochs=2, progress_bar=False).partial_fit(X, y)
        expected = expected + tm.class_sums(X).astype(np.float64) / tm.threshold_
    np.testing.assert_array_equal(vote.votes(X), expected)


def test_ensemble_partial_fit_refusals_and_interruptions(rng, monkeypatch):
    X, y = _text_like(rng, n=200, f=40)
    vote = TsetlinEnsemble(TsetlinMachine(10, 5, 3.0, seed=3), n_estimators=3)
    with pytest.raises(ValueError, match="y"):
        vote.partial_fit(X, y[:-1])
    with pytest.raises(ValueError, match="not among classes"):
        vote.partial_fit(X, y, classes=[0])
    with pytest.raises(NotFittedError):
        vote.predict(X)  # a refused first call leaves it unfitted
    vote.partial_fit(X, y)
    before = vote.votes(X)
    with pytest.raises(ValueError, match="features"):
        vote.partial_fit(X[:, :30], y)  # refused by the first machine before anything changes
    with pytest.raises(ValueError, match="classes"):
        vote.partial_fit(X, y, classes=[0, 1, 2])
    np.testing.assert_array_equal(vote.votes(X), before)

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vote.estimators_[1], "partial_fit", stop)
    with pytest.raises(KeyboardInterrupt):
        vote.partial_fit(X, y)  # machine 0 has had its pass, 1 and 2 have not
    monkeypatch.undo()
    assert vote.predict(X).shape == (200,)  # it still votes
    with pytest.raises(RuntimeError, match="machines 1-2 are one pass behind"):
        vote.partial_fit(X, y)
    vote.fit(X, y, epochs=1, progress_bar=False)
    vote.partial_fit(X, y)  # fit starts again
    restored = pickle.loads(pickle.dumps(vote))
    np.testing.assert_array_equal(restored.partial_fit(X, y).votes(X), vote.partial_fit(X, y).votes(X))


@pytest.mark.parametrize("per_machine", [0.4, 25])
def test_random_subspace_vote_is_its_machines_on_their_columns(rng, per_machine, tmp_path):
    X, y = _text_like(rng, n=300, f=60)
    three = np.array(["a", "b", "c"])[y + (X[:, 20] & (y == 0))]
    base = int(rng.integers(0, 2**32))
    k = 24 if per_machine == 0.4 else 25
    for labels in (y, three):
        vote = TsetlinEnsemble(TsetlinMachine(20, 8, 3.0, seed=base), 3, features_per_machine=per_machine)
        vote.fit(X, labels, epochs=2, progress_bar=False)
        subsets = vote.feature_subsets_
        assert vote.n_features_in_ == 60 and [len(c) for c in subsets] == [k] * 3
        for cols in subsets:
            assert np.all(np.diff(cols) > 0) and cols.min() >= 0 and cols.max() < 60
        assert len({tuple(c) for c in subsets}) == 3  # each machine its own columns
        expected = 0.0
        for i, cols in enumerate(subsets):
            tm = TsetlinMachine(20, 8, 3.0, seed=base + i).fit(X[:, cols], labels, epochs=2, progress_bar=False)
            expected = expected + tm.class_sums(X[:, cols]).astype(np.float64) / tm.threshold_
        np.testing.assert_array_equal(vote.votes(X), expected)
        np.testing.assert_array_equal(vote.votes(sp.csr_matrix(X)), expected)
        np.testing.assert_array_equal(vote.predict(X.tolist()), np.unique(labels)[np.argmax(expected, axis=1)])
    # The same seed draws the same columns; rules and explain speak of X's columns.
    again = TsetlinEnsemble(TsetlinMachine(20, 8, 3.0, seed=base), 3, features_per_machine=per_machine)
    again.fit(X, three, epochs=1, progress_bar=False)
    assert all(np.array_equal(a, b) for a, b in zip(again.feature_subsets_, subsets))
    names = [f"w{j}" for j in range(60)]
    for i, rule in vote.rules(feature_names=names)[:20]:
        assert {j for j, _ in rule.literals} <= set(vote.feature_subsets_[i].tolist())
        assert all(f"w{j}" in str(rule) for j, _ in rule.literals)
    for doc in X[:10]:
        why = vote.explain(doc, feature_names=names)
        for part in why["machines"]:
            assert all(r.fires(doc) for r in part["rules"])  # global literals, tested on the whole row
        assert why["prediction"] == vote.predict(doc[None, :])[0]
    with pytest.raises(ValueError, match="X has 59 features, but TsetlinEnsemble is expecting 60"):
        vote.predict(X[:, :59])
    with pytest.raises(ValueError, match="feature_names"):
        vote.rules(feature_names=names[:-1])
    vote.partial_fit(X, three)  # more passes keep each machine on its columns
    with pytest.raises(ValueError, match="X has 59 features"):
        vote.partial_fit(X[:, :59], three)
    vote.save(tmp_path / "vote")
    back = TsetlinEnsemble.load(tmp_path / "vote")
    assert back.features_per_machine == per_machine
    np.testing.assert_array_equal(back.votes(X), vote.votes(X))
    assert all(np.array_equal(a, b) for a, b in zip(back.feature_subsets_, vote.feature_subsets_))
    import json

    manifest = json.loads((tmp_path / "vote" / "ensemble.json").read_text())
    for name, change, match in [("bad_fraction", {"features_per_machine": 1.5}, "features_per_machine"),
                                ("bad_kind", {"features_per_machine": "half"}, "features_per_machine"),
                                ("too_wide", {"n_features_in": 20}, "more than|not the"),
                                ("wrong_width", {"n_features_in": 70}, "not the|do not match"),
                                ("digest", {"feature_subsets_sha256": "0" * 64}, "do not match"),
                                ("no_width", {"n_features_in": None}, "n_features_in")]:
        import shutil

        bad = tmp_path / name
        shutil.copytree(tmp_path / "vote", bad)
        (bad / "ensemble.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(ValueError, match=match):
            TsetlinEnsemble.load(bad)


@pytest.mark.parametrize("value, error", [(0, ValueError), (-3, ValueError), (0.0, ValueError), (1.5, ValueError),
                                          (True, TypeError), ("half", TypeError), (61, ValueError)])
def test_features_per_machine_refusals(rng, value, error):
    X, y = _text_like(rng, n=60, f=60)
    with pytest.raises(error, match="features_per_machine"):
        TsetlinEnsemble(TsetlinMachine(10, 5, 3.0, seed=0), 2, features_per_machine=value).fit(
            X, y, epochs=1, progress_bar=False)
    if value != 61:
        with pytest.raises(error, match="features_per_machine"):
            text_pipeline(n_estimators=2, features_per_machine=value)
    with pytest.raises(ValueError, match="X: expected 2 dimensions"):
        TsetlinEnsemble(TsetlinMachine(10, 5, 3.0, seed=0), 2, features_per_machine=0.5).fit(X[0], y[:1], epochs=1)


def test_text_pipeline_of_a_random_subspace_vote():
    texts = ["rash after penicillin", "fracture of the arm", "penicillin rash again", "arm in a cast"] * 10
    labels = ["allergy", "ortho", "allergy", "ortho"] * 10
    pipe = text_pipeline(max_features=20, min_df=1, n_clauses=10, threshold=5, seed=0, features_per_machine=0.5)
    pipe.fit(texts, labels, tm__epochs=3, tm__progress_bar=False)
    vote = pipe.named_steps["tm"]
    n_words = len(pipe.feature_names())
    assert isinstance(vote, TsetlinEnsemble) and len(vote.estimators_) == 1 and vote.n_features_in_ == n_words
    assert len(vote.feature_subsets_[0]) == n_words // 2
    words = set(pipe.feature_names())
    for i, rule in pipe.rules():
        used = {pipe.feature_names()[j] for j, _ in rule.literals}
        assert used <= words and used <= {pipe.feature_names()[j] for j in vote.feature_subsets_[i]}
    assert pipe.explain("rash after penicillin")["prediction"] == pipe.predict(["rash after penicillin"])[0]


def test_text_pipeline_of_an_ensemble():
    texts = ["rash after penicillin", "fracture of the arm", "penicillin rash again", "arm in a cast"] * 10
    labels = ["allergy", "ortho", "allergy", "ortho"] * 10
    pipe = text_pipeline(max_features=20, n_clauses=10, threshold=5, seed=0, n_estimators=3)
    pipe.fit(texts, labels, tm__epochs=3, tm__progress_bar=False)
    vote = pipe.named_steps["tm"]
    assert isinstance(vote, TsetlinEnsemble) and [m.seed for m in vote.estimators_] == [0, 1, 2]
    assert pipe.score(texts, labels) == 1.0
    rules = pipe.rules()
    assert {i for i, _ in rules} <= {0, 1, 2} and str(rules[0][1]).startswith("IF ")
    shares = [r.weight / vote.estimators_[i].threshold_ for i, r in rules]
    assert shares == sorted(shares, reverse=True)
    why = pipe.explain("penicillin rash")
    assert why["prediction"] == "allergy" and len(why["machines"]) == 3
    assert why["votes"]["allergy"] == pytest.approx(sum(p["class_sums"]["allergy"] / m.threshold_
                                                        for p, m in zip(why["machines"], vote.estimators_)))
    back = pickle.loads(pickle.dumps(pipe))
    assert list(back.predict(texts)) == list(pipe.predict(texts))


# ------------------------------------------------------------------------------------------------
# One binary model per class on the class's own columns


def _chi2_columns(X, hit, k):
    """The oracle's columns: scikit-learn's chi2 of the presence bits against `hit`, the k
    largest (ties to the lower column, NaN last), sorted; for k="auto" those with a p-value
    below 1e-4, at least 10."""
    from sklearn.feature_selection import chi2

    scores, pvalues = chi2((np.asarray(X) != 0).astype(np.float64), hit.astype(int))
    if k == "auto":
        k = max(int(np.sum(pvalues < 1e-4)), min(10, X.shape[1]))
    scores = np.where(np.isnan(scores), -np.inf, scores)
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    return np.sort(order[:k])


def _ovr_data(rng, n=240):
    X, y = _text_like(rng, n=n, f=40, words=6)
    three = np.where(y == 1, "c", np.where(X[:, 0] == 1, "b", "a"))
    X[:, 30] = X[:, 3]  # a tie with an indicative column
    X[:, 31] = X[:, 25]  # a tie with a noise column
    X[:, 39] = 0  # no document: its chi2 is NaN
    return X, y, three


@pytest.mark.parametrize("k", [None, 1, 7, 40, "auto"])
def test_one_vs_rest_is_binary_machines_on_their_classes_columns(rng, k):
    from fastcore_ad import TsetlinOneVsRest

    X, y, three = _ovr_data(rng)
    base = int(rng.integers(0, 2**32))
    for labels in (y, three):
        ovr = TsetlinOneVsRest(TsetlinMachine(20, 8, 3.0, seed=base), features_per_class=k)
        ovr.fit(X, labels, epochs=2, progress_bar=False)
        classes = np.unique(labels)
        np.testing.assert_array_equal(ovr.classes_, classes)
        expected = np.zeros((len(X), len(classes)))
        for j, c in enumerate(classes):
            hit = (labels == c).astype(np.int64)
            cols = np.arange(40) if k is None else _chi2_columns(X, hit, k)
            if k is None:
                assert ovr.feature_columns_ is None
            else:
                np.testing.assert_array_equal(ovr.feature_columns_[j], cols)
            tm = TsetlinMachine(20, 8, 3.0, seed=base + j).fit(X[:, cols], hit, epochs=2, progress_bar=False)
            assert ovr.estimators_[j].seed == base + j
            sums = tm.class_sums(X[:, cols]).astype(np.float64)
            expected[:, j] = (sums[:, 1] - sums[:, 0]) / tm.threshold_
        np.testing.assert_array_equal(ovr.votes(X), expected)
        np.testing.assert_array_equal(ovr.votes(sp.csr_matrix(X)), expected)
        np.testing.assert_array_equal(ovr.predict(X.tolist()), classes[np.argmax(expected, axis=1)])
        if len(classes) == 2:
            np.testing.assert_array_equal(ovr.decision_function(X), expected[:, 1] - expected[:, 0])
        # Sparse and list input choose the same columns.
        again = TsetlinOneVsRest(TsetlinMachine(20, 8, 3.0, seed=base), features_per_class=k)
        for same in (sp.csr_matrix(X), X.tolist()):
            again.fit(same, labels, epochs=2, progress_bar=False)
            np.testing.assert_array_equal(again.votes(X), expected)


def test_one_vs_rest_column_ties_and_empty_columns(rng):
    from fastcore_ad import TsetlinOneVsRest

    X, y, _ = _ovr_data(rng)
    ovr = TsetlinOneVsRest(TsetlinMachine(10, 5, 3.0, seed=0), features_per_class=39).fit(
        X, y, epochs=1, progress_bar=False)
    for cols in ovr.feature_columns_:
        assert 39 not in cols  # the column no document uses is the one left out
    X2 = np.zeros((8, 3), dtype=np.uint8)
    X2[:, 1] = X2[:, 2] = [1, 1, 1, 1, 0, 0, 0, 0]  # two equal columns: the lower one wins
    fit = TsetlinOneVsRest(TsetlinMachine(10, 5, 3.0, seed=0), features_per_class=1).fit(
        X2, [0, 0, 0, 0, 1, 1, 1, 1], epochs=1, progress_bar=False)
    assert [c.tolist() for c in fit.feature_columns_] == [[1], [1]]


def test_one_vs_rest_of_ensembles_is_their_votes(rng):
    from fastcore_ad import TsetlinOneVsRest

    X, _, three = _ovr_data(rng)
    base = int(rng.integers(0, 2**32))
    ovr = TsetlinOneVsRest(TsetlinEnsemble(TsetlinMachine(20, 8, 3.0, seed=base), 2, features_per_machine=0.5),
                           features_per_class=12).fit(X, three, epochs=2, progress_bar=False)
    expected = []
    for j, c in enumerate(np.unique(three)):
        hit = (three == c).astype(np.int64)
        cols = _chi2_columns(X, hit, 12)
        vote = TsetlinEnsemble(TsetlinMachine(20, 8, 3.0, seed=base + 2 * j), 2, features_per_machine=0.5)
        v = vote.fit(X[:, cols], hit, epochs=2, progress_bar=False).votes(X[:, cols])
        expected.append(v[:, 1] - v[:, 0])
        assert [m.seed for m in ovr.estimators_[j].estimators_] == [base + 2 * j, base + 2 * j + 1]
    np.testing.assert_array_equal(ovr.votes(X), np.stack(expected, axis=1))
    names = [f"w{j}" for j in range(40)]
    rules = ovr.rules(feature_names=names)
    for rule in rules:
        j = int(np.searchsorted(ovr.classes_, rule.class_label))
        assert {f for f, _ in rule.literals} <= set(ovr.feature_columns_[j].tolist())
    for doc in X[:5]:
        why = ovr.explain(doc, feature_names=names)
        assert all(r.fires(doc) for r in why["rules"])
        assert why["prediction"] == ovr.predict(doc[None, :])[0]


def test_one_vs_rest_rules_add_up_to_the_votes(rng):
    from fastcore_ad import TsetlinOneVsRest

    X, _, three = _ovr_data(rng)
    ovr = TsetlinOneVsRest(TsetlinMachine(20, 8, 3.0, seed=5), features_per_class=10).fit(
        X, three, epochs=3, progress_bar=False)
    names = [f"w{j}" for j in range(40)]
    rules = ovr.rules(feature_names=names, class_names=["A", "B", "C"])
    shares = [r.weight / ovr.estimators_[int(np.searchsorted(ovr.classes_, r.class_label))].threshold_
              for r in rules]
    assert shares == sorted(shares, reverse=True)
    assert {r.class_name for r in rules} <= {"A", "B", "C"} and any(r.weight < 0 for r in rules)
    votes = ovr.votes(X)
    for i, doc in enumerate(X[:30]):
        why = ovr.explain(doc, feature_names=names)
        assert all(r.fires(doc) for r in why["rules"])
        assert why["rules"] == [r for r in ovr.rules(feature_names=names) if r.fires(doc)]
        for j, c in enumerate(ovr.classes_):
            total = sum(r.weight for r in why["rules"] if r.class_label == c)
            assert total == pytest.approx(votes[i, j] * ovr.estimators_[j].threshold_)
            assert why["votes"][c] == votes[i, j]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"features_per_class": 0}, ValueError, "features_per_class"),
    ({"features_per_class": -2}, ValueError, "features_per_class"),
    ({"features_per_class": True}, TypeError, "features_per_class"),
    ({"features_per_class": 2.5}, TypeError, "features_per_class"),
    ({"features_per_class": "all"}, TypeError, "features_per_class"),
    ({"features_per_class": "AUTO"}, TypeError, "features_per_class"),
    ({"estimator": "machine"}, TypeError, "estimator"),
    ({"estimator": TsetlinMachine(n_clauses=3)}, ValueError, "n_clauses"),
])
def test_one_vs_rest_bad_parameters(rng, kwargs, error, match):
    from fastcore_ad import TsetlinOneVsRest

    X, y, _ = _ovr_data(rng, n=40)
    with pytest.raises(error, match=match):
        TsetlinOneVsRest(**kwargs).fit(X, y, epochs=1, progress_bar=False)
    if "features_per_class" in kwargs:
        with pytest.raises(error, match=match):
            text_pipeline(**kwargs)


def test_one_vs_rest_refusals(rng):
    from fastcore_ad import TsetlinOneVsRest

    X, y, three = _ovr_data(rng, n=60)
    model = TsetlinOneVsRest(TsetlinMachine(10, 5, 3.0, seed=0), features_per_class=5)
    with pytest.raises(NotFittedError):
        model.predict(X)
    with pytest.raises(ValueError, match="one class only"):
        model.fit(X, np.zeros(60, dtype=int), epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="y: 59 labels for 60 samples"):
        model.fit(X, y[:59], epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="X: expected 2 dimensions"):
        model.fit(X[0], y[:1], epochs=1)
    with pytest.raises(ValueError, match="validation_data: labels"):
        model.fit(X, three, epochs=1, validation_data=(X, np.full(60, "z")), progress_bar=False)
    nan = X.astype(np.float64)
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        model.fit(nan, y, epochs=1, progress_bar=False)
    for bad, match in ((X - 0.5, "negative values"), (X.astype(str), "ranks numbers")):
        with pytest.raises(ValueError, match=match):
            model.fit(bad, y, epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="NaN"):
        model.fit(sp.csr_matrix(nan), y, epochs=1, progress_bar=False)
    assert not hasattr(model, "estimators_")  # refused fits leave nothing half-fitted
    model.fit(X, three, epochs=1, validation_data=(X, three), progress_bar=False)
    before = model.votes(X)
    with pytest.raises(ValueError):
        model.fit(nan, three, epochs=1, progress_bar=False)
    np.testing.assert_array_equal(model.votes(X), before)  # a failed fit keeps the previous model
    with pytest.raises(ValueError, match="X has 39 features, but TsetlinOneVsRest is expecting 40"):
        model.predict(X[:, :39])
    with pytest.raises(ValueError, match="feature_names"):
        model.rules(feature_names=["w"] * 39)
    with pytest.raises(ValueError, match="class_names"):
        model.rules(class_names=["a", "b"])
    with pytest.raises(ValueError, match="x: expected one document"):
        model.explain(X[:2])
    # Per-class counts of an absurd width are refused before they are allocated.
    huge = sp.csr_matrix((np.ones(4), (np.arange(4), [0, 1, 2, 3])), shape=(4, 2**45))
    with pytest.raises(MemoryError, match="per-class term counts"):
        TsetlinOneVsRest(features_per_class=5).fit(huge, [0, 1, 0, 1], epochs=1, progress_bar=False)


def test_text_pipeline_one_model_per_class():
    from fastcore_ad import TsetlinOneVsRest

    texts = ["rash after penicillin", "fracture of the arm", "penicillin rash again", "arm in a cast",
             "cough and fever", "fever with a cough"] * 10
    labels = ["allergy", "ortho", "allergy", "ortho", "resp", "resp"] * 10
    pipe = text_pipeline(min_df=1, n_clauses=10, threshold=5, seed=0, features_per_class=3)
    pipe.fit(texts, labels, tm__epochs=5, tm__progress_bar=False)
    ovr = pipe.named_steps["tm"]
    assert isinstance(ovr, TsetlinOneVsRest) and [m.seed for m in ovr.estimators_] == [0, 1, 2]
    words = pipe.feature_names()
    assert len(words) == len({w for w in " ".join(texts).split() if len(w) > 1})  # "auto": every term
    assert pipe.score(texts, labels) == 1.0
    for rule in pipe.rules():
        j = list(ovr.classes_).index(rule.class_label)
        assert {words[f] for f, _ in rule.literals} <= {words[f] for f in ovr.feature_columns_[j]}
    assert "penicillin" in {words[f] for f in ovr.feature_columns_[0]}
    assert pipe.explain("penicillin rash")["prediction"] == "allergy"
    back = pickle.loads(pickle.dumps(pipe))
    assert list(back.predict(texts)) == list(pipe.predict(texts))
    vote = text_pipeline(min_df=1, n_clauses=10, threshold=5, seed=0, features_per_class=3, n_estimators=2)
    vote.fit(texts, labels, tm__epochs=5, tm__progress_bar=False)
    assert [[m.seed for m in e.estimators_] for e in vote.named_steps["tm"].estimators_] == [[0, 1], [2, 3], [4, 5]]


def test_text_pipeline_decides_one_model_per_class_from_20_classes(rng):
    import scipy.sparse as sp
    from sklearn.base import clone
    from sklearn.feature_extraction.text import CountVectorizer

    from fastcore_ad import TsetlinOneVsRest

    # 24 classes, each with two words of its own (repeated at random), over shared noise words.
    n_classes, n_docs = 24, 480
    labels = np.array([f"c{j:02d}" for j in rng.integers(0, n_classes, n_docs)])
    noise = [f"n{j}" for j in range(60)]
    texts = [" ".join([lab + "a"] * int(rng.integers(1, 6)) + [lab + "b", *rng.choice(noise, 5)]) for lab in labels]
    seed = int(rng.integers(0, 2**31))
    pipe = text_pipeline(min_df=1, n_clauses=10, threshold=5, seed=seed)
    assert pipe.get_params()["one_vs_rest_from"] == 20 and pipe.get_params()["machines_per_class"] == 3
    pipe.fit(texts, labels, tm__epochs=2, tm__progress_bar=False)
    ovr = pipe.named_steps["tm"]
    assert isinstance(ovr, TsetlinOneVsRest) and ovr.features_per_class == "auto"
    assert all(isinstance(m, TsetlinEnsemble) and len(m.estimators_) == 3 for m in ovr.estimators_)
    assert pipe.named_steps["select"].k_ == "all" and pipe.named_steps["levels"].levels_ == (1, 2, 4)
    # The oracle: the count levels of the whole vocabulary, one vote of three machines per class.
    vec = CountVectorizer(min_df=1)
    counts = vec.fit_transform(texts)
    X = sp.hstack([(counts >= c).astype(np.uint8) for c in (1, 2, 4)], format="csr")
    oracle = TsetlinOneVsRest(TsetlinEnsemble(TsetlinMachine(10, 5, seed=seed), 3), "auto")
    oracle.fit(X, labels, epochs=2, progress_bar=False)
    np.testing.assert_array_equal(ovr.votes(pipe[:-1].transform(texts)), oracle.votes(X))
    words = list(vec.get_feature_names_out())
    assert list(pipe.feature_names()) == words + [f"{w} (2+ times)" for w in words] + [f"{w} (4+ times)" for w in words]
    assert pipe.score(texts, labels) > 0.9
    # Fewer classes, or a clone refitted on them: exactly the presence pipeline of one machine.
    few = np.where(np.char.startswith(labels, "c0"), "low", "high")
    plain = text_pipeline(min_df=1, n_clauses=10, threshold=5, seed=seed, count_levels=None, n_estimators=1,
                          features_per_class=None).fit(texts, few, tm__epochs=1, tm__progress_bar=False)
    for model in (pipe, clone(pipe)):
        model.fit(texts, few, tm__epochs=1, tm__progress_bar=False)
        assert type(model.named_steps["tm"]) is TsetlinMachine
        assert model.named_steps["select"].k_ == 1000 and model.named_steps["levels"].levels_ == (1,)
        np.testing.assert_array_equal(model.decision_function(texts), plain.decision_function(texts))
        assert list(model.feature_names()) == list(plain.feature_names())
    # None: one machine whatever the classes; explicit settings hold in the recipe.
    single = text_pipeline(min_df=1, n_clauses=10, threshold=5, seed=seed, features_per_class=None)
    assert single.fit(texts, labels, tm__epochs=1, tm__progress_bar=False).named_steps["tm"].__class__ is TsetlinMachine
    vote = text_pipeline(min_df=1, n_clauses=10, threshold=5, seed=seed, n_estimators=2, count_levels=None)
    vote.fit(texts, labels, tm__epochs=1, tm__progress_bar=False)
    assert all(len(m.estimators_) == 2 for m in vote.named_steps["tm"].estimators_)
    assert "levels" not in vote.named_steps and vote.feature_names().tolist() == words
    halves = text_pipeline(min_df=1, n_clauses=10, threshold=5, seed=seed, features_per_machine=0.5)
    assert halves.get_params()["machines_per_class"] == 1
    for target, want in ((labels, TsetlinOneVsRest), (few, TsetlinEnsemble), (labels, TsetlinOneVsRest)):
        step = halves.fit(texts, target, tm__epochs=1, tm__progress_bar=False).named_steps["tm"]
        assert type(step) is want
        ensemble = step.estimators_[0] if want is TsetlinOneVsRest else step
        assert ensemble.features_per_machine == 0.5 and len(ensemble.estimators_) == 1
    back = pickle.loads(pickle.dumps(pipe.fit(texts, labels, tm__epochs=1, tm__progress_bar=False)))
    assert list(back.predict(texts)) == list(pipe.predict(texts))
    assert list(clone(pipe).fit_predict(texts, labels, tm__epochs=1, tm__progress_bar=False)) == list(pipe.predict(texts))
    with pytest.raises(TypeError, match="n_estimators"):
        text_pipeline(n_estimators="many")
    with pytest.raises(ValueError, match="machines_per_class"):
        clone(pipe).set_params(machines_per_class=0).fit(texts, labels)


def test_damaged_model_archives_are_value_errors(rng, tmp_path):
    """Random byte changes and truncations of a saved machine and of a one-vs-rest manifest,
    and an archive that claims a zip version no reader has: each either loads or is a
    ValueError naming the path, never a zipfile error escaping (EOFError, NotImplementedError)."""
    import shutil
    import struct

    from fastcore_ad import TsetlinOneVsRest

    X, _, three = _ovr_data(rng, n=120)
    machine = TsetlinMachine(10, 5, 3.0, seed=3).fit(X, three, epochs=1, progress_bar=False)
    machine.save(tmp_path / "tm.npz")
    TsetlinOneVsRest(TsetlinMachine(10, 5, 3.0, seed=3), features_per_class=6).fit(
        X, three, epochs=1, progress_bar=False).save(tmp_path / "ovr")
    targets = {"tm": (tmp_path / "tm.npz", tmp_path / "tm.npz", TsetlinMachine),
               "ovr": (tmp_path / "ovr", tmp_path / "ovr" / "one_vs_rest.npz", TsetlinOneVsRest)}

    def damaged(kind, change):
        saved, member, cls = targets[kind]
        bad = tmp_path / f"bad-{kind}"
        shutil.rmtree(bad, ignore_errors=True)
        if saved.is_dir():
            shutil.copytree(saved, bad)
        raw = change(bytearray(member.read_bytes()))
        (bad / member.name if saved.is_dir() else bad).write_bytes(bytes(raw))
        return bad, cls

    def version_99(raw):  # every central directory entry needs zip version 9.9 to extract
        at = raw.find(b"PK\x01\x02")
        while at >= 0:
            raw[at + 6:at + 8] = struct.pack("<H", 99)
            at = raw.find(b"PK\x01\x02", at + 4)
        return raw

    def random_damage(raw):
        for at in rng.integers(0, len(raw), rng.integers(1, 7)):
            raw[at] = rng.integers(0, 256)
        return raw[: rng.integers(0, len(raw))] if rng.random() < 0.3 else raw

    for kind in targets:
        bad, cls = damaged(kind, version_99)
        with pytest.raises(ValueError, match=f"{bad}: .*NotImplementedError"):
            cls.load(bad)
        refused = 0
        for _ in range(150):
            bad, cls = damaged(kind, random_damage)
            try:
                cls.load(bad).predict(X)
            except ValueError as exc:
                assert str(exc).startswith(f"{bad}: "), exc
                refused += 1
        assert refused > 100, f"{kind}: only {refused} of 150 damaged files refused"


def _rewritten(src, dst, members, compress=None):
    """A copy of the archive ``src`` at ``dst`` with ``members`` (name -> array) replaced or added."""
    import io
    import zipfile

    with zipfile.ZipFile(src) as z:
        raw = {name: z.read(name) for name in z.namelist()}
    for name, array in members.items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, array, allow_pickle=False)
        raw[name] = buf.getvalue()
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in raw.items():
            z.writestr(name, data, compress_type=compress if name in members else zipfile.ZIP_STORED)
    return dst


def test_model_files_convert_byte_order_and_refuse_shadow_members(rng, tmp_path):
    """A big-endian file (np.savez on such a host) loads as the same model; a member that np.load
    would read in place of a checked array, or a version that is not a positive integer, is refused."""
    import zipfile

    X, y = _text_like(rng, n=200, f=64, words=6)  # 64 features: no padding bits to catch a misread
    model = TsetlinMachine(20, 10, 3.0, seed=2).fit(X, y, epochs=3, progress_bar=False)
    model.save(tmp_path / "tm.npz")
    big = _rewritten(tmp_path / "tm.npz", tmp_path / "big.npz",
                     {"action.npy": model.action_.astype(">u8"), "lower.npy": model.lower_.astype(">u8")})
    back = TsetlinMachine.load(big)
    np.testing.assert_array_equal(back.lower_, model.lower_)
    np.testing.assert_array_equal(back.class_sums(X), model.class_sums(X))
    # "lower" without ".npy", compressed: np.load would read it instead of the checked "lower.npy".
    shadow = _rewritten(tmp_path / "tm.npz", tmp_path / "shadow.npz",
                        {"lower": np.zeros(5_000_000, np.uint64)}, compress=zipfile.ZIP_DEFLATED)
    assert shadow.stat().st_size < 100_000
    with pytest.raises(ValueError, match=f"{shadow}: unexpected archive member 'lower'"):
        TsetlinMachine.load(shadow)
    for version, why in ((np.float64(1.5), "one integer"), (np.array("2"), "one integer"),
                         (np.int64(-5), "not a version"), (np.array([1, 2]), "one integer")):
        bad = _rewritten(tmp_path / "tm.npz", tmp_path / "version.npz", {"version.npy": np.asarray(version)})
        with pytest.raises(ValueError, match=f"{bad}: .*{why}"):
            TsetlinMachine.load(bad)


@pytest.mark.parametrize("flag", ["weighted", "boost_true_positive", "coalesced", "negated_literals"])
def test_switches_must_be_booleans(flag, rng):
    X, y = _text_like(rng, n=40, f=10, words=3)
    with pytest.raises(TypeError, match=f"{flag}: expected True or False, got 'no'"):
        TsetlinMachine(20, 10, 3.0, **{flag: "no"}).fit(X, y, epochs=1, progress_bar=False)


def test_set_params_after_fit_keeps_the_fitted_layout(rng, tmp_path):
    X, y = _text_like(rng, n=60, f=10, words=3)
    model = TsetlinMachine(20, 10, 3.0, seed=1).fit(X, y, epochs=2, progress_bar=False)
    sums, rules = model.class_sums(X), [str(r) for r in model.rules()]
    model.set_params(coalesced=True, state_bits=16)
    np.testing.assert_array_equal(model.class_sums(X), sums)  # the fitted state still reads as fitted
    assert [str(r) for r in model.rules()] == rules
    with pytest.raises(ValueError, match="coalesced: the model was fitted with coalesced=False"):
        model.partial_fit(X, y)
    model.save(tmp_path / "tm.npz")  # written with the layout of its arrays
    np.testing.assert_array_equal(TsetlinMachine.load(tmp_path / "tm.npz").class_sums(X), sums)
    model.set_params(coalesced=False)
    with pytest.raises(ValueError, match="state_bits: the model was fitted with state_bits=8"):
        model.partial_fit(X, y)
    model.fit(X, y, epochs=1, progress_bar=False)  # fit starts over with the new setting
    assert model.lower_.shape[-1] == 15
    with pytest.raises(ValueError, match="specificity: must be a finite number >= 1"):
        TsetlinMachine(20, 10, 10**400).fit(X, y, epochs=1, progress_bar=False)


def test_score_checks_sample_weight(rng):
    X, y = _text_like(rng, n=60, f=10, words=3)
    model = TsetlinMachine(20, 10, 3.0, seed=0).fit(X, y, epochs=2, progress_bar=False)
    w = rng.random(60)
    assert model.score(X, y, sample_weight=w) == pytest.approx(np.average(model.predict(X) == y, weights=w))
    for bad in (np.ones(3), np.zeros(60), np.full(60, np.nan), -np.ones(60), ["a"] * 60):
        with pytest.raises((ValueError, TypeError), match="sample_weight"):
            model.score(X, y, sample_weight=bad)


def test_labels_classes_and_ngram_range_are_named_errors(rng):
    X, y = _text_like(rng, n=60, f=10, words=3)
    with pytest.raises(TypeError, match=r"y: labels must be numbers or strings, got \['frozenset'\]"):
        TsetlinMachine(20, 10, 3.0).fit(X, [frozenset({1}), frozenset({2})] * 30, epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="classes: expected a 1-D list of labels"):
        TsetlinMachine(20, 10, 3.0).partial_fit(X, y, classes=[[0, 1]])
    with pytest.raises(ValueError, match="ngram_range: expected 'auto'"):
        text_pipeline(ngram_range="bogus")


def test_refused_validation_labels_leave_the_fitted_model(rng):
    X, y = _text_like(rng, n=120, f=30, words=5)
    model = TsetlinMachine(20, 10, 3.0, seed=1).fit(X, y, epochs=4, progress_bar=False)
    state = (model.epochs_, model.action_.copy(), model.lower_.copy())
    with pytest.raises(ValueError, match="validation_data: y_val: labels are strings but y's are numbers"):
        model.fit(X, y, epochs=4, validation_data=(X, y.astype(str)), progress_bar=False)
    with pytest.raises(ValueError, match=r"validation_data: y_val: labels \[7\] never occur in y"):
        model.fit(X, y, validation_data=(X, np.where(y == 1, 7, y)), progress_bar=False)
    assert model.epochs_ == state[0]
    np.testing.assert_array_equal(model.action_, state[1])
    np.testing.assert_array_equal(model.lower_, state[2])

def test_one_vs_rest_save_load_and_hostile_folders(rng, tmp_path):
    import shutil

    from fastcore_ad import TsetlinOneVsRest

    X, y, three = _ovr_data(rng, n=120)
    machine = TsetlinMachine(10, 5, 3.0, seed=7)
    models = {"words": TsetlinOneVsRest(machine, features_per_class=6).fit(X, three, epochs=2, progress_bar=False),
              "all": TsetlinOneVsRest(machine).fit(X, y, epochs=2, progress_bar=False),
              "significant": TsetlinOneVsRest(machine, "auto").fit(X, three, epochs=2, progress_bar=False),
              "votes": TsetlinOneVsRest(TsetlinEnsemble(machine, 2, features_per_machine=0.5), features_per_class=8)
              .fit(X, three, epochs=2, progress_bar=False)}
    for name, model in models.items():
        model.save(tmp_path / name)
        back = TsetlinOneVsRest.load(tmp_path / name)
        np.testing.assert_array_equal(back.votes(X), model.votes(X))
        np.testing.assert_array_equal(back.classes_, model.classes_)
        assert back.get_params(deep=True).keys() == model.get_params(deep=True).keys()
        assert repr(back) == repr(model)
        assert back.rules() == model.rules()
        if model.feature_columns_ is not None:
            for cols, again in zip(model.feature_columns_, back.feature_columns_):
                np.testing.assert_array_equal(again, cols)
    saved = tmp_path / "words"

    def damaged(name, **change):
        bad = tmp_path / name
        shutil.copytree(saved, bad)
        with np.load(saved / "one_vs_rest.npz", allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        arrays.update(change)
        with open(bad / "one_vs_rest.npz", "wb") as fh:
            np.savez(fh, **{k: v for k, v in arrays.items() if v is not None})
        return bad

    import json

    with np.load(saved / "one_vs_rest.npz", allow_pickle=False) as z:
        meta, flat, counts = json.loads(str(z["meta"])), z["columns"], z["column_counts"]
    np.testing.assert_array_equal(counts, [6, 6, 6])
    columns = flat.reshape(3, 6)
    wide = flat.copy()
    wide[5] = 40  # class 0's last column
    unsorted = flat.copy()
    unsorted[6:8] = unsorted[7:5:-1]  # class 1's first two
    cases = [("format", {"format": np.array("something else")}, "format"),
             ("version", {"version": np.array(1)}, "version 2"),
             ("out_of_range", {"columns": wide}, "increasing, in"),
             ("unsorted", {"columns": unsorted}, "increasing, in"),
             ("narrow", {"columns": columns[:, :5].ravel(), "column_counts": counts - 1}, "do not match"),
             ("ragged", {"columns": flat[:-1], "column_counts": counts - [0, 0, 1]}, "do not match"),
             ("counts_sum", {"column_counts": counts + 1}, "sum"),
             ("zero_count", {"columns": flat[6:], "column_counts": np.array([0, 6, 6])}, "between 1"),
             ("huge_count", {"column_counts": np.array([2**40, 6, 6])}, "between 1"),
             ("two_d", {"columns": columns}, "sum"),
             ("float_columns", {"columns": flat.astype(np.float64)}, "int64"),
             ("no_counts", {"column_counts": None}, "column_counts"),
             ("no_columns", {"columns": None, "column_counts": None}, "do not match"),
             ("other_rule", {"meta": np.array(json.dumps({**meta, "features_per_class": "many"}))},
              "features_per_class"),
             ("rule_auto_too_wide", {"meta": np.array(json.dumps({**meta, "features_per_class": "auto",
                                                                   "n_features_in": 5}))}, "do not match|increasing"),
             ("object_classes", {"classes": np.array([1, "a", None], dtype=object)}, "not a saved|classes"),
             ("one_class", {"classes": np.array(["a"])}, "classes"),
             ("repeated", {"classes": np.array(["a", "a", "c"])}, "distinct and sorted"),
             ("no_words", {"meta": np.array(json.dumps({**meta, "features_per_class": 0}))}, "features_per_class"),
             ("meta", {"meta": np.array(json.dumps({**meta, "seed_": -1}))}, "seed_"),
             ("rule_missing", {"meta": np.array(json.dumps({k: v for k, v in meta.items()
                                                             if k != "features_per_class"}))}, "do not match"),
             ("members", {"meta": np.array(json.dumps({**meta, "members": "pickle"}))}, "machines or ensembles"),
             ("seed", {"meta": np.array(json.dumps({**meta, "seed_": meta["seed_"] + 1}))}, "does not belong"),
             # a width that leaves the last column outside X
             ("width", {"meta": np.array(json.dumps({**meta, "n_features_in": int(columns.max())}))},
              "increasing, in")]
    for name, change, match in cases:
        with pytest.raises(ValueError, match=match):
            TsetlinOneVsRest.load(damaged(name, **change))
    # A class file from another model, a missing one, a missing manifest, junk.
    foreign = tmp_path / "foreign"
    shutil.copytree(saved, foreign)
    shutil.copy(tmp_path / "all" / "class_0.npz", foreign / "class_1.npz")
    with pytest.raises(ValueError, match="class_1 does not belong"):
        TsetlinOneVsRest.load(foreign)
    (foreign / "class_1.npz").unlink()
    with pytest.raises(ValueError, match="class_1.npz is missing"):
        TsetlinOneVsRest.load(foreign)
    with pytest.raises(FileNotFoundError, match="not a saved TsetlinOneVsRest"):
        TsetlinOneVsRest.load(tmp_path / "nowhere")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "one_vs_rest.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="not a saved TsetlinOneVsRest"):
        TsetlinOneVsRest.load(junk)
    labels = np.array(["x", "y"] * 60, dtype=object)  # strings held as objects save as strings
    objects = TsetlinOneVsRest(machine).fit(X, labels, epochs=1, progress_bar=False)
    objects.save(tmp_path / "objects")
    assert list(TsetlinOneVsRest.load(tmp_path / "objects").predict(X)) == list(objects.predict(X))
    mixed = np.array([("a", 1), ("b", 2)] * 60, dtype=[("name", "U1"), ("n", "i8")])
    with pytest.raises(TypeError, match="numbers or strings"):
        TsetlinOneVsRest(machine).fit(X, mixed, epochs=1, progress_bar=False).save(tmp_path / "mixed")


_CLINIC = (["fever and cough", "cough and sore throat", "broken arm", "fracture of the arm", "rash on skin",
            "itchy skin rash", "sore arm after a fall", "cough with fever at night"] * 12)
_CLINIC_LABELS = ["resp", "resp", "ortho", "ortho", "derm", "derm", "ortho", "resp"] * 12


def test_vote_adds_its_members_scores(rng):
    from sklearn.preprocessing import StandardScaler

    from fastcore_ad import TsetlinVote

    order = rng.permutation(len(_CLINIC))
    texts, labels = [_CLINIC[i] for i in order], np.array(_CLINIC_LABELS)[order]
    views = [text_pipeline(max_features=k, min_df=1, n_clauses=20, threshold=10, seed=s) for k, s in ((4, 0), (9, 1))]
    vote = TsetlinVote(views).fit(texts, labels, tm__epochs=3, tm__progress_bar=False)
    members = [v.fit(texts, labels, tm__epochs=3, tm__progress_bar=False) for v in views]  # the same fits
    want = sum(np.asarray(m.decision_function(texts), dtype=np.float64) for m in members)
    np.testing.assert_array_equal(vote.votes(texts), want)
    np.testing.assert_array_equal(vote.predict(texts), vote.classes_[want.argmax(axis=1)])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(vote)).votes(texts), want)
    # Two classes: each member's margin is a score for the second class.
    binary = np.where(labels == "resp", "resp", "other")
    vote2 = TsetlinVote(views).fit(texts, binary, tm__epochs=3, tm__progress_bar=False)
    margins = sum(np.asarray(v.fit(texts, binary, tm__epochs=3, tm__progress_bar=False).decision_function(texts),
                             dtype=np.float64) for v in views)
    np.testing.assert_array_equal(vote2.decision_function(texts), margins)
    with pytest.raises(ValueError, match="estimators: expected a non-empty list"):
        TsetlinVote([]).fit(texts, labels)
    with pytest.raises(TypeError, match=r"estimators\[1\]: .* has no decision_function"):
        TsetlinVote([views[0], StandardScaler()]).fit(texts, labels)
    with pytest.raises(NotFittedError):
        TsetlinVote(views).predict(texts)


def test_ensemble_width_errors_name_the_ensemble(rng):
    X, y = _text_like(rng, n=60, f=10, words=3)
    vote = TsetlinEnsemble(TsetlinMachine(20, 10, 3.0, seed=0), 2).fit(X, y, epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="X has 9 features, but TsetlinEnsemble is expecting 10"):
        vote.predict(X[:, :9])


@pytest.mark.parametrize("word_pairs", [True, False])
def test_text_views_builds_the_seven_views(word_pairs):
    from fastcore_ad.tsetlin import text_views

    from fastcore_ad import TsetlinOneVsRest

    vote = text_views(seed=3, word_pairs=word_pairs, n_clauses=20, threshold=10)
    vote.fit(_CLINIC, _CLINIC_LABELS, tm__epochs=2, tm__progress_bar=False)
    models = [p.named_steps["tm"] for p in vote.estimators_]
    assert all(isinstance(m, TsetlinOneVsRest) for m in models)  # three classes: still one machine per class
    sizes, levels = [4000, 8000, 16000, "auto"], [False, True, True, True]
    ranges = [(1, 1)] * 4
    if word_pairs:
        sizes, levels, ranges = sizes + [8000, 16000, "auto"], levels + [True] * 3, ranges + [(1, 2)] * 3
    assert [m.features_per_class for m in models] == sizes
    assert ["levels" in p.named_steps for p in vote.estimators_] == levels
    assert [p.named_steps["vectorizer"].ngram_range_ for p in vote.estimators_] == ranges
    assert all(m.estimators_[0].seed == 3 for m in models)
    assert vote.votes(_CLINIC[:5]).shape == (5, 3)
    with pytest.raises(TypeError, match="word_pairs"):
        text_views(word_pairs="yes")


def _malformed_sparse(X, how):
    """A copy of X as a sparse matrix whose index arrays lie about its shape."""
    if how == "coo":
        coo = sp.coo_matrix(X)
        coo.col[0] = X.shape[1] + 3
        return coo
    B = sp.csr_matrix(X) if how != "csc" else sp.csc_matrix(X)
    if how == "indptr":
        B.indptr[2] = 10**6
    elif how == "negative":
        B.indices[0] = -1
    else:
        B.indices[0] = max(X.shape) + 40
    return B


@pytest.mark.parametrize("how", ["indptr", "negative", "past_the_end", "csc", "coo"])
def test_malformed_sparse_input_is_refused_at_every_entry_point(rng, how):
    from fastcore_ad.tsetlin import TsetlinOneVsRest

    X = (rng.random((40, 12)) < 0.4).astype(np.uint8)
    X[:, 0] = 1  # every row stores an entry, so the first index always exists
    y = rng.integers(0, 2, 40)
    y[:2] = [0, 1]
    bad, counts = _malformed_sparse(X, how), _malformed_sparse(X * rng.integers(1, 5, X.shape), how)
    machine = TsetlinMachine(10, 5, 3.0, seed=0).fit(X, y, epochs=1, progress_bar=False)
    vote = TsetlinEnsemble(TsetlinMachine(10, 5, 3.0, seed=0), n_estimators=2).fit(X, y, epochs=1, progress_bar=False)
    calls = {"fit": lambda: TsetlinMachine(10, 5, 3.0, seed=0).fit(bad, y, epochs=1, progress_bar=False),
             "fit counts": lambda: TsetlinMachine(10, 5, 3.0, seed=0, booleanizer="auto").fit(
                 counts, y, epochs=1, progress_bar=False),
             "predict": lambda: machine.predict(bad),
             "vote": lambda: vote.predict(bad),
             "one vs rest": lambda: TsetlinOneVsRest(TsetlinMachine(10, 5, 3.0, seed=0), features_per_class=3).fit(
                 bad, y, epochs=1, progress_bar=False)}
    for what, call in calls.items():
        with pytest.raises(ValueError, match=r"^X: malformed (CSR|CSC|COO) matrix"):
            call()
            pytest.fail(what)
    rule = Rule(class_label=1, weight=1, literals=((0, False),), clause=0)
    with pytest.raises(ValueError, match=r"^x: malformed"):
        rule.fires(_malformed_sparse(X[:1], "negative" if how == "negative" else "past_the_end"))


def test_training_continues_on_a_read_only_model(tmp_path, rng):
    import joblib

    X = (rng.random((60, 20)) < 0.3).astype(np.uint8)
    y = X[:, 0] ^ X[:, 1]
    model = TsetlinMachine(12, 6, 3.0, seed=4).fit(X, y, epochs=2, progress_bar=False)
    joblib.dump(model, tmp_path / "model.joblib")
    mapped = joblib.load(tmp_path / "model.joblib", mmap_mode="r")
    assert not mapped.action_.flags.writeable
    mapped.partial_fit(X, y)
    model.partial_fit(X, y)
    for name in ("action_", "lower_", "weights_"):
        np.testing.assert_array_equal(getattr(mapped, name), getattr(model, name))


def test_training_kernel_refuses_read_only_or_shared_state(rng):
    X = (rng.random((30, 10)) < 0.5).astype(np.uint8)
    y = (X[:, 0] ^ X[:, 1]).astype(np.int64)
    model = TsetlinMachine(8, 4, 3.0, seed=1).fit(X, y, epochs=1, progress_bar=False)
    docs = tsetlin_module._binary_docs(X, "numpy")
    frozen = model.weights_.copy()
    frozen.setflags(write=False)
    for args, name in (((model.action_, model.action_, model.weights_), "lower"),
                       ((model.action_, model.lower_, frozen), "weights")):
        with pytest.raises(ValueError, match=f"^{name}: expected a writable"):
            _core.tsetlin_train_epoch(model._config(), *args, docs, y, np.arange(30, dtype=np.int64), 9)


def test_load_reads_regular_files_of_saved_kinds_only(rng, tmp_path):
    X, y = _text_like(rng, n=120)
    model = TsetlinMachine(10, 5, 3.0, seed=2).fit(X, y, epochs=1, progress_bar=False)
    model.save(tmp_path / "model.npz")
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match="^/dev/zero: not a regular file"):
            TsetlinMachine.load("/dev/zero")
        os.symlink("/dev/zero", tmp_path / "endless.npz")
        with pytest.raises(ValueError, match="not a regular file"):
            TsetlinMachine.load(tmp_path / "endless.npz")
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    for classes in (np.array([1j, 2j]), np.array([b"a", b"b"]), np.array(["2026-01-01", "2026-01-02"], "M8[D]")):
        with open(tmp_path / "odd.npz", "wb") as fh:
            np.savez(fh, **{**arrays, "classes": classes})
        with pytest.raises(ValueError, match="classes must be a 1-D array"):
            TsetlinMachine.load(tmp_path / "odd.npz")
