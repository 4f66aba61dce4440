"""Full-batch gradient descent on sampled networks: the step at which a minimum stops being stable.

For the squared loss over the batch of T inputs, Loss(theta) = (1 / 2T) sum_t ||f(x_t; theta) - y_t||^2,
the Hessian at a zero-residual minimum is the FIM F = J^T J / T, and gradient descent moves the
residual, to first order, by r <- (I - eta G) r with G = J J^T / T the dual Gram: the minimum is
linearly stable exactly when eta < 2 / lambda_max (the prediction is
:func:`meanfield.theory.learning_rate.max_learning_rate`). This module measures it:

- :func:`train`: full-batch gradient descent on a sampled network (any normalization placement,
  batch statistics over the full batch), in two set-ups: ``"zero_residual"`` (targets produced by
  the network itself, start a small perturbation away) and ``"random_targets"`` (from the drawn
  network toward random targets: loss curve, lambda_max at the end: the "catapult");
- :func:`stability_threshold`: bisection on c = eta lambda_max for the step at which the
  zero-residual minimum stops being stable (the theory says c = 2);
- :func:`loss_and_gradient`: the loss and its exact gradient, for users and the finite-difference test.

The (width, eta) grid that sets these runs beside the predicted boundary is
:mod:`meanfield.checking.learning_rate_grid`.

Training is built on the sampler's numeric pieces (``meanfield.sampled.sampling.draw``, ``forward`` and
``vjp``): there is one forward and one backward pass in the library, so what is trained is exactly
the network whose spectrum the sampler reports. Parameters are handled here as one flat vector
(all weights, then all biases, layer by layer), the layout of the rows of J.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from ..errors import InvalidArgument, check_choice, check_int, check_real
from ..spec.network import BatchNorm, Network
from . import sampling
from ..display import fmt, latex_table, plain, table
from .gram import gram, jacobian, top_eigenvalue

__all__ = [
    "TrainingRun",
    "train",
    "StabilityThreshold",
    "stability_threshold",
    "loss_and_gradient",
    "SETUPS",
    "DIRECTIONS",
]

SETUPS = ("zero_residual", "random_targets")
DIRECTIONS = ("top", "random")

# A run counts as diverged once its loss exceeds this multiple of the loss of the zero predictor,
# (1/2T) ||y||^2 (or is not finite): far beyond any catapult peak we measured (a few hundred), and
# far below float64 overflow, so the forward pass never sees an inf.
_DIVERGENCE = 1e6
# A run is "unstable" when its residual norm rises 10% above its running minimum. Below the
# threshold the linearized residual contracts monotonically and the nonlinear corrections are of
# the relative size of the perturbation (1e-4), so 10% is never reached; above it, a top-eigenvector
# start reaches it after 0.095 / (c - 2) steps (48 steps at c = 2.002).
_RISE = 1.1


def _rise(loss: np.ndarray) -> float:
    """max_n sqrt(loss[n] / min_{m <= n} loss[m]): growth of the residual over its running minimum,
    up to the first step where the loss is below 1e-12 of its start (what follows is converged, and
    near rounding error its step-to-step ratios are noise)."""
    loss = np.asarray(loss, dtype=float)
    if loss.size == 0:
        return 1.0
    done = np.nonzero(loss < 1e-12 * loss[0])[0]
    if done.size:
        loss = loss[: done[0] + 1]
    running = np.minimum.accumulate(loss)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(running > 0, loss / running, 1.0)
    return float(math.sqrt(np.max(ratio)))


# ------------------------------------------------------------------------------------------------
# the trained model: a sampled network with its parameters as one flat vector
# ------------------------------------------------------------------------------------------------
class _Model:
    """A drawn network (``sampling.draw``) whose weights and biases are viewed as one flat vector.

    All numerics go through ``sampling.forward`` and ``sampling.vjp``; this class only flattens.
    """

    def __init__(self, net: Network, width: int, samples: int, seed: int):
        self.degenerate = sampling.DegenerateBatch
        self.net = net
        self.draw = sampling.draw(net, width, samples, seed)
        weights, biases = _split(self.draw)
        self.shapes = [np.shape(w) for w in weights] + [np.shape(b) for b in biases]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.cumsum([0, *self.sizes])
        self.theta0 = np.concatenate([np.ravel(a) for a in (*weights, *biases)]).astype(float)
        self.inputs = self.draw.inputs
        self.T = samples

    @property
    def P(self) -> int:
        return int(self.offsets[-1])

    def params(self, theta: np.ndarray) -> Any:
        arrays = [theta[a:b].reshape(s) for a, b, s in zip(self.offsets[:-1], self.offsets[1:], self.shapes)]
        L = len(arrays) // 2
        return _join(self.draw, tuple(arrays[:L]), tuple(arrays[L:]))

    def trace(self, theta: np.ndarray) -> Any:
        return sampling.forward(self.net, self.params(theta), self.inputs)

    def outputs(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(_outputs(self.trace(theta)), dtype=float)

    def pullback(self, trace: Any, cotangent: np.ndarray) -> np.ndarray:
        """J^T cotangent as a flat vector (the cotangent has the outputs' shape (C, T))."""
        grads = sampling.vjp(self.net, trace, cotangent)
        weights, biases = _split(grads)
        return np.concatenate([np.ravel(a) for a in (*weights, *biases)])

    def gram(self, trace: Any) -> np.ndarray:
        """G = J J^T / T (CT x CT, index k*T + t) at the trace's parameters: the sampler's exact Gram."""
        return gram(self.net, trace).matrix

    def top(self, theta: np.ndarray) -> tuple[float, np.ndarray, Any]:
        """(lambda_max, u, trace): top eigenpair of G at theta (u indexed k*T + t) and the forward trace."""
        trace = self.trace(theta)
        G = self.gram(trace)
        n = G.shape[0]
        values, vectors = scipy.linalg.eigh(G, subset_by_index=[n - 1, n - 1])
        return float(values[0]), vectors[:, 0], trace

    def lambda_max(self, theta: np.ndarray) -> float:
        """lambda_max(F) at theta, as the sampler computes it (dense or Lanczos by size)."""
        return top_eigenvalue(self.gram(self.trace(theta)))[0]


def _split(obj: Any) -> tuple[tuple, tuple]:
    """(weights, biases) of a sampler ``Draw`` or ``Gradients``."""
    return tuple(obj.weights), tuple(obj.biases)


def _join(draw: Any, weights: tuple, biases: tuple) -> Any:
    """The sampler's ``Draw`` with new weights and biases (same inputs and seed)."""
    return dataclasses.replace(draw, weights=weights, biases=biases)


def _outputs(trace: Any) -> np.ndarray:
    return trace.outputs


def _targets_like(net: Network, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Random targets y ~ N(0, 1), made reachable: a batch-normed output layer can only produce
    rows with batch mean 0 (and batch variance 1), so the targets are given the same constraint
    (otherwise the loss has a positive floor that has nothing to do with the step size)."""
    y = rng.standard_normal(shape)
    norm = net.norm_at(net.depth)
    if isinstance(norm, BatchNorm):
        y = y - y.mean(axis=1, keepdims=True)
        if not norm.center_only:
            y = y / np.sqrt((y ** 2).mean(axis=1, keepdims=True))
    return y


def _descend(model: _Model, theta: np.ndarray, y: np.ndarray, eta: float, steps: int, *,
             diverge_at: float, stop: Callable[[list[float]], bool] | None = None,
             lambda_every: int | None = None) -> tuple[np.ndarray, list[float], bool, list[tuple[int, float]]]:
    """Full-batch gradient descent theta <- theta - eta J^T (f - y) / T; returns (theta, losses,
    diverged, [(step, lambda_max)]). ``theta`` returned is the last one with a finite loss."""
    T = model.T
    losses: list[float] = []
    lambdas: list[tuple[int, float]] = []
    diverged = False
    # Overflow on the way to divergence is expected and detected below (the loss is checked every
    # step); it must not surface as a warning or leave a NaN anywhere.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for n in range(steps + 1):
            try:
                trace = model.trace(theta)
            except model.degenerate:
                if n == 0:
                    raise
                # A step made a normalized unit constant over the batch (0/0): training broke down.
                diverged = True
                break
            r = np.asarray(_outputs(trace), dtype=float) - y
            loss = 0.5 * float(np.sum(r * r)) / T
            if not math.isfinite(loss) or loss > diverge_at:
                diverged = True
                if math.isfinite(loss):
                    losses.append(loss)
                break
            losses.append(loss)
            if lambda_every and n % lambda_every == 0:
                lambdas.append((n, model.lambda_max(theta)))
            if n == steps or (stop is not None and stop(losses)):
                break
            step = model.pullback(trace, r / T)
            new = theta - eta * step
            if not np.all(np.isfinite(new)):
                diverged = True
                break
            theta = new
    return theta, losses, diverged, lambdas


# ------------------------------------------------------------------------------------------------
# training runs
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TrainingRun:
    """Full-batch gradient descent on the squared loss (1/2T) sum ||f - y||^2 of a sampled network.

    Attributes:
        network, width, samples, seed: the sampled network (``sampling.draw(net, M, T, seed)``).
        setup: ``"zero_residual"`` or ``"random_targets"``.
        eta: the step; c = eta * lambda_max_initial its value in units of 1 / lambda_max.
        lambda_max_initial: top eigenvalue of the FIM of the drawn network (the start, or for the
            zero-residual set-up the minimum it starts next to).
        lambda_max_final: the same at the final parameters (None when diverged or not computed).
        loss: the loss before each step, ``loss[n]`` after n steps (only finite values; a diverged
            run stops early, so ``len(loss) - 1`` steps were taken).
        diverged: the loss left every reasonable range (more than 1e6 times the zero predictor's),
            or a step made a batch-normalized unit constant over the batch (degenerate: 0/0).
        perturbation, direction: the zero-residual start (relative residual size; ``"top"`` or
            ``"random"`` direction), None for random targets.
        lambdas: ((step, lambda_max), ...) when recorded along the way (``lambda_every``).
    """

    network: Network
    width: int
    samples: int
    seed: int
    setup: str
    eta: float
    c: float
    steps: int
    lambda_max_initial: float
    lambda_max_final: float | None
    loss: np.ndarray = field(repr=False)
    diverged: bool
    perturbation: float | None = None
    direction: str | None = None
    lambdas: tuple[tuple[int, float], ...] = ()

    @property
    def steps_taken(self) -> int:
        """Number of gradient steps actually taken (fewer than ``steps`` if stopped early)."""
        return len(self.loss) - 1

    @property
    def initial_loss(self) -> float:
        return float(self.loss[0])

    @property
    def final_loss(self) -> float:
        """Loss after the last step; inf when the run diverged."""
        return math.inf if self.diverged else float(self.loss[-1])

    @property
    def peak_loss(self) -> float:
        """Largest loss seen (inf when diverged)."""
        return math.inf if self.diverged else float(np.max(self.loss))

    @property
    def peak_step(self) -> int:
        return int(np.argmax(self.loss))

    @property
    def growth(self) -> float:
        """max_n ||r_n|| / min_{m <= n} ||r_m||: the largest factor by which the residual r = f - y
        grew above its running minimum (1.0 when it never grew; inf when diverged), until the loss
        first falls below 1e-12 of its start.

        Near a minimum whose Hessian is F the residual evolves as r <- (I - eta G) r, a contraction
        for eta lambda_max < 2, so below the threshold it never grows. Above it, it grows by
        (eta lambda_max - 1) per step until nonlinear effects take over: the run then drifts to a
        flatter minimum (self-stabilization), so a growth rate read off the *end* of a run is no test.
        """
        if self.diverged:
            return math.inf
        return _rise(self.loss)

    @property
    def unstable(self) -> bool:
        """The perturbation grew: :attr:`growth` above 1.1 (a stable linear run can never exceed 1)."""
        return self.growth > _RISE

    @property
    def catapult(self) -> bool:
        """The loss rose above its start (by more than 10%) and the run still ended below the start."""
        return (not self.diverged and self.peak_loss > 1.1 * self.initial_loss
                and self.final_loss < self.initial_loss)

    def _rows(self) -> list[tuple[str, Any]]:
        rows = [("network", self.network.describe()), ("width M, samples T, seed", (self.width, self.samples, self.seed)),
                ("setup", self.setup), ("eta", self.eta), ("c = eta lambda_max(start)", self.c),
                ("steps taken / asked", f"{self.steps_taken} / {self.steps}"),
                ("lambda_max at start", self.lambda_max_initial), ("lambda_max at end", self.lambda_max_final)]
        if self.lambda_max_final is not None:
            rows.append(("eta lambda_max at end", self.eta * self.lambda_max_final))
        rows += [("initial loss", self.initial_loss), ("peak loss (step)", f"{fmt(self.peak_loss)} ({self.peak_step})"),
                 ("final loss", self.final_loss), ("diverged", self.diverged)]
        if self.setup == "zero_residual":
            rows.append(("residual growth (max / running min)", self.growth))
            rows.append(("perturbation grew (unstable)", self.unstable))
        else:
            rows.append(("catapult", self.catapult))
        return rows

    def __str__(self) -> str:
        return table("TrainingRun", self._rows())

    def __repr__(self) -> str:
        return (f"TrainingRun(setup={self.setup!r}, width={self.width}, samples={self.samples}, seed={self.seed}, "
                f"c={self.c:.4g}, final_loss={self.final_loss:.4g}, diverged={self.diverged})")

    def _repr_latex_(self) -> str:
        return latex_table(self._rows())

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, including the loss curve as a list (None for an infinite value)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out.update(final_loss=self.final_loss, peak_loss=self.peak_loss, steps_taken=self.steps_taken)
        return plain(out)


def _check_net(net: Any, samples: Any) -> tuple[Network, int]:
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield.Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "a network with numeric parameters (training is numeric)")
    return net, check_int("samples", samples, minimum=max(net.min_samples(), 1))


def _step_size(eta: Any, c: Any, lam: float) -> tuple[float, float]:
    if (eta is None) == (c is None):
        raise InvalidArgument("eta", eta, "exactly one of eta (absolute step) or c (step in units of 1/lambda_max)",
                              f"got eta={eta} and c={c}")
    if eta is not None:
        eta = check_real("eta", eta, minimum=0, strict_min=True, symbolic=False)
        return eta, eta * lam
    c = check_real("c", c, minimum=0, strict_min=True, symbolic=False)
    return c / lam, c


def _zero_residual_start(model: _Model, y: np.ndarray, lam: float, u: np.ndarray, trace: Any,
                         perturbation: float, direction: str, rng: np.random.Generator) -> np.ndarray:
    """theta* + eps v with v = J^T u along F's top eigenvector ("top") or v isotropic ("random"),
    eps chosen so that the linearized residual J (eps v) has RMS ``perturbation * rms(y)``."""
    C, T = y.shape
    if direction == "top":
        v = model.pullback(trace, u.reshape(C, T))  # J^T u: F v = lambda v, and J v = T lambda u
        Jv_norm = T * lam
    else:
        v = rng.standard_normal(model.P)
        Jv_norm = float(np.linalg.norm(jacobian(model.net, trace) @ v))
    scale = perturbation * math.sqrt(float(np.mean(y * y))) * math.sqrt(y.size) / Jv_norm
    return model.theta0 + scale * v


def train(net: Network, width: int, samples: int, *, seed: int = 0, eta: float | None = None,
          c: float | None = None, steps: int = 200, setup: str = "zero_residual",
          perturbation: float | None = None, direction: str = "top", final_lambda: bool = True,
          lambda_every: int | None = None) -> TrainingRun:
    """theta <- theta - eta grad (1/2T) sum_t ||f(x_t) - y_t||^2: full-batch gradient descent on a sampled net.

    The network is ``sampling.draw(net, width, samples, seed)`` with its batch of T inputs; every
    normalization layer uses statistics over the full batch, recomputed at every step.

    Set-ups:
        ``"zero_residual"``: the targets are the drawn network's own outputs, y = f(theta*), so theta*
            is a global minimum whose Hessian is exactly F; the run starts at theta* + eps v, a small
            perturbation (``direction="top"``: along F's top eigenvector; ``"random"``: isotropic)
            whose linearized residual has RMS ``perturbation`` (default 1e-4) times the outputs'
            RMS. It is stable for eta < 2 / lambda_max (see :attr:`TrainingRun.unstable`).
        ``"random_targets"``: start at the drawn network, targets y ~ N(0, 1) iid (with batch mean 0
            and variance 1 per output when the last layer is batch-normed, so they are reachable).

    Args:
        net, width, samples, seed: the sampled network and batch.
        eta: the absolute step; or
        c: the step in units of 1 / lambda_max of the drawn network: eta = c / lambda_max(F).
        steps: number of gradient steps N.
        setup: ``"zero_residual"`` or ``"random_targets"``.
        perturbation: relative size of the zero-residual start (only for that set-up).
        direction: ``"top"`` or ``"random"`` (only for the zero-residual set-up).
        final_lambda: compute lambda_max at the final parameters (the sampler's exact Gram).
        lambda_every: also record lambda_max every this many steps (costly; None: never).

    Returns:
        A :class:`TrainingRun` with the loss after every step.

    Example:
        >>> from meanfield import Network
        >>> net = Network(3, "tanh", 1.5, 0.1)
        >>> run = train(net, 16, 8, c=1.9, steps=60)          # just below the threshold c = 2
        >>> run.unstable, run.final_loss < 1e-3 * run.initial_loss
        (False, True)
        >>> train(net, 16, 8, c=2.1, steps=60).unstable       # just above: the perturbation grows
        True
    """
    net, samples = _check_net(net, samples)
    width = check_int("width", width, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    steps = check_int("steps", steps, minimum=0)
    setup = check_choice("setup", setup, SETUPS)
    direction = check_choice("direction", direction, DIRECTIONS)
    if lambda_every is not None:
        lambda_every = check_int("lambda_every", lambda_every, minimum=1)
    if setup == "zero_residual":
        perturbation = 1e-4 if perturbation is None else check_real(
            "perturbation", perturbation, minimum=0, strict_min=True, symbolic=False)
    elif perturbation is not None:
        raise InvalidArgument("perturbation", perturbation, "None for setup='random_targets'",
                              "the random-target run starts at the drawn network itself")

    model = _Model(net, width, samples, seed)
    # Independent streams for targets and perturbation directions, distinct from the sampler's.
    rng = np.random.default_rng(np.random.SeedSequence([seed, 8]))
    lam, u, trace = model.top(model.theta0)
    eta, c = _step_size(eta, c, lam)
    f0 = np.asarray(_outputs(trace), dtype=float)
    if setup == "zero_residual":
        y = f0
        theta = _zero_residual_start(model, y, lam, u, trace, perturbation, direction, rng)
    else:
        y = _targets_like(net, rng, f0.shape)
        theta = model.theta0
        perturbation = None
        direction = None
    reference = 0.5 * float(np.sum(y * y)) / samples
    theta, losses, diverged, lambdas = _descend(model, theta, y, eta, steps, diverge_at=_DIVERGENCE * reference,
                                                lambda_every=lambda_every)
    lam_final = model.lambda_max(theta) if (final_lambda and not diverged) else None
    return TrainingRun(network=net, width=width, samples=samples, seed=seed, setup=setup, eta=eta, c=c,
                       steps=steps, lambda_max_initial=lam, lambda_max_final=lam_final,
                       loss=np.asarray(losses), diverged=diverged, perturbation=perturbation,
                       direction=direction, lambdas=tuple(lambdas))


# ------------------------------------------------------------------------------------------------
# the threshold, by bisection
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StabilityThreshold:
    """c* = eta* lambda_max: the measured step at which a zero-residual minimum stops being stable.

    Linear stability of gradient descent at a minimum whose Hessian is F predicts c* = 2.

    Attributes:
        network, width, samples, seed: the sampled network.
        c: midpoint of the final bracket; ``bracket`` = (largest stable c, smallest unstable c).
        lambda_max: exact top eigenvalue of F at the minimum; eta = c / lambda_max.
        steps, perturbation, direction: the criterion: a run of ``steps`` steps from a perturbation
            of relative size ``perturbation`` is unstable when its residual rises 10% above its
            running minimum (:attr:`TrainingRun.growth`).
        evaluations: ((c, residual growth, stable), ...) in the order tried.
    """

    network: Network
    width: int
    samples: int
    seed: int
    c: float
    bracket: tuple[float, float]
    lambda_max: float
    steps: int
    perturbation: float
    direction: str
    evaluations: tuple[tuple[float, float, bool], ...]

    @property
    def eta(self) -> float:
        """The threshold step eta* = c / lambda_max."""
        return self.c / self.lambda_max

    @property
    def relative_error(self) -> float:
        """c / 2 - 1: the deviation from the linear-stability prediction."""
        return self.c / 2.0 - 1.0

    def _rows(self) -> list[tuple[str, Any]]:
        return [("network", self.network.describe()), ("width M, samples T, seed", (self.width, self.samples, self.seed)),
                ("c* = eta* lambda_max", self.c), ("bracket (stable, unstable)", self.bracket),
                ("c*/2 - 1", self.relative_error), ("lambda_max (sampled, exact)", self.lambda_max),
                ("eta*", self.eta), ("criterion", f"{self.steps} steps, perturbation {self.perturbation:g}, "
                                                   f"{self.direction} direction"),
                ("runs", len(self.evaluations))]

    def __str__(self) -> str:
        return table("StabilityThreshold", self._rows())

    def _repr_latex_(self) -> str:
        return latex_table(self._rows())

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out.update(eta=self.eta, relative_error=self.relative_error)
        return plain(out)


def stability_threshold(net: Network, width: int, samples: int, *, seed: int = 0, steps: int = 400,
                        tolerance: float = 1e-3, bracket: tuple[float, float] = (1.5, 2.6),
                        perturbation: float = 1e-4, direction: str = "top") -> StabilityThreshold:
    """c* = eta* lambda_max, bisected: where the zero-residual minimum of a sampled net turns unstable.

    Each trial c runs gradient descent in the ``"zero_residual"`` set-up of :func:`train` (the same
    drawn network, the same start) and calls it *unstable* when the residual ||f - y|| rises 10%
    above its running minimum. In the linear regime the residual evolves as r <- (I - eta G) r, a
    contraction for c = eta lambda_max < 2, so below the threshold it can only shrink; above it, the
    component along G's top eigenvector grows by (c - 1) per step. The growth has to be caught while
    it happens: once it is nonlinear, gradient descent drifts along the valley of minima to a flatter
    one with eta lambda_max just below 2 (self-stabilization), and the end of the run looks stable.
    Starting on the top eigenvector (``direction="top"``) leaves no transient, so a rise is seen after
    about 0.1 / (c - 2) steps; a ``"random"`` start first has to let the top mode dominate (use more
    ``steps``). A run stops at the rise, or once its residual has shrunk a million-fold (stable: still
    far above rounding error).

    Args:
        net, width, samples, seed: the sampled network.
        steps: steps per trial run.
        tolerance: stop when the bracket is narrower than ``tolerance`` times its midpoint.
        bracket: initial (stable, unstable) guesses for c; widened if they are not.
        perturbation, direction: the start, as in :func:`train`.

    Returns:
        A :class:`StabilityThreshold`.

    Example:
        >>> from meanfield import Network, BatchNorm
        >>> net = Network(3, "relu", 2, 0.1, norms=[BatchNorm("last")])
        >>> th = stability_threshold(net, 16, 8, tolerance=1e-3)
        >>> abs(th.c - 2) < 0.01
        True
    """
    net, samples = _check_net(net, samples)
    width = check_int("width", width, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    steps = check_int("steps", steps, minimum=2)
    tolerance = check_real("tolerance", tolerance, minimum=0, strict_min=True, maximum=1, symbolic=False)
    perturbation = check_real("perturbation", perturbation, minimum=0, strict_min=True, symbolic=False)
    direction = check_choice("direction", direction, DIRECTIONS)
    if (not isinstance(bracket, Sequence) or len(bracket) != 2
            or not all(isinstance(b, (int, float, np.floating, np.integer)) for b in bracket)
            or not 0 < bracket[0] < bracket[1]):
        raise InvalidArgument("bracket", bracket, "two numbers 0 < lo < hi (stable and unstable guesses for c)")

    model = _Model(net, width, samples, seed)
    lam, u, trace = model.top(model.theta0)
    y = np.asarray(_outputs(trace), dtype=float)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 8]))
    start = _zero_residual_start(model, y, lam, u, trace, perturbation, direction, rng)
    reference = 0.5 * float(np.sum(y * y)) / samples
    evaluations: list[tuple[float, float, bool]] = []

    def stop(losses: list[float]) -> bool:
        now = losses[-1]
        return now > _RISE ** 2 * min(losses) or now < 1e-12 * losses[0]

    def stable(c: float) -> bool:
        _, losses, diverged, _ = _descend(model, start, y, c / lam, steps, diverge_at=_DIVERGENCE * reference,
                                          stop=stop)
        rise = math.inf if diverged else _rise(np.asarray(losses))
        ok = rise <= _RISE
        evaluations.append((float(c), float(rise), bool(ok)))
        return ok

    lo, hi = float(bracket[0]), float(bracket[1])
    for _ in range(20):
        if stable(lo):
            break
        lo /= 2
    else:
        raise RuntimeError(f"no stable step found down to c={lo:g}")  # pragma: no cover - the theory rules it out
    for _ in range(20):
        if not stable(hi):
            break
        lo, hi = hi, hi * 2
    else:
        raise RuntimeError(f"no unstable step found up to c={hi:g}")  # pragma: no cover
    while hi - lo > tolerance * 0.5 * (hi + lo):
        mid = 0.5 * (lo + hi)
        if stable(mid):
            lo = mid
        else:
            hi = mid
    return StabilityThreshold(network=net, width=width, samples=samples, seed=seed, c=0.5 * (lo + hi),
                              bracket=(lo, hi), lambda_max=lam, steps=steps, perturbation=perturbation,
                              direction=direction, evaluations=tuple(evaluations))


# ------------------------------------------------------------------------------------------------
# the loss and its gradient (public, for users and for the finite-difference test)
# ------------------------------------------------------------------------------------------------
def loss_and_gradient(net: Network, params: Any, inputs: np.ndarray, targets: np.ndarray) -> tuple[float, Any]:
    """(Loss, grad Loss) with Loss = (1/2T) sum_t ||f(x_t) - y_t||^2; grad = vjp with cotangent (f - y)/T.

    Args:
        net: the network spec.
        params: the sampler's parameters (a ``Draw`` from ``sampling.draw`` or what ``forward`` takes).
        inputs: the batch, as ``Draw.inputs``.
        targets: y, the shape of the outputs (C, T).

    Returns:
        (loss, gradients) with gradients as returned by ``sampling.vjp`` (all weights and biases).

    Example:
        >>> from meanfield import Network
        >>> from meanfield.sampled.sampling import draw
        >>> net = Network(2, "relu", 2, 0.1)
        >>> d = draw(net, 8, 4, seed=0)
        >>> loss, grads = loss_and_gradient(net, d, d.inputs, np.zeros((1, 4)))
        >>> loss > 0
        True
    """
    trace = sampling.forward(net, params, inputs)
    f = np.asarray(_outputs(trace), dtype=float)
    y = np.asarray(targets, dtype=float)
    if y.shape != f.shape:
        raise InvalidArgument("targets", f"array of shape {y.shape}", f"an array of the outputs' shape {f.shape}")
    T = f.shape[1]
    r = f - y
    return 0.5 * float(np.sum(r * r)) / T, sampling.vjp(net, trace, r / T)
