"""meanfield: the mean-field theory of wide random neural networks, derived, evaluated and checked.

A ten-line tour:

>>> import meanfield as mf
>>> net = mf.Network(depth=3, activation="relu", sigma_w2=2, sigma_b2=0, outputs=10)
>>> stats = mf.predict(net, width=512, samples=32)          # kappa's, m, s, lambda_max (theory)
>>> sampled = mf.sample(net, width=128, samples=8, seed=0)  # exact FIM spectrum of a real network
>>> float(mf.second_moment(mf.activation("relu"), 2.0))     # E[relu(sqrt(2) z)^2]
1.0
>>> bn = net.with_(norms=[mf.BatchNorm("last")])            # normalization is a layer of the spec
>>> mf.derive(net)                                          # sympy closed forms  # doctest: +SKIP
>>> mf.verify(net, widths=(64, 128), samples=8, seeds=4)    # theory vs samples   # doctest: +SKIP

The public names are listed in ``__all__``; each has a docstring with a runnable example.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it. Loaded on first use so that `import meanfield` stays fast and
# the command line does not pay for matplotlib or sympy printing it never uses.
_EXPORTS = {
    "InvalidArgument": "errors",
    "Activation": "activations",
    "activation": "activations",
    "catalogue": "activations",
    "second_moment": "gaussian",
    "cross_moment": "gaussian",
    "GaussianExpectation": "gaussian",
    "Network": "network",
    "BatchNorm": "network",
    "LayerNorm": "network",
    "order_parameters": "recursions",
    "OrderParameters": "recursions",
    "signal_propagation": "recursions",
    "predict": "fisher",
    "predict_grid": "fisher",
    "FisherStats": "fisher",
    "derive": "derivation",
    "sample": "sampling",
    "sample_many": "sampling",
    "SampledSpectrum": "sampling",
    "SampleSummary": "sampling",
    "DegenerateBatch": "sampling",
    "verify": "verify",
    "VerificationReport": "verify",
    "latex": "latex",
    "max_learning_rate": "training",
    "train": "training",
    "TrainingRun": "training",
    "LearningRate": "training",
    "stability_threshold": "training",
    "learning_rate_grid": "training",
    "plot_learning_rate_grid": "training",
    "sweep": "sweeps",
    "load_sweep": "sweeps",
    "Grid": "grids",
    "free_edge": "rmt",
    "measure_fluctuations": "rmt",
    "Fluctuations": "rmt",
    "cross_output_variance": "fourpoint",
    "CrossOutputVariance": "fourpoint",
    "same_output_variance": "fourpoint",
    "SameOutputVariance": "fourpoint",
    "gram_covariance": "fourpoint",
    "bulk_fluctuations": "fourpoint",
    "BulkFluctuations": "fourpoint",
    "bulk_estimates": "fourpoint",
    "outlier_fluctuations": "fourpoint",
    "OutlierFluctuations": "fourpoint",
    "linear_population": "population",
    "LinearPopulation": "population",
    "reproduce": "experiments",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'meanfield' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
