"""Sampled networks: exact FIM statistics of finite random networks, one seed or many.

:func:`sample` draws a network and a batch (:func:`draw`), runs the forward pass with literal batch
norm and layer norm (:func:`forward`), builds the exact dual Gram G = J J^T / T layer by layer
(:func:`meanfield.sampled.gram.gram`, never the P x P FIM) and reports m = tr(G)/P, s = ||G||_F^2/P and
lambda_max (dense eigh for small CT, Lanczos above). Below a hidden batch norm, where those blocks cost
about T M^3, large sizes take the matrix-free route instead (:mod:`meanfield.sampled.matfree`: lambda_max
by Lanczos on products G v, m and s unbiased estimates with standard errors; ``exact_s=True`` keeps
everything exact). :func:`sample_many` does it for many seeds on
all cores and returns means, standard errors and per-seed values.

The low-level pieces :func:`draw`, :func:`forward` and :func:`vjp` (exact gradients, batch norm
coupling included) are re-exported from :mod:`meanfield.sampled.backprop` for reuse (training, RMT).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backprop import DegenerateBatch, Draw, Gradients, Trace, check_batch, dphi, draw, forward, vjp
from ..parallel import LocalPool, local_workers
from ..errors import InvalidArgument, check_choice, check_int
from ..integrals.numeric import fast_second
from ..spec.inputs import check_inputs
from ..spec.network import Network
from .gram import LayerGram, SampledSpectrum, check_memory, gram, gram_bytes, gram_plan, top_eigenvalue, top_hidden_bn
from .matfree import choose_route, matrix_free_bytes, matrix_free_gram

__all__ = ["sample", "sample_many", "controls", "SampleSummary", "SampledSpectrum", "LayerGram", "DegenerateBatch",
           "Draw", "Trace", "Gradients", "draw", "forward", "vjp"]


def sample(net: Network, width: int, samples: int | None = None, seed: int = 0, *, inputs: Any = None,
           eigenvalues: bool = False, gram: bool = False, route: str = "auto",
           exact_s: bool = False) -> SampledSpectrum:
    """m = tr(G)/P, s = ||G||_F^2/P, lambda_max(G) for one drawn network, G = J J^T / T exact.

    Args:
        net: the network spec (numeric parameters).
        width: base width M.
        samples: batch size T (>= ``net.min_samples()``); may be None when ``inputs`` is given, and must
            otherwise equal its T.
        seed: numpy Generator seed of the draw (see :mod:`meanfield.sampled.backprop` for the draw order).
        inputs: a real batch X of shape (T, d) (:mod:`meanfield.spec.inputs`) instead of drawn Gaussian
            inputs: the first layer has fan-in d, and P counts d inputs; ``predict(net, M, inputs=X)`` is
            the theory of the same batch.
        eigenvalues: also return all CT eigenvalues of G (dense eigvalsh), descending.
        gram: also return G (CT x CT, index k*T + t).
        route: 'exact' (G assembled layer by layer), 'matrix-free' (below a hidden batch norm only
            products with G: lambda_max by Lanczos, m and s unbiased estimates with standard errors
            m_se, s_se; :mod:`meanfield.sampled.matfree`) or 'auto': matrix-free where the exact blocks
            would cost far more (:func:`meanfield.sampled.matfree.choose_route`). ``eigenvalues`` and
            ``gram`` need G, so they take the exact route.
        exact_s: force the exact route (m and s exact, m_se = s_se = 0), whatever the cost.

    Returns:
        :class:`SampledSpectrum` (``gram_method`` says which route was taken; ``controls`` holds the
        network's control variates, :func:`controls`).

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
    sizes, T = check_batch(net, width, samples, inputs)
    seed = check_int("seed", seed, minimum=0)
    want_eigs = bool(eigenvalues)
    route = check_choice("route", route, ("auto", "exact", "matrix-free"))
    if exact_s or want_eigs or gram or top_hidden_bn(net) == 0:
        route = "exact"  # G itself is asked for, or nothing lies below a hidden batch norm
    elif route == "auto":
        route = choose_route(net, width, T)
    if route == "exact":
        check_memory(gram_bytes(net, width, T, eigenvalues=want_eigs), "exact Gram", width, net=net, samples=T)
    else:
        check_memory(matrix_free_bytes(net, width, T), "matrix-free Gram products", width, net=net, samples=T)
    d = draw(net, width, T, seed, inputs)
    tr = forward(net, d)
    C = net.outputs
    P = sum(sizes[l] * (sizes[l - 1] + 1) for l in range(1, net.depth + 1))  # d inputs on a given batch
    eigs, G, m_se, s_se = None, None, 0.0, 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        if route == "exact":
            g = _gram_fn(net, tr)
            G = g.matrix
            finite = np.all(np.isfinite(G))
        else:
            try:
                g = matrix_free_gram(net, tr, seed=seed)
                finite = np.all(np.isfinite([g.trace, g.frob2, g.lambda_max, g.trace_se, g.frob2_se]))
            except np.linalg.LinAlgError:  # the Lanczos projection met an overflowed product
                finite = False
    if not finite:
        # the forward pass was finite (forward checks it): the backward signal grew beyond float64
        raise InvalidArgument("depth", net.depth, "a network whose sampled values fit in float64",
                              "the gradients (the Gram G = J J^T / T) overflow float64: they grow by about "
                              "sigma_w2 E[phi'(u)^2] per layer; use a smaller sigma_w2 or depth")
    if route == "exact":
        trace = float(np.trace(G))
        frob2 = float(np.einsum("ij,ij->", G, G))
        if want_eigs:
            eigs = np.linalg.eigvalsh(G)[::-1].copy()
            lam, method = float(eigs[0]), "dense"
        else:
            # per-output start vectors find a plain net's C outliers; an output norm removes them
            lam, method = top_eigenvalue(G, outputs=C if net.norm_at(net.depth) is None else 1)
        plan = g.plan
    else:
        trace, frob2, lam, method = g.trace, g.frob2, g.lambda_max, "lanczos"
        m_se, s_se = g.trace_se / P, g.frob2_se / P
        plan = {l: ("matrix-free" if l <= top_hidden_bn(net) else kind) for l, kind in gram_plan(net).items()}
    alpha = float(net.alpha)
    M = int(width)

    def kappa(v):
        return None if v is None or alpha == 0 else T * v / (alpha * M)

    diag, off = trace / (C * T), None
    if T > 1:
        off = sum(v for v in g.layer_offdiag.values())
    layers = tuple(
        LayerGram(l, plan[l], sizes[l] * (sizes[l - 1] + 1), g.layer_diag[l], g.layer_offdiag[l],
                  kappa(g.layer_diag[l]), kappa(g.layer_offdiag[l]))
        for l in sorted(g.layer_diag))
    return SampledSpectrum(
        network=net, width=M, samples=T, seed=seed, P=P, m=trace / P, s=frob2 / P, lambda_max=lam,
        gram_diag=diag, gram_offdiag=off, alpha=alpha, kappa1=kappa(diag), kappa2=kappa(off),
        layers=layers, eigenvalues=eigs, gram=G if gram else None, lambda_max_method=method,
        seconds=time.perf_counter() - start, m_se=m_se, s_se=s_se, gram_method=route,
        controls=controls(net, d, tr, drawn_inputs=inputs is None))


def controls(net: Network, d: Draw, tr: Trace, *, drawn_inputs: bool = True) -> dict[str, float]:
    """c = realized / exact conditional expectation - 1 for each control of one sampled network: E c = 0 exactly.

    Control variates for the sampled statistics (cheap: no Gram): quantities of the same network whose
    expectation is known exactly, so that regressing m, s, the kappa's on them removes part of the
    per-network noise without bias. Each is a ratio whose denominator is fixed by what lies below it,
    so it has conditional mean 0 given the layers below (a martingale difference, mean 0 at any width):

    - ``weight[l]`` = |W^l|_F^2 / (sigma_w2 M_l) - 1 (|W^l|_F^2 sigma-scaled is chi^2 with M_l M_{l-1} dof);
    - ``bias[l]`` = |b^l|^2 / (sigma_b2 M_l) - 1 (layers with sigma_b2 > 0);
    - ``input_norm`` = mean_t |x_t|^2 / (d q1) - 1 and ``input_offdiag`` = mean_{t != s} x_t.x_s / (d q1) - q2/q1
      (drawn inputs only: a given batch is fixed);
    - ``forward[l]`` = mean_t |u^l_t|^2 / (M_l qhat_t) - 1, qhat_t = sigma_w2 |h^{l-1}_t|^2 / M_{l-1} + sigma_b2:
      given h^{l-1}, the pre-activations u^l_{t,i} are independent N(0, qhat_t) over the units i (W^l and b^l
      are drawn independently of everything below), so the ratio is chi^2_{M_l}/M_l - 1 conditionally;
    - ``forward_offdiag[l]`` = mean_{t != s} (u^l_t.u^l_s - M_l qhat_ts) / (M_l mean_t qhat_t), qhat_ts =
      sigma_w2 h_t.h_s / M_{l-1} + sigma_b2 (T > 1);
    - ``backward[l]`` (l >= 2) = sum_{k,i} (W^l_ki)^2 a_i / (sigma_w2 M_l / M_{l-1} sum_i a_i) - 1 with
      a_i = mean_t phi'(ũ^{l-1}_{t,i})^2: the squared weights into layer l seen through the derivatives
      below, the factor the backward signal picks up (W^l is independent of ũ^{l-1}).

    The realized kernel of a layer is not used against its leading-order mean (that is only known to
    O(1/M)): every denominator is the exact conditional expectation.

    Args:
        net: the network; d: its draw; tr: its forward pass.
        drawn_inputs: False for a given batch (no input controls).

    Returns:
        name -> value (floats; a control whose denominator vanishes is left out).

    Example:
        >>> from meanfield import Network
        >>> net = Network(2, "relu", 2, 0.1)
        >>> dr = draw(net, 32, 4, seed=0)
        >>> c = controls(net, dr, forward(net, dr))
        >>> sorted(c)[:4], all(abs(v) < 1 for v in c.values())
        (['backward[2]', 'bias[1]', 'bias[2]', 'forward[1]'], True)
    """
    out: dict[str, float] = {}
    L = net.depth
    T = tr.inputs.shape[0]
    for l in range(1, L + 1):
        W, b = d.weights[l - 1], d.biases[l - 1]
        Ml, fan_in = W.shape
        sw2, sb2 = float(net.sigma_w2[l - 1]), float(net.sigma_b2[l - 1])
        if sw2 > 0:
            out[f"weight[{l}]"] = float(np.einsum("ij,ij->", W, W)) / (sw2 * Ml) - 1.0
        if sb2 > 0:
            out[f"bias[{l}]"] = float(b @ b) / (sb2 * Ml) - 1.0
        h = tr.hidden(l - 1)
        u = tr.pre[l - 1]
        k = sw2 * (h @ h.T) / fan_in + sb2  # the exact conditional covariance of u^l over the samples
        diag = np.diag(k)
        if np.all(diag > 0):
            out[f"forward[{l}]"] = float(np.mean(np.einsum("ti,ti->t", u, u) / (Ml * diag))) - 1.0
            if T > 1:
                off = ~np.eye(T, dtype=bool)
                realized = (u @ u.T)[off]
                out[f"forward_offdiag[{l}]"] = float(np.mean(realized - Ml * k[off]) / (Ml * np.mean(diag)))
            if l < L and net.norm_at(l) is None:
                # h^l = phi(u^l) with u^l_{t,i} ~ N(0, qhat_t) given h^{l-1}: E|h^l_t|^2 = M_l E phi(sqrt(qhat_t) z)^2
                expected = fast_second(net.phi(l), diag)
                if np.all(np.isfinite(expected)) and np.all(expected > 0):
                    post = tr.post[l - 1]
                    out[f"post[{l}]"] = float(np.mean(np.einsum("ti,ti->t", post, post) / (Ml * expected))) - 1.0
        if l >= 2 and sw2 > 0:
            a = np.mean(dphi(net, l - 1, tr.normalized[l - 2]) ** 2, axis=0)
            total = float(a.sum())
            if total > 0:
                out[f"backward[{l}]"] = float(np.einsum("ki,i->", W * W, a)) / (sw2 * Ml / fan_in * total) - 1.0
    if drawn_inputs:
        x = tr.inputs
        dim = x.shape[1]
        q1, q2 = float(net.input_q1), float(net.input_q2)
        gram = x @ x.T
        out["input_norm"] = float(np.trace(gram)) / (T * dim * q1) - 1.0
        if T > 1:
            out["input_offdiag"] = (float(gram.sum() - np.trace(gram)) / (T * (T - 1) * dim * q1)) - q2 / q1
    return out


_gram_fn = gram  # the keyword argument ``gram`` of sample() shadows the function inside it


# ------------------------------------------------------------------------------------------------
# many seeds
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SampleSummary:
    """Statistics over seeds: ``mean[name]``, ``sem[name]`` (standard error), ``values[name]`` (per seed).

    Names: P, m, s, lambda_max, gram_diag, gram_offdiag, kappa1, kappa2 and per layer
    ``gram_diag[l]``, ``gram_offdiag[l]``. ``controls[name]`` holds the per-seed control variates
    (:func:`controls`, known mean 0) that every seed has. The standard error is std (ddof=1) / sqrt(n); with one
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
    controls: dict = field(default_factory=dict, repr=False)

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
    net, width, samples, seed, inputs, route = args
    r = sample(net, width, samples, seed, inputs=inputs, route=route)
    return {**r.as_dict(), _CONTROLS: r.controls}


_CONTROLS = "__controls__"  # the key of one seed's control variates in a worker's result


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


def sample_many(net: Network, width: int, samples: int | None = None, seeds: Any = None, *, inputs: Any = None,
                processes: int | None = None, progress: bool | None = None, route: str = "auto") -> SampleSummary:
    """mean, standard error and per-seed values of :func:`sample` over many seeds, on all cores.

    Args:
        net, width, samples, inputs: as for :func:`sample` (every seed's network sees the same batch X).
        seeds: an int N (seeds 0..N-1) or a sequence of seeds (required).
        processes: worker processes (default and at most: the cores and the seeds); 1 runs in
            this process.
        progress: True/False forces the tqdm progress bar on/off; None shows it on a terminal once a
            run has taken more than 2 s.
        route: as for :func:`sample` ('exact' keeps m and s exact below a hidden batch norm).

    Example:
        >>> from meanfield import Network
        >>> res = sample_many(Network(2, "relu", 2, 0), 8, 4, seeds=3, processes=1)
        >>> res.seeds, len(res.values["m"]), res.sem["m"] > 0
        ((0, 1, 2), 3, True)
    """
    start = time.perf_counter()
    _, samples = check_batch(net, width, samples, inputs)
    if seeds is None:
        raise InvalidArgument("seeds", seeds, "a count N (seeds 0..N-1) or a sequence of seeds")
    seed_list = _seed_tuple(seeds)
    if processes is None:
        processes = len(seed_list)
    processes = local_workers(check_int("processes", processes, minimum=1), len(seed_list))
    check_memory(processes * gram_bytes(net, width, samples), "exact Gram (one per worker process)", width,
                 net=net, samples=samples, processes=processes)
    batch = None if inputs is None else check_inputs(inputs)
    route = check_choice("route", route, ("auto", "exact", "matrix-free"))
    tasks = [(net, width, samples, s, batch, route) for s in seed_list]
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
    per_seed_controls = [r.pop(_CONTROLS) for r in results]
    control_values = {k: np.array([c[k] for c in per_seed_controls], dtype=float) for k in per_seed_controls[0]
                      if all(k in c for c in per_seed_controls)}
    keys = [k for k in results[0] if all(r[k] is not None for r in results)]
    values = {k: np.array([r[k] for r in results], dtype=float) for k in keys}
    n = len(seed_list)
    mean = {k: float(v.mean()) for k, v in values.items()}
    sem = {k: (float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf) for k, v in values.items()}
    return SampleSummary(net, int(width), int(samples), seed_list, mean, sem, values,
                         time.perf_counter() - start, control_values)
