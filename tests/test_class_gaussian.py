"""ClassGaussian against scikit-learn (LDA's pooled covariance, Ledoit-Wolf, OAS) and a numpy /
scipy oracle of the Mahalanobis distances and the Gaussian posterior."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from fastcore_ad import ClassGaussian


def _data(rng, n=240, d=6, classes=4):
    y = rng.integers(0, classes, n)
    # A well-conditioned mixing: a raw normal matrix is near-singular now and then, and the
    # classes then overlap (training accuracy 0.68 seen).
    mix = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
    X = rng.normal(size=(n, d)) @ mix + 3.0 * y[:, None]
    return X, y


@pytest.mark.parametrize("covariance", ["empirical", "ledoit_wolf", "oas"])
def test_tied_covariance_is_the_pooled_within_class_estimate(covariance, rng):
    from sklearn.covariance import OAS, LedoitWolf
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    X, y = _data(rng)
    model = ClassGaussian(covariance=covariance).fit(X, y)
    means = np.stack([X[y == k].mean(0) for k in range(4)])
    np.testing.assert_allclose(model.means_, means, rtol=1e-12, atol=1e-12)
    residuals = X - means[y]
    if covariance == "empirical":
        want = LinearDiscriminantAnalysis(solver="lsqr", store_covariance=True).fit(X, y).covariance_
    else:
        want = (LedoitWolf() if covariance == "ledoit_wolf" else OAS()).fit(residuals).covariance_
    np.testing.assert_allclose(model.covariance_, want, rtol=1e-9, atol=1e-12)


def test_untied_covariances_are_per_class(rng):
    from sklearn.covariance import LedoitWolf

    X, y = _data(rng)
    model = ClassGaussian(tied=False).fit(X, y)
    for k in range(4):
        np.testing.assert_allclose(model.covariance_[k], LedoitWolf().fit(X[y == k]).covariance_, rtol=1e-9)


@pytest.mark.parametrize("tied", [True, False])
def test_distances_posterior_and_ood_score_match_the_oracle(tied, rng):
    X, y = _data(rng)
    model = ClassGaussian(covariance="oas", tied=tied).fit(X, y)
    test = np.vstack([rng.normal(size=(30, 6)) * 4, X[:5]])
    covs = [model.covariance_] * 4 if tied else list(model.covariance_)
    want = np.stack([np.sqrt(np.einsum("md,de,me->m", test - model.means_[k], np.linalg.inv(covs[k]),
                                       test - model.means_[k])) for k in range(4)], axis=1)
    np.testing.assert_allclose(model.distances(test), want, rtol=1e-9)
    np.testing.assert_allclose(model.decision_function(test), want.min(axis=1), rtol=1e-9)
    log_joint = np.stack([np.log(model.priors_[k]) + multivariate_normal(model.means_[k], covs[k]).logpdf(test)
                          for k in range(4)], axis=1)
    post = np.exp(log_joint - log_joint.max(1, keepdims=True))
    post /= post.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(test), post, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(model.predict(test), model.classes_[post.argmax(1)])



@pytest.mark.parametrize("tied", [True, False])
def test_far_rows_keep_a_posterior_and_large_values_keep_their_means(tied, rng):
    X, y = _data(rng)
    model = ClassGaussian(tied=tied).fit(X, y)
    row = rng.normal(size=(1, 6))
    scale = 1e200 if tied else 1e100  # untied distances are squared in the kernel: 1e100 keeps them finite
    far = model.predict_proba(row * scale)
    assert np.isfinite(far).all() and far.sum() == pytest.approx(1.0)
    if tied:
        # The posterior's log-odds grow linearly with the scale: x' S^-1 mu_k decides.
        want = np.argmax(row @ np.linalg.solve(model.covariance_, model.means_.T))
    else:
        # The quadratic terms decide: the class nearest under its own covariance.
        want = model.distances(row * scale).argmin()
    np.testing.assert_array_equal(far, np.eye(4)[[want]])
    huge = rng.uniform(1.0e308, 1.7e308, (8, 6))  # their sum overflows, their mean does not
    means = ClassGaussian(tied=False).fit(np.vstack([X, huge]), np.r_[y, [9] * 8]).means_
    np.testing.assert_allclose(means[-1], (huge / 8).sum(axis=0), rtol=1e-12)


def test_ood_samples_score_higher_and_sklearn_conformance(rng):
    from sklearn.utils.estimator_checks import check_estimator

    X, y = _data(rng)
    model = ClassGaussian().fit(X, y)
    assert model.decision_function(X + 50.0).min() > model.decision_function(X).max()
    assert model.score(X, y) > 0.8
    check_estimator(ClassGaussian())


def test_bad_input_is_named(rng):
    X, y = _data(rng)
    with pytest.raises(ValueError, match="covariance"):
        ClassGaussian(covariance="robust").fit(X, y)
    with pytest.raises(TypeError, match="tied"):
        ClassGaussian(tied="yes").fit(X, y)
    with pytest.raises(ValueError, match="y"):
        ClassGaussian().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        ClassGaussian(tied=False).fit(X[:5], np.array([0, 1, 1, 2, 2]))
    with pytest.raises(ValueError, match="features"):
        ClassGaussian().fit(X, y).distances(X[:, :3])
    mixed = np.array(["a", None] * (len(X) // 2), dtype=object)
    with pytest.raises(ValueError, match="^y: contains NaN, infinity or None"):
        ClassGaussian().fit(X, mixed)
    with pytest.raises(TypeError, match="^y: labels of types"):
        ClassGaussian().fit(X, np.array(["a", 1] * (len(X) // 2), dtype=object))
    model = ClassGaussian().fit(X, y)
    with pytest.raises(ValueError, match="^y: expected one label per row of X"):
        model.score(X, y[:-1])
    with pytest.raises(ValueError, match="^sample_weight: expected one weight per row of X"):
        model.score(X, y, sample_weight=np.ones(3))
    weights = rng.random(len(X))
    assert model.score(X, y, weights) == pytest.approx(np.average(model.predict(X) == y, weights=weights), rel=1e-15)


@pytest.mark.parametrize("tied", [True, False])
def test_a_failed_refit_keeps_the_fitted_model(tied, rng):
    X, y = rng.normal(size=(60, 4)), rng.integers(0, 3, 60)
    model = ClassGaussian(tied=tied).fit(X, y)
    before = model.predict_log_proba(X[:7])
    bad_labels = [np.zeros(60, int), np.r_[np.zeros(59, int), 1]]  # one class; a class of one sample
    for bad in bad_labels if not tied else bad_labels[:1]:
        with pytest.raises(ValueError, match="y: "):
            model.fit(X, bad)
        np.testing.assert_array_equal(model.predict_log_proba(X[:7]), before)


def test_singular_data_advice_fits_the_estimator(rng):
    from fastcore_ad import SingularCovarianceError

    X = np.repeat(rng.normal(size=(2, 3)), 4, axis=0)  # two distinct rows: shrinkage 0
    with pytest.raises(SingularCovarianceError, match="covariance='ledoit_wolf' shrinks") as info:
        ClassGaussian().fit(X, np.tile([0, 1], 4))
    assert "or use a shrinkage estimator" not in str(info.value)
