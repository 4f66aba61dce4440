"""eta_max = 2 / lambda_max: the largest stable full-batch gradient-descent step the theory predicts.

The practical meaning of the FIM's largest eigenvalue is the step size gradient descent can take.
For the squared loss over the batch of T inputs,

    Loss(theta) = (1 / 2T) sum_t ||f(x_t; theta) - y_t||^2,

the Hessian is J^T J / T + (1/T) sum_a r_a grad^2 f_a, with J the (CT x P) Jacobian of the outputs
and r = f - y the residual. At a zero-residual minimum the second term vanishes and the Hessian *is*
the FIM F = J^T J / T. Gradient descent theta <- theta - eta grad Loss then moves the residual, to
first order, by r <- (I - eta G) r with G = J J^T / T the dual Gram (F's non-zero spectrum), so the
minimum is linearly stable exactly when eta < 2 / lambda_max.

:func:`max_learning_rate` gives eta_max = 2 / lambda_max from :func:`meanfield.predict` (finite-width
form, with the leading-order value beside it). Training sampled networks to test it lives in
:mod:`meanfield.sampled.training`; the (width, eta) grid that puts both side by side in
:mod:`meanfield.checking.learning_rate_grid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..display import latex_table, plain, table
from ..errors import InvalidArgument, check_int
from ..spec.network import Network
from .fisher import predict

__all__ = ["LearningRate", "max_learning_rate"]



# ------------------------------------------------------------------------------------------------
# prediction
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LearningRate:
    """eta_max = 2 / lambda_max: the predicted largest stable step of full-batch gradient descent.

    Attributes:
        network, width, samples: what was predicted for (M, T).
        lambda_max: the theory's lambda_max in its finite-width form (``predict``).
        eta_max: 2 / lambda_max.
        lambda_max_leading, eta_max_leading: the same at leading order in M.
        kind: ``"prediction"``, or ``"bound"`` when the theory only brackets lambda_max (normalization
            on the output, or kappa_2 <= 0: the top eigenvalue is the bulk edge, not predicted). Then
            ``lambda_max`` is predict's lower bound lo and ``eta_max`` = 2 / lo an upper bound.
        eta_max_bounds: (2 / hi, 2 / lo) from predict's bounds (lo, hi) on lambda_max when
            ``kind == "bound"``, else None.
    """

    network: Network
    width: int
    samples: int
    lambda_max: float
    eta_max: float
    lambda_max_leading: float
    eta_max_leading: float
    kind: str = "prediction"
    eta_max_bounds: tuple[float, float] | None = None

    def _rows(self) -> list[tuple[str, Any]]:
        rows = [("network", self.network.describe()), ("width M", self.width), ("samples T", self.samples),
                ("lambda_max (finite width)", self.lambda_max), ("eta_max = 2/lambda_max", self.eta_max),
                ("lambda_max (leading order)", self.lambda_max_leading),
                ("eta_max (leading order)", self.eta_max_leading),
                ("lambda_max is", self.kind if self.kind == "prediction"
                 else "only bounded: lambda_max is the lower bound, so eta_max is an upper bound")]
        if self.eta_max_bounds is not None:
            rows.append(("eta_max between (2/hi, 2/lo)", self.eta_max_bounds))
        return rows

    def __str__(self) -> str:
        return table("LearningRate", self._rows())

    def _repr_latex_(self) -> str:
        return latex_table(self._rows())

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain Python values (the network as its one-line description)."""
        return plain({k: getattr(self, k) for k in self.__dataclass_fields__})


def max_learning_rate(net: Network, width: int, samples: int, *, dps: int | None = None) -> LearningRate:
    """eta_max = 2 / lambda_max(M, T): the predicted largest stable full-batch gradient-descent step.

    Uses :func:`meanfield.predict` (finite-width form; the leading-order value beside it). When the
    theory only bounds lambda_max, ``kind`` says so and ``eta_max_bounds`` gives the implied range.

    Args:
        net: the network spec (numeric parameters).
        width: base width M.
        samples: batch size T (the FIM is that of the T inputs the step is computed on).
        dps: optional mpmath precision passed to ``predict``.

    Returns:
        A :class:`LearningRate`.

    Example:
        >>> from meanfield import Network
        >>> lr = max_learning_rate(Network(3, "relu", 2, 0), width=256, samples=16)
        >>> abs(lr.eta_max * lr.lambda_max - 2) < 1e-12
        True
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield.Network")
    width = check_int("width", width, minimum=1)
    samples = check_int("samples", samples, minimum=max(net.min_samples(), 1))
    stats = predict(net, width, samples, dps=dps)
    lam = float(stats.lambda_max)
    lead = float(stats.leading.lambda_max)
    kind = str(getattr(stats, "lambda_max_kind", "prediction"))
    bounds = getattr(stats, "lambda_max_bounds", None)
    eta_bounds = None
    if kind != "prediction" and bounds is not None:
        lo, hi = (float(b) for b in bounds)
        eta_bounds = (2.0 / hi, 2.0 / lo if lo > 0 else math.inf)
    return LearningRate(network=net, width=width, samples=samples, lambda_max=lam,
                        eta_max=2.0 / lam, lambda_max_leading=lead, eta_max_leading=2.0 / lead,
                        kind=kind, eta_max_bounds=eta_bounds)
