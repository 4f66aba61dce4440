"""Monte Carlo of the self-normalized small-T block for the block-top tests (shared by test_blocktop and test_rmt)."""

import math

import numpy as np


def normalized_tops(rng, A, m, V):
    """Top eigenvalue of Pi diag(rho) A diag(rho) Pi per draw, rho^2 = (squared norms ~ gamma, mean m, variance V) /
    diag A, for draws A (draws x T x T): (mean, its standard error)."""
    draws, T = A.shape[:2]
    rho = np.sqrt(rng.gamma(m * m / V, V / m, (draws, T)) / np.diagonal(A, axis1=1, axis2=2))
    B = A * rho[:, :, None] * rho[:, None, :]
    B = B - B.mean(axis=2, keepdims=True) - B.mean(axis=1, keepdims=True) + B.mean(axis=(1, 2), keepdims=True)
    tops = np.linalg.eigvalsh(B)[:, -1]
    return tops.mean(), tops.std() / math.sqrt(draws)
