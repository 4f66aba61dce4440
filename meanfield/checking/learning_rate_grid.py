"""The (width, eta) grid: loss after N gradient steps beside the predicted boundary eta_max = 2/lambda_max(M).

Theory against training: for each network (e.g. without normalization and with batch norm in the
last layer) and width M, sampled networks are trained (:func:`meanfield.sampled.training.train`) at a
grid of steps eta, and the predicted largest stable step
(:func:`meanfield.theory.learning_rate.max_learning_rate`) is drawn on the losses
(:func:`plot_learning_rate_grid`). It is the figure of the learning-rate stage of ``reproduce``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_choice, check_int, check_real
from ..display import fmt, plain
from ..sampled.training import SETUPS, train
from ..spec.network import Network
from ..theory.learning_rate import max_learning_rate

__all__ = ["LearningRateGrid", "learning_rate_grid", "plot_learning_rate_grid"]


@dataclass(frozen=True, eq=False)
class LearningRateGrid:
    """Loss after N steps of gradient descent over (width M, step eta), with eta_max = 2/lambda_max(M).

    Attributes:
        labels: one name per network (e.g. ``"none"``, ``"batch norm last"``).
        networks: the networks, in the order of ``labels``.
        widths, etas, seeds: the grid axes.
        samples, steps, setup: the batch size T, the number of steps N, the training set-up.
        initial_loss, final_loss: arrays (network, width, eta, seed); ``final_loss`` is inf where the
            run diverged.
        peak_loss: same shape, the largest loss during the run (inf when diverged).
        lambda_sampled: (network, width, seed): exact lambda_max of each drawn network.
        eta_predicted, eta_leading: (network, width): 2 / lambda_max from :func:`max_learning_rate`
            (finite width and leading order); ``predicted_kind`` says "prediction" or "bound" and
            ``eta_bounds`` (network, width, 2) holds the bound's range (nan-free: inf/0 when open).
    """

    labels: tuple[str, ...]
    networks: tuple[Network, ...]
    widths: tuple[int, ...]
    etas: tuple[float, ...]
    seeds: tuple[int, ...]
    samples: int
    steps: int
    setup: str
    initial_loss: np.ndarray = field(repr=False)
    final_loss: np.ndarray = field(repr=False)
    peak_loss: np.ndarray = field(repr=False)
    lambda_sampled: np.ndarray = field(repr=False)
    eta_predicted: np.ndarray = field(repr=False)
    eta_leading: np.ndarray = field(repr=False)
    predicted_kind: tuple[tuple[str, ...], ...] = ()
    eta_bounds: np.ndarray | None = field(default=None, repr=False)

    @property
    def eta_sampled(self) -> np.ndarray:
        """(network, width): 2 / lambda_max of the drawn networks, mean over seeds."""
        return np.mean(2.0 / self.lambda_sampled, axis=2)

    @property
    def diverged(self) -> np.ndarray:
        """(network, width, eta, seed): True where the run diverged."""
        return ~np.isfinite(self.final_loss)

    def largest_trainable(self) -> np.ndarray:
        """(network, width): the largest eta of the grid at which no seed diverged and every seed
        ended below its initial loss (0 when there is none)."""
        ok = (~self.diverged) & (self.final_loss < self.initial_loss)
        ok = np.all(ok, axis=3)  # (net, width, eta)
        etas = np.asarray(self.etas)
        out = np.zeros(ok.shape[:2])
        for i in range(ok.shape[0]):
            for j in range(ok.shape[1]):
                good = etas[ok[i, j]]
                out[i, j] = good.max() if good.size else 0.0
        return out

    def largest_stable(self) -> np.ndarray:
        """(network, width): the largest eta of the grid at which no seed diverged (0 if none)."""
        ok = np.all(~self.diverged, axis=3)
        etas = np.asarray(self.etas)
        return np.array([[etas[ok[i, j]].max() if ok[i, j].any() else 0.0 for j in range(ok.shape[1])]
                         for i in range(ok.shape[0])])

    def gain(self, numerator: int = 1, denominator: int = 0) -> dict[str, np.ndarray]:
        """Per width, how much larger a step network ``numerator`` allows than ``denominator``:
        ratios of the predicted, the sampled eta_max = 2/lambda_max and the grid's largest
        trainable and largest non-diverging steps (the last two resolved only to the grid spacing)."""
        ratio = lambda a: a[numerator] / np.where(a[denominator] > 0, a[denominator], np.inf)  # noqa: E731
        return {"predicted": ratio(self.eta_predicted), "sampled": ratio(self.eta_sampled),
                "largest_trainable": ratio(self.largest_trainable()),
                "largest_stable": ratio(self.largest_stable())}

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per (network, width, eta, seed) run, with the predicted boundary beside it."""
        out = []
        for i, label in enumerate(self.labels):
            for j, M in enumerate(self.widths):
                for k, eta in enumerate(self.etas):
                    for s, seed in enumerate(self.seeds):
                        lam = float(self.lambda_sampled[i, j, s])
                        out.append(dict(network=label, width=M, eta=float(eta), seed=seed,
                                        c=float(eta) * lam, lambda_max=lam,
                                        initial_loss=float(self.initial_loss[i, j, k, s]),
                                        final_loss=float(self.final_loss[i, j, k, s]),
                                        peak_loss=float(self.peak_loss[i, j, k, s]),
                                        diverged=bool(self.diverged[i, j, k, s]),
                                        eta_predicted=float(self.eta_predicted[i, j]),
                                        eta_leading=float(self.eta_leading[i, j]),
                                        predicted_kind=self.predicted_kind[i][j] if self.predicted_kind else "prediction"))
        return out

    def _summary_rows(self) -> list[list[str]]:
        header = ["network", "M", "eta_pred=2/lam", "eta_sampled", "largest trainable", "largest stable"]
        rows = [header]
        trainable, stable = self.largest_trainable(), self.largest_stable()
        for i, label in enumerate(self.labels):
            for j, M in enumerate(self.widths):
                kind = self.predicted_kind[i][j] if self.predicted_kind else "prediction"
                pred = fmt(float(self.eta_predicted[i, j])) + ("" if kind == "prediction" else " (bound)")
                rows.append([label, str(M), pred, fmt(float(self.eta_sampled[i, j])),
                             fmt(float(trainable[i, j])), fmt(float(stable[i, j]))])
        return rows

    def __str__(self) -> str:
        rows = self._summary_rows()
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = [f"LearningRateGrid: {self.setup}, T={self.samples}, N={self.steps} steps, "
                 f"{len(self.etas)} etas in [{fmt(min(self.etas))}, {fmt(max(self.etas))}], seeds {self.seeds}"]
        lines += ["  " + "  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows]
        if len(self.labels) >= 2:
            g = self.gain(1, 0)
            lines.append(f"  step gain {self.labels[1]} / {self.labels[0]} per width: "
                         + ", ".join(f"M={M}: pred {g['predicted'][j]:.3g}, sampled {g['sampled'][j]:.3g}, "
                                     f"trainable {g['largest_trainable'][j]:.3g}"
                                     for j, M in enumerate(self.widths)))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"LearningRateGrid(labels={self.labels}, widths={self.widths}, {len(self.etas)} etas, "
                f"seeds={self.seeds}, samples={self.samples}, steps={self.steps}, setup={self.setup!r})")

    def _repr_latex_(self) -> str:
        rows = self._summary_rows()
        body = r" \\ ".join(" & ".join(rf"\text{{{c}}}" for c in r) for r in rows)
        return r"$\begin{array}{" + "l" * len(rows[0]) + "}" + body + r"\end{array}$"

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["networks"] = [n.describe() for n in self.networks]
        out["eta_sampled"] = self.eta_sampled
        out["gain"] = self.gain() if len(self.labels) >= 2 else {}
        return plain(out)  # infinite losses (diverged runs) and open bounds become None


def _labels_and_networks(networks: Any) -> tuple[tuple[str, ...], tuple[Network, ...]]:
    if isinstance(networks, Network):
        networks = [networks]
    if isinstance(networks, Mapping):
        labels, nets = tuple(str(k) for k in networks), tuple(networks.values())
    elif isinstance(networks, Sequence) and not isinstance(networks, str):
        nets = tuple(networks)
        labels = tuple(", ".join(map(str, n.norms)) or "none" if isinstance(n, Network) else "?" for n in nets)
    else:
        raise InvalidArgument("networks", networks, "a Network, a sequence of Networks or a mapping label -> Network")
    if not nets or not all(isinstance(n, Network) for n in nets):
        raise InvalidArgument("networks", networks, "one or more meanfield.Network objects")
    return labels, nets


def learning_rate_grid(networks: Any, widths: Sequence[int], etas: Sequence[float] | None = None, *,
                       samples: int = 32, steps: int = 100, seeds: Sequence[int] = (0,),
                       setup: str = "random_targets", progress: Callable[[Any], Any] | None = None
                       ) -> LearningRateGrid:
    """Loss after N full-batch steps of size eta on networks of width M, beside eta_max(M) = 2/lambda_max(M).

    For each network (e.g. without normalization and with batch norm in the last layer), width and
    seed, one network is drawn and trained with :func:`train` at every eta of the grid. The
    predicted boundary comes from :func:`max_learning_rate`; the exact lambda_max of every drawn
    network is recorded too.

    Args:
        networks: a mapping label -> Network, or a sequence of Networks (labelled by their norms).
        widths: base widths M.
        etas: absolute steps; default 15 values log-spaced from a quarter of the smallest to 16 times
            the largest predicted eta_max over the grid.
        samples: batch size T (>= 3 when a network has batch norm).
        steps: N, the number of steps per run.
        seeds: one drawn network (and target set) per seed.
        setup: :func:`train`'s set-up (``"random_targets"`` by default: from the drawn network toward
            random targets, so above 2/lambda_max the catapult shows).
        progress: optional wrapper for the iterator over runs (e.g. ``tqdm.tqdm``).

    Returns:
        A :class:`LearningRateGrid`; ``.records()`` lists every run, ``.gain()`` the step-size ratios.

    Example:
        >>> from meanfield import Network, BatchNorm
        >>> nets = {"none": Network(3, "relu", 2, 0), "bn last": Network(3, "relu", 2, 0, norms=[BatchNorm("last")])}
        >>> grid = learning_rate_grid(nets, widths=(16,), etas=(0.01, 0.1), samples=8, steps=5)
        >>> len(grid.records())
        4
    """
    labels, nets = _labels_and_networks(networks)
    if isinstance(widths, (int, np.integer)) or not isinstance(widths, Sequence) or not widths:
        raise InvalidArgument("widths", widths, "a non-empty sequence of widths M")
    widths = tuple(check_int(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths))
    if isinstance(seeds, (int, np.integer)) or not isinstance(seeds, Sequence) or not seeds:
        raise InvalidArgument("seeds", seeds, "a non-empty sequence of seeds")
    seeds = tuple(check_int(f"seeds[{i}]", s, minimum=0) for i, s in enumerate(seeds))
    samples = check_int("samples", samples, minimum=max(max(n.min_samples() for n in nets), 1))
    steps = check_int("steps", steps, minimum=1)
    setup = check_choice("setup", setup, SETUPS)

    predictions = [[max_learning_rate(n, M, samples) for M in widths] for n in nets]
    eta_pred = np.array([[p.eta_max for p in row] for row in predictions])
    eta_lead = np.array([[p.eta_max_leading for p in row] for row in predictions])
    kinds = tuple(tuple(p.kind for p in row) for row in predictions)
    bounds = np.array([[p.eta_max_bounds if p.eta_max_bounds is not None else (p.eta_max, p.eta_max)
                        for p in row] for row in predictions], dtype=float)
    if etas is None:
        lo, hi = float(np.min(eta_pred)) / 4, float(np.max(eta_pred)) * 16
        etas = tuple(float(e) for e in np.geomspace(lo, hi, 15))
    else:
        if isinstance(etas, (int, float)) or not isinstance(etas, Sequence) or not etas:
            raise InvalidArgument("etas", etas, "a non-empty sequence of positive steps")
        etas = tuple(sorted(check_real(f"etas[{i}]", e, minimum=0, strict_min=True, symbolic=False)
                            for i, e in enumerate(etas)))

    shape = (len(nets), len(widths), len(etas), len(seeds))
    initial, final, peak = np.empty(shape), np.empty(shape), np.empty(shape)
    lam = np.empty(shape[:2] + shape[3:])
    jobs = [(i, j, k, s) for i in range(len(nets)) for j in range(len(widths))
            for s in range(len(seeds)) for k in range(len(etas))]
    iterator = progress(jobs) if progress is not None else jobs
    for i, j, k, s in iterator:
        run = train(nets[i], widths[j], samples, seed=seeds[s], eta=etas[k], steps=steps, setup=setup,
                    final_lambda=False)
        initial[i, j, k, s], final[i, j, k, s], peak[i, j, k, s] = run.initial_loss, run.final_loss, run.peak_loss
        lam[i, j, s] = run.lambda_max_initial
    return LearningRateGrid(labels=labels, networks=nets, widths=widths, etas=etas, seeds=seeds, samples=samples,
                            steps=steps, setup=setup, initial_loss=initial, final_loss=final, peak_loss=peak,
                            lambda_sampled=lam, eta_predicted=eta_pred, eta_leading=eta_lead,
                            predicted_kind=kinds, eta_bounds=bounds)


def plot_learning_rate_grid(grid: LearningRateGrid, ax: Any = None, path: Any = None) -> Any:
    """Heatmaps of log10(loss after N steps / initial loss) over (M, eta), eta_max = 2/lambda_max(M) drawn on.

    One panel per network; each cell is the mean over seeds. Diverged runs (in any seed) are drawn
    in black; the colour scale spans all finite values down to 1e-12 (below that the bar's extended
    end says "converged"). Lines: the predicted eta_max(M) (finite width, solid;
    leading order, dotted; a band when the theory only bounds lambda_max); markers: 2 / lambda_max
    of the drawn networks.

    Args:
        grid: a :class:`LearningRateGrid`.
        ax: a matplotlib Axes, or a sequence of them (one per network); new figure when None.
        path: if given, the figure is saved there.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib
    from matplotlib.figure import Figure

    if not isinstance(grid, LearningRateGrid):
        raise InvalidArgument("grid", grid, "a LearningRateGrid from learning_rate_grid()")
    n = len(grid.labels)
    if ax is None:
        # a bare Figure (no pyplot): works headless and leaves no global figure state behind
        fig = Figure(figsize=(4.8 * n, 4.0))
        axes = list(fig.subplots(1, n, squeeze=False, sharey=True)[0])
    else:
        axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) != n:
            raise InvalidArgument("ax", f"{len(axes)} axes", f"{n} axes, one per network")
        fig = axes[0].figure

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log10(grid.final_loss / grid.initial_loss)  # (net, width, eta, seed); inf if diverged
    diverged = np.any(grid.diverged, axis=3)
    value = np.where(diverged, np.nan, np.mean(np.where(np.isfinite(ratio), ratio, 0.0), axis=3))
    finite = value[np.isfinite(value)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    # Converged runs reach rounding error (1e-30); below 1e-12 of the initial loss every run counts
    # as converged, and the colour bar says so (extend="min") rather than spending its range there.
    floor = -12.0
    extend = "min" if vmin < floor else "neither"
    vmin = max(vmin, floor)
    if vmin >= vmax:
        vmin, vmax = vmin - 1, vmax + 1
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="black")
    widths = np.asarray(grid.widths, dtype=float)
    etas = np.asarray(grid.etas, dtype=float)
    xe = _edges(widths)
    ye = _edges(etas)
    mesh = None
    for i, a in enumerate(axes):
        z = np.ma.masked_invalid(value[i].T)  # (eta, width)
        mesh = a.pcolormesh(xe, ye, z, cmap=cmap, vmin=vmin, vmax=vmax, shading="flat")
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.plot(widths, grid.eta_predicted[i], "w-", lw=2, label=r"$2/\lambda_{\max}$ (theory)")
        a.plot(widths, grid.eta_leading[i], "w:", lw=1.5, label="leading order")
        if grid.eta_bounds is not None and grid.predicted_kind and any(k != "prediction" for k in grid.predicted_kind[i]):
            lo, hi = grid.eta_bounds[i, :, 0], np.minimum(grid.eta_bounds[i, :, 1], ye[-1])
            a.fill_between(widths, lo, hi, color="white", alpha=0.25, label="theory bound")
        a.plot(widths, grid.eta_sampled[i], "o", color="tab:red", ms=5, label=r"$2/\lambda_{\max}$ sampled")
        a.set_xlim(xe[0], xe[-1])
        a.set_ylim(ye[0], ye[-1])
        a.set_title(grid.labels[i])
        a.set_xlabel("width M")
        if i == 0:
            a.set_ylabel(r"step $\eta$")
    axes[-1].legend(loc="lower left", fontsize=7, framealpha=0.6)
    if mesh is not None:
        bar = fig.colorbar(mesh, ax=axes, extend=extend)
        bar.set_label(rf"$\log_{{10}}$(loss after {grid.steps} steps / initial loss)"
                      + (f"; bottom: $\\leq 10^{{{floor:.0f}}}$" if extend == "min" else "")
                      + "; black: diverged")
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges on a log axis: geometric midpoints, extended by half a step at both ends."""
    if centres.size == 1:
        return np.array([centres[0] / 1.5, centres[0] * 1.5])
    logs = np.log(centres)
    mids = 0.5 * (logs[1:] + logs[:-1])
    first = logs[0] - (mids[0] - logs[0])
    last = logs[-1] + (logs[-1] - mids[-1])
    return np.exp(np.concatenate([[first], mids, [last]]))
