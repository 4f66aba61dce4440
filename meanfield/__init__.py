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
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it. Loaded on first use so that `import meanfield` stays fast and
# the command line does not pay for matplotlib or sympy printing it never uses.
_EXPORTS = {
    "InvalidArgument": "errors",
    "Activation": "spec.activations",
    "activation": "spec.activations",
    "catalogue": "spec.activations",
    "second_moment": "integrals.gaussian",
    "cross_moment": "integrals.gaussian",
    "pair_moment": "integrals.gaussian",
    "PairExpectation": "integrals.gaussian",
    "GaussianExpectation": "integrals.gaussian",
    "Network": "spec.network",
    "BatchNorm": "spec.network",
    "LayerNorm": "spec.network",
    "order_parameters": "theory.recursions",
    "OrderParameters": "theory.recursions",
    "signal_propagation": "theory.signal",
    "sigma_w2_critical": "theory.signal",
    "critical_line": "theory.signal",
    "predict": "theory.fisher",
    "predict_grid": "theory.fisher",
    "kernels": "theory.kernels",
    "Kernels": "theory.kernels",
    "predict_batch": "theory.batch",
    "BatchFisherStats": "theory.batch",
    "FisherStats": "theory.fisher",
    "register_finite_width": "theory.fisher",
    "derive": "theory.derivation",
    "sample": "sampled.sampling",
    "sample_many": "sampled.sampling",
    "SampledSpectrum": "sampled.sampling",
    "SampleSummary": "sampled.sampling",
    "DegenerateBatch": "sampled.sampling",
    "verify": "checking.verification",
    "VerificationReport": "checking.report",
    "latex": "printing",
    "max_learning_rate": "theory.learning_rate",
    "train": "sampled.training",
    "TrainingRun": "sampled.training",
    "LearningRate": "theory.learning_rate",
    "stability_threshold": "sampled.training",
    "learning_rate_grid": "checking.learning_rate_grid",
    "plot_learning_rate_grid": "checking.learning_rate_grid",
    "sweep": "runs.sweeps",
    "load_sweep": "runs.sweeps",
    "Grid": "runs.grids",
    "free_edge": "finite.freeprob",
    "measure_fluctuations": "finite.fluctuations",
    "Fluctuations": "finite.fluctuations",
    "cross_output_variance": "finite.fourpoint",
    "CrossOutputVariance": "finite.fourpoint",
    "same_output_variance": "finite.fourpoint",
    "SameOutputVariance": "finite.fourpoint",
    "gram_covariance": "finite.fourpoint",
    "bulk_fluctuations": "finite.fourpoint",
    "BulkFluctuations": "finite.fourpoint",
    "bulk_estimates": "finite.fourpoint",
    "outlier_fluctuations": "finite.fourpoint",
    "OutlierFluctuations": "finite.fourpoint",
    "linear_population": "finite.population",
    "LinearPopulation": "finite.population",
    "reproduce": "runs.reproduce",
    "digits": "spec.inputs",
    "load_inputs": "spec.inputs",
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


# Module paths of releases before the subpackage layout -> the module(s) that now hold their code.
# Importing an old path still works and warns, so that user code and pickles keep loading while they
# move: one target is handed out as it is; a module that was split is rebuilt under its old name from
# the public names of its parts.
_MOVED = {
    "meanfield.activations": ("meanfield.spec.activations",),
    "meanfield.network": ("meanfield.spec.network", "meanfield.spec.norms"),
    "meanfield.symbols": ("meanfield.spec.symbols",),
    "meanfield.gaussian": ("meanfield.integrals.gaussian",),
    "meanfield.gaussian.api": ("meanfield.integrals.gaussian",),
    "meanfield.gaussian.closed_forms": ("meanfield.integrals.closed_forms",),
    "meanfield.gaussian.numeric": ("meanfield.integrals.numeric",),
    "meanfield.gaussian.symbolic": ("meanfield.integrals.symbolic",),
    "meanfield.sphere": ("meanfield.integrals.sphere",),
    "meanfield.recursions": ("meanfield.theory.recursions", "meanfield.theory.signal"),
    "meanfield.fisher": ("meanfield.theory.fisher",),
    "meanfield.derivation": ("meanfield.theory.derivation",),
    "meanfield.fourpoint": ("meanfield.finite.fourpoint",),
    "meanfield.population": ("meanfield.finite.population",),
    "meanfield.rmt": ("meanfield.finite.model", "meanfield.finite.freeprob", "meanfield.finite.fluctuations",
                      "meanfield.checking.comparison"),
    "meanfield.backprop": ("meanfield.sampled.backprop",),
    "meanfield.spectrum": ("meanfield.sampled.gram",),
    "meanfield.sampling": ("meanfield.sampled.sampling",),
    "meanfield.training": ("meanfield.sampled.training", "meanfield.theory.learning_rate",
                           "meanfield.checking.learning_rate_grid"),
    "meanfield.grids": ("meanfield.runs.grids",),
    "meanfield.store": ("meanfield.runs.store",),
    "meanfield.sweeps": ("meanfield.runs.sweeps",),
    "meanfield.experiments": ("meanfield.runs.reproduce",),
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and hands out what now holds its code (with a DeprecationWarning)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        import types
        import warnings

        targets = _MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {', '.join(targets)}; the old path will be removed in a later "
                      "release", DeprecationWarning, stacklevel=4)
        parts = [importlib.import_module(name) for name in targets]
        if len(parts) == 1:
            return parts[0]
        merged = types.ModuleType(spec.name, f"Deprecated alias of {', '.join(targets)}.")
        names = [name for part in parts for name in getattr(part, "__all__", ())]
        for part in reversed(parts):  # the first part wins a name two parts share
            for name in getattr(part, "__all__", ()):
                setattr(merged, name, getattr(part, name))
        merged.__all__ = list(dict.fromkeys(names))
        return merged

    def exec_module(self, module: Any) -> None:
        pass  # the modules it stands for are already executed


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
