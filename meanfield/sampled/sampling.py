"""Sampled networks: exact FIM statistics of finite random networks, one seed or many.

:func:`sample` draws a network and a batch (:func:`draw`), runs the forward pass with literal batch
norm and layer norm (:func:`forward`), builds the exact dual Gram G = J J^T / T layer by layer
(:func:`meanfield.sampled.gram.gram`, never the P x P FIM) and reports m = tr(G)/P, s = ||G||_F^2/P and
lambda_max (dense eigh for small CT, Lanczos above). :func:`sample_many` does it for many seeds on
all cores and returns means, standard errors and per-seed values.

The low-level pieces :func:`draw`, :func:`forward` and :func:`vjp` (exact gradients, batch norm
coupling included) are re-exported from :mod:`meanfield.sampled.backprop` for reuse (training, RMT).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backprop import DegenerateBatch, Draw, Gradients, Trace, check_batch, draw, forward, vjp
from ..parallel import LocalPool, local_workers
from ..errors import InvalidArgument, check_int
from ..spec.network import Network
from .gram import LayerGram, SampledSpectrum, check_memory, gram, gram_bytes, top_eigenvalue

__all__ = ["sample", "sample_many", "SampleSummary", "SampledSpectrum", "LayerGram", "DegenerateBatch",
           "Draw", "Trace", "Gradients", "draw", "forward", "vjp"]


def sample(net: Network, width: int, samples: int, seed: int = 0, *, eigenvalues: bool = False,
           gram: bool = False) -> SampledSpectrum:
    """m = tr(G)/P, s = ||G||_F^2/P, lambda_max(G) for one drawn network, G = J J^T / T exact.

    Args:
        net: the network spec (numeric parameters).
        width: base width M.
        samples: batch size T (>= ``net.min_samples()``).
        seed: numpy Generator seed of the draw (see :mod:`meanfield.sampled.backprop` for the draw order).
        eigenvalues: also return all CT eigenvalues of G (dense eigvalsh), descending.
        gram: also return G (CT x CT, index k*T + t).

    Returns:
        :class:`SampledSpectrum`.

    Raises:
        InvalidArgument: bad width/samples/seed, or a Gram that would not fit in memory (raised
            before allocating, with the size it needs).
        DegenerateBatch: a batch-normalized unit has zero batch variance.

    Example:
        >>> from meanfield import Network, BatchNorm
        >>> r = sample(Network(3, "relu", 2, 0, outputs=2), width=16, samples=4, seed=0)
        >>> r.P, round(r.m * r.P, 10) == round(r.gram_diag * 8, 10)
        (578, True)
        >>> sample(Network(2, "relu", 2, 0, norms=[BatchNorm(1)]), 8, 2)
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: samples=2 is not allowed: expected T >= 3 ...
    """
    start = time.perf_counter()
    sizes, T = check_batch(net, width, samples)
    seed = check_int("seed", seed, minimum=0)
    want_eigs = bool(eigenvalues)
    check_memory(gram_bytes(net, width, T, eigenvalues=want_eigs), "exact Gram", width, net=net, samples=T)
    d = draw(net, width, T, seed)
    tr = forward(net, d)
    with np.errstate(over="ignore", invalid="ignore"):
        g = _gram_fn(net, tr)
    G = g.matrix
    if not np.all(np.isfinite(G)):
        # the forward pass was finite (forward checks it): the backward signal grew beyond float64
        raise InvalidArgument("depth", net.depth, "a network whose sampled values fit in float64",
                              "the gradients (the Gram G = J J^T / T) overflow float64: they grow by about "
                              "sigma_w2 E[phi'(u)^2] per layer; use a smaller sigma_w2 or depth")
    C = net.outputs
    P = net.parameter_count(width)
    trace = float(np.trace(G))
    frob2 = float(np.einsum("ij,ij->", G, G))
    eigs = None
    if want_eigs:
        eigs = np.linalg.eigvalsh(G)[::-1].copy()
        lam, method = float(eigs[0]), "dense"
    else:
        lam, method = top_eigenvalue(G)
    alpha = float(net.alpha)
    M = int(width)

    def kappa(v):
        return None if v is None or alpha == 0 else T * v / (alpha * M)

    diag, off = trace / (C * T), None
    if T > 1:
        off = sum(v for v in g.layer_offdiag.values())
    layers = tuple(
        LayerGram(l, g.plan[l], sizes[l] * (sizes[l - 1] + 1), g.layer_diag[l], g.layer_offdiag[l],
                  kappa(g.layer_diag[l]), kappa(g.layer_offdiag[l]))
        for l in sorted(g.layer_diag))
    return SampledSpectrum(
        network=net, width=M, samples=T, seed=seed, P=P, m=trace / P, s=frob2 / P, lambda_max=lam,
        gram_diag=diag, gram_offdiag=off, alpha=alpha, kappa1=kappa(diag), kappa2=kappa(off),
        layers=layers, eigenvalues=eigs, gram=G if gram else None, lambda_max_method=method,
        seconds=time.perf_counter() - start)


_gram_fn = gram  # the keyword argument ``gram`` of sample() shadows the function inside it


# ------------------------------------------------------------------------------------------------
# many seeds
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SampleSummary:
    """Statistics over seeds: ``mean[name]``, ``sem[name]`` (standard error), ``values[name]`` (per seed).

    Names: P, m, s, lambda_max, gram_diag, gram_offdiag, kappa1, kappa2 and per layer
    ``gram_diag[l]``, ``gram_offdiag[l]``. The standard error is std (ddof=1) / sqrt(n); with one
    seed it is unknown and reported as inf (never NaN). Statistics undefined for this network
    (e.g. kappa's of a depth-1 net) are left out.
    """

    network: Network
    width: int
    samples: int
    seeds: tuple
    mean: dict
    sem: dict
    values: dict
    seconds: float = 0.0

    def __str__(self) -> str:
        keys = list(self.mean)
        w = max(len(k) for k in keys)
        lines = [f"SampleSummary: {self.network.describe()}",
                 f"  M={self.width}  T={self.samples}  {len(self.seeds)} seeds  ({self.seconds:.3g} s)",
                 f"  {'statistic':<{w}}  {'mean':>14}  {'std. error':>12}"]
        lines += [f"  {k:<{w}}  {self.mean[k]:>14.6g}  {self.sem[k]:>12.3g}" for k in keys]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_latex_(self) -> str:
        rows = " \\\\ ".join(f"\\text{{{k.replace('_', ' ')}}} & {self.mean[k]:.6g} \\pm {self.sem[k]:.2g}"
                             for k in self.mean)
        return (f"$M={self.width},\\ T={self.samples},\\ n={len(self.seeds)}\\quad"
                f"\\begin{{array}}{{lr}} {rows} \\end{{array}}$")


def _one(index: int, args: tuple) -> dict:
    net, width, samples, seed = args
    return sample(net, width, samples, seed).as_dict()


def _seed_tuple(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        n = check_int("seeds", seeds, minimum=1)
        return tuple(range(n))
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, range, np.ndarray)):
        raise InvalidArgument("seeds", seeds, "a count N (seeds 0..N-1) or a sequence of seeds")
    out = tuple(check_int("seeds", s, minimum=0) for s in seeds)
    if not out:
        raise InvalidArgument("seeds", seeds, "at least one seed")
    if len(set(out)) < len(out):
        # a seed names one network: a repeat would count that network twice in the means and the standard
        # errors (which assume independent draws)
        seen: set[int] = set()
        repeated = next(s for s in out if s in seen or seen.add(s))
        raise InvalidArgument("seeds", list(out) if len(out) <= 20 else f"{len(out)} seeds", "distinct seeds",
                              f"seed {repeated} appears more than once")
    return out


def sample_many(net: Network, width: int, samples: int, seeds: Any, *, processes: int | None = None,
                progress: bool | None = None) -> SampleSummary:
    """mean, standard error and per-seed values of :func:`sample` over many seeds, on all cores.

    Args:
        net, width, samples: as for :func:`sample`.
        seeds: an int N (seeds 0..N-1) or a sequence of seeds.
        processes: worker processes (default and at most: the cores and the seeds); 1 runs in
            this process.
        progress: True/False forces the tqdm progress bar on/off; None shows it on a terminal once a
            run has taken more than 2 s.

    Example:
        >>> from meanfield import Network
        >>> res = sample_many(Network(2, "relu", 2, 0), 8, 4, seeds=3, processes=1)
        >>> res.seeds, len(res.values["m"]), res.sem["m"] > 0
        ((0, 1, 2), 3, True)
    """
    start = time.perf_counter()
    check_batch(net, width, samples)
    seed_list = _seed_tuple(seeds)
    if processes is None:
        processes = len(seed_list)
    processes = local_workers(check_int("processes", processes, minimum=1), len(seed_list))
    check_memory(processes * gram_bytes(net, width, samples), "exact Gram (one per worker process)", width,
                 net=net, samples=samples, processes=processes)
    tasks = [(net, width, samples, s) for s in seed_list]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=f"sample M={width} T={samples}", unit="seed", leave=False,
               disable=(not progress) if progress is not None else None, delay=0 if progress else 2.0)
    results: list[dict | None] = [None] * len(tasks)
    try:
        if processes == 1 or len(tasks) == 1:
            for i, task in enumerate(tasks):
                results[i] = _one(i, task)
                bar.update()
        else:
            pool = LocalPool(_one, processes)
            try:
                for i, task, result in pool.run((i, task) for i, task in enumerate(tasks)):
                    results[i] = result
                    bar.update()
            except KeyboardInterrupt:
                pool.close(abort=True)  # workers ignore Ctrl-C: stop them now rather than finish their seeds
                raise
            finally:
                pool.close()
    finally:
        bar.close()
    keys = [k for k in results[0] if all(r[k] is not None for r in results)]
    values = {k: np.array([r[k] for r in results], dtype=float) for k in keys}
    n = len(seed_list)
    mean = {k: float(v.mean()) for k, v in values.items()}
    sem = {k: (float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf) for k, v in values.items()}
    return SampleSummary(net, int(width), int(samples), seed_list, mean, sem, values,
                         time.perf_counter() - start)
