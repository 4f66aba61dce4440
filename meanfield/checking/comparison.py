"""The random-matrix prediction against sampled networks: per-cell records and their figure.

:func:`rmt_records` puts, for each (M, T) cell, the leading-order, finite-width mean-field and
random-matrix values of lambda_max and s beside the sampled means (with standard errors);
:func:`plot_rmt_comparison` draws predicted / sampled against T/M, one panel per network.
"""

from __future__ import annotations

from typing import Any

from ..finite.model import finite_width_stats
from ..sampled.sampling import sample_many
from ..spec.network import BatchNorm, Network
from ..theory.fisher import predict

__all__ = ["rmt_records", "plot_rmt_comparison"]


def rmt_records(net: Network, cells: Any, seeds: Any = 8) -> list[dict]:
    """One record per (M, T): leading-order, finite-width mean-field and RMT predictions, and sampled mean +- sem.

    Args:
        net: the network.
        cells: iterable of (width, samples).
        seeds: an int N (seeds 0..N-1) or a sequence of seeds for the sampled means.

    Returns:
        list of dicts with keys network, width, samples, lead, meanfield, rmt, sampled, sem, s_lead, s_rmt,
        s_sampled, s_sem, err_lead, err_rmt (relative errors of lambda_max vs the sampled mean).

    Example:
        >>> recs = rmt_records(Network(2, "relu", 2, 0, norms=[BatchNorm("last", center_only=True)]),
        ...                    [(16, 8)], seeds=2)   # doctest: +SKIP
    """
    out = []
    for M, T in cells:
        base = predict(net, M, T)
        rm = finite_width_stats(net, M, T, base)
        sm = sample_many(net, M, T, seeds, processes=1, progress=False)
        lam_s, sem = float(sm.mean["lambda_max"]), float(sm.sem["lambda_max"])
        lead = float(base.leading.lambda_max)
        if isinstance(net.norm_at(net.depth), BatchNorm):
            lead = float(base.leading.gram_diag - base.leading.gram_offdiag)
            if not net.norm_at(net.depth).center_only:
                lead = float(base.lambda_max)  # the mean-field value with the chi-square maximum
        out.append(dict(network=net.describe(), width=M, samples=T, lead=lead, meanfield=float(base.lambda_max),
                        rmt=rm["lambda_max"], sampled=lam_s, sem=sem, s_lead=float(base.leading.s),
                        s_meanfield=float(base.s), s_rmt=rm["s"], s_sampled=float(sm.mean["s"]),
                        s_sem=float(sm.sem["s"]), err_lead=lead / lam_s - 1.0, err_rmt=rm["lambda_max"] / lam_s - 1.0))
    return out


def plot_rmt_comparison(records: list, path: Any) -> Any:
    """Figure: lambda_max / sampled mean against T/M, leading order vs RMT, one panel per network.

    Args:
        records: output of :func:`rmt_records` (possibly concatenated over networks).
        path: where to save (png/pdf/svg by suffix).

    Returns:
        the path.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = sorted({r["network"] for r in records})
    fig, axes = plt.subplots(1, len(nets), figsize=(4.2 * len(nets), 3.4), squeeze=False)
    for ax, name in zip(axes[0], nets):
        rs = [r for r in records if r["network"] == name]
        for M in sorted({r["width"] for r in rs}):
            sub = sorted((r for r in rs if r["width"] == M), key=lambda r: r["samples"] / r["width"])
            x = [r["samples"] / M for r in sub]
            ax.plot(x, [r["lead"] / r["sampled"] for r in sub], "o--", ms=3, label=f"leading M={M}")
            ax.errorbar(x, [r["rmt"] / r["sampled"] for r in sub],
                        yerr=[r.get("sem", 0.0) * r["rmt"] / r["sampled"] ** 2 for r in sub], fmt="s-", ms=3,
                        capsize=2, label=f"RMT M={M} (bars: sampled sem)")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhspan(0.95, 1.05, color="0.9")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("T / M")
        ax.set_ylabel("predicted / sampled lambda_max")
        ax.set_title(name, fontsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
