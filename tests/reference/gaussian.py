"""Plain numpy / scipy oracles for Gaussian anomaly detection."""

import numpy as np
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis


def mahalanobis_quadratic(x, mean, precision):
    """sqrt((x - mean)^T P (x - mean)) row by row, through scipy."""
    return np.array([scipy_mahalanobis(row, mean, precision) for row in np.asarray(x, dtype=np.float64)])


def ledoit_wolf(X):
    """Ledoit & Wolf (2004) shrinkage towards mu * I, straight from the paper's formulas."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    Xc = X - X.mean(0)
    S = Xc.T @ Xc / n
    mu = np.trace(S) / d
    delta2 = np.sum((S - mu * np.eye(d)) ** 2) / d
    b_bar2 = sum(np.sum((np.outer(x, x) - S) ** 2) for x in Xc) / (n * n) / d
    b2 = min(b_bar2, delta2)
    shrinkage = 0.0 if b2 == 0 else b2 / delta2
    return (1 - shrinkage) * S + shrinkage * mu * np.eye(d), shrinkage


def npca_scores(X_train, X_test, variance):
    """Negated PCA: drop leading components explaining `variance`, Mahalanobis in the rest."""
    Xtr = np.asarray(X_train, dtype=np.float64)
    mean = Xtr.mean(0)
    cov = np.cov(Xtr, rowvar=False, bias=True)
    lam, vec = np.linalg.eigh(cov)
    lam, vec = lam[::-1], vec[:, ::-1]
    ratio = np.cumsum(lam) / lam.sum()
    first = int(np.argmax(ratio >= variance)) + 1
    z = (np.asarray(X_test, np.float64) - mean) @ vec[:, first:]
    return np.sqrt(np.sum(z ** 2 / lam[first:], axis=1))
