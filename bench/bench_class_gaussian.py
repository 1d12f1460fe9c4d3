"""Class-conditional Gaussian OOD on scikit-learn's bundled digits: classes 0-7 known, 8-9 unknown.

    python -m pytest bench/bench_class_gaussian.py --benchmark-enable --benchmark-columns=min,mean,rounds -s

Prints closed-set accuracy and OOD AUROC (fastcore_ad.metrics, checked against scikit-learn);
times the distances to every class mean against an explicit numpy loop over classes (inverse
covariance, quadratic form) and scikit-learn's LinearDiscriminantAnalysis.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastcore_ad import ClassGaussian, metrics


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    known = y < 8
    X_train, X_test, y_train, y_test = train_test_split(X[known], y[known], test_size=0.3, random_state=0)
    unknown = X[~known]
    return X_train, y_train, X_test, y_test, unknown


@pytest.fixture(scope="module")
def batch(digits):
    X_test, unknown = digits[2], digits[4]
    return np.tile(np.vstack([X_test, unknown]), (40, 1))   # ~35,000 rows


def test_digits_ood_report(digits):
    from sklearn.metrics import roc_auc_score

    X_train, y_train, X_test, y_test, unknown = digits
    for covariance in ("ledoit_wolf", "oas", "empirical"):
        model = ClassGaussian(covariance=covariance, reg=1e-3 if covariance == "empirical" else 0.0).fit(X_train, y_train)
        scores = np.r_[model.decision_function(X_test), model.decision_function(unknown)]
        labels = np.r_[np.zeros(len(X_test)), np.ones(len(unknown))]
        auroc = metrics.auroc(scores, labels)
        assert abs(auroc - roc_auc_score(labels, scores)) < 1e-12
        print(f"\ndigits 0-7 known / 8-9 unknown, {covariance}: closed-set accuracy {model.score(X_test, y_test):.4f}, "
              f"OOD AUROC {auroc:.4f}")


def test_class_distances__fastcore(benchmark, digits, batch):
    model = ClassGaussian().fit(digits[0], digits[1])
    benchmark.group = f"distances to 8 class means, {batch.shape[0]} x 64"
    benchmark.pedantic(model.distances, args=(batch,), rounds=5, iterations=1, warmup_rounds=1)


def test_class_distances__numpy_loop(benchmark, digits, batch):
    model = ClassGaussian().fit(digits[0], digits[1])
    precision = np.linalg.inv(model.covariance_)

    def loop(x):
        return np.stack([np.sqrt(np.einsum("md,de,me->m", x - mu, precision, x - mu)) for mu in model.means_], axis=1)

    benchmark.group = f"distances to 8 class means, {batch.shape[0]} x 64"
    np.testing.assert_allclose(loop(batch[:100]), model.distances(batch[:100]), rtol=1e-8)
    benchmark.pedantic(loop, args=(batch,), rounds=5, iterations=1, warmup_rounds=1)


def test_class_distances__sklearn_lda_decision(benchmark, digits, batch):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(digits[0], digits[1])
    benchmark.group = f"distances to 8 class means, {batch.shape[0]} x 64"
    benchmark.pedantic(lda.decision_function, args=(batch,), rounds=5, iterations=1, warmup_rounds=1)
