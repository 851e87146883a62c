"""The maps of the ``contextual`` controller: from an instance's start features to the predicted hidden-dev WER of
every grid point (a schedule), fitted on the train instances' grid results. Small numpy code: a handful of train
instances, a handful of features.

- ``global``: every grid point's mean over the train instances, whatever the features (the tuned schedule).
- ``knn-K``: the mean of the K nearest train instances (Euclidean on features standardized over the train
  instances; ties by instance order).
- ``gp``: a Gaussian process per grid point on the standardized features: RBF kernel with one length scale, prior
  mean the grid point's train mean (far from every train instance it predicts ``global``), signal variance the
  mean per-point variance of the train WERs; the length scale and the noise share are chosen from a small grid by
  the log marginal likelihood summed over the grid points.

:func:`cross_validate` scores each map by leaving one train instance out: the held-out instance's dev WER at the
grid point the map chooses for it (lower is better), its regret against that instance's best grid point, and the
RMSE of the predicted WERs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

LENGTH_SCALES = (0.5, 1.0, 2.0, 4.0)
NOISE_SHARES = (0.05, 0.2, 0.5)


@dataclass(frozen=True)
class Fitted:
    """A fitted map: ``predict(x)`` is the predicted dev WER of every grid point at features ``x``."""

    kind: str
    X: np.ndarray  # [n, d] standardized train features
    Y: np.ndarray  # [n, g] dev WER per train instance and grid point
    center: np.ndarray
    scale: np.ndarray
    params: dict[str, float]

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=float) - self.center) / self.scale
        mean = self.Y.mean(axis=0)
        if self.kind == "global":
            return mean
        d2 = ((self.X - z) ** 2).sum(axis=1)
        if self.kind.startswith("knn-"):
            k = min(int(self.kind.split("-")[1]), len(self.X))
            nearest = np.argsort(d2, kind="stable")[:k]
            return self.Y[nearest].mean(axis=0)
        ell, amp, noise = self.params["length_scale"], self.params["amplitude"], self.params["noise"]
        k_star = amp * np.exp(-d2 / (2 * ell**2))
        alpha = np.linalg.solve(_kernel(self.X, ell, amp) + noise * np.eye(len(self.X)), self.Y - mean)
        return mean + k_star @ alpha


def _kernel(X: np.ndarray, ell: float, amp: float) -> np.ndarray:
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return amp * np.exp(-d2 / (2 * ell**2))


def _log_marginal(X: np.ndarray, Yc: np.ndarray, ell: float, amp: float, noise: float) -> float:
    """Sum over grid points of the GP's log marginal likelihood of the centred WERs ``Yc`` ([n, g])."""
    n = len(X)
    chol = np.linalg.cholesky(_kernel(X, ell, amp) + noise * np.eye(n))
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, Yc))
    log_det = 2 * np.log(np.diag(chol)).sum()
    return float(-0.5 * (Yc * alpha).sum() - Yc.shape[1] * (0.5 * log_det + 0.5 * n * math.log(2 * math.pi)))


def fit(kind: str, features: np.ndarray, wers: np.ndarray) -> Fitted:
    """Fit map ``kind`` (``global``, ``knn-K``, ``gp``) on ``features`` [n, d] and ``wers`` [n, g]."""
    X, Y = np.asarray(features, dtype=float), np.asarray(wers, dtype=float)
    center, scale = X.mean(axis=0), X.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)  # a feature constant over the train instances adds no distance
    Z = (X - center) / scale
    params: dict[str, float] = {}
    if kind == "gp":
        Yc = Y - Y.mean(axis=0)
        amp = max(float(Yc.var(axis=0).mean()), 1e-6)
        best = max(
            ((ell, share) for ell in LENGTH_SCALES for share in NOISE_SHARES),
            key=lambda p: _log_marginal(Z, Yc, p[0], amp, p[1] * amp),
        )
        params = {"length_scale": best[0], "amplitude": amp, "noise": best[1] * amp}
    elif kind != "global" and not (kind.startswith("knn-") and kind.split("-")[1].isdigit()):
        raise ValueError(f"unknown contextual map {kind!r}; valid: global, knn-K, gp")
    return Fitted(kind, Z, Y, center, scale, params)


def cross_validate(kind: str, features: np.ndarray, wers: np.ndarray) -> dict[str, Any]:
    """Leave-one-instance-out scores of map ``kind`` (see the module docstring); per held-out instance too."""
    X, Y = np.asarray(features, dtype=float), np.asarray(wers, dtype=float)
    n = len(X)
    if n < 2:
        raise ValueError("cross-validation needs at least two train instances")
    chosen, dev, regret, sq = [], [], [], []
    for i in range(n):
        rest = [j for j in range(n) if j != i]
        pred = fit(kind, X[rest], Y[rest]).predict(X[i])
        g = int(np.argmin(pred))
        chosen.append(g)
        dev.append(float(Y[i, g]))
        regret.append(float(Y[i, g] - Y[i].min()))
        sq.append(float(((pred - Y[i]) ** 2).mean()))
    return {
        "dev_wer": float(np.mean(dev)),
        "regret": float(np.mean(regret)),
        "rmse": float(math.sqrt(np.mean(sq))),
        "chosen": chosen,
        "per_instance_dev_wer": dev,
    }


def candidate_kinds(n: int) -> list[str]:
    """The maps compared for ``n`` train instances: global, 1-NN, 3-NN (when 3 < n), GP."""
    return ["global", "knn-1", *(["knn-3"] if n > 3 else []), "gp"]


def choose(features: np.ndarray, wers: np.ndarray) -> tuple[str, dict[str, dict[str, Any]]]:
    """The map with the lowest cross-validated dev WER (the first in :func:`candidate_kinds` order on ties, so
    the simplest), and every map's CV scores."""
    cv = {k: cross_validate(k, features, wers) for k in candidate_kinds(len(features))}
    best = min(cv, key=lambda k: cv[k]["dev_wer"])
    return best, cv
