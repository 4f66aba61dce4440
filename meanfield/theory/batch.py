"""FIM statistics m, s, lambda_max on a user's own batch: ``predict(net, width, inputs=X)``.

With the T x T kernels of :mod:`meanfield.theory.kernels`, the expected dual Gram G = J J^T / T on the
batch is block-diagonal over the C outputs with C equal T x T blocks

    B = E G_kk = (1/T) sum_l (M_{l-1} H^l + O^l),   M_0 = d,

(H^l, O^l: the layer's qhat^{l-1} and 1 1^T pushed up through the backward maps; for a plain network
H^l = qhat^{l-1} o qtilde^l, O^l = qtilde^l), and with P the exact parameter count (layer 1 has d inputs)

    m = C tr(B) / P,   s = C E||G_kk||_F^2 / P,   lambda_max = the top eigenvalue of B,

where E||G_kk||_F^2 = ||B||_F^2 except with a full batch norm on the output, whose per-output Jacobian
(1/sigma)(Pi - b b^T / T) stays random: then E||J Y J||_F^2 / T^2, exact by the radial integrals of
:class:`meanfield.theory.kernels.RadialIntegrals` (on an isotropic batch this is the factor
r = (T-3)(T-1) / ((T-5)(T-2)) of :mod:`meanfield.theory.fisher`). The leading-order forms
drop the bias terms (O^l) and use P -> sum_{l<L} M_l M_{l-1}. On an isotropic batch
(X X^T / d = (q_1 - q_2) I + q_2 1 1^T, d = alpha_0 M) every number equals today's ``predict(net, M, T)``.

lambda_max is a prediction where the top eigenvalue of B is an outlier that clears the bulk: no
normalization on the output, kappa_2 > 0 and (lambda_1 - bulk) / bulk > BULK_SPREAD sqrt(C T / M), with
bulk = (tr B - lambda_1) / (T - 1) the mean of the other eigenvalues (on an isotropic batch exactly the
rule of :func:`meanfield.theory.statistics.lambda_kind`). Otherwise it is bounded: lo = lambda_1 (sharpened
for a full batch norm on the output by E[max_k lambda_max(G_kk)], Monte Carlo over the output unit's law),
hi = sqrt(P s). With a full batch norm in a hidden layer B itself is a Monte-Carlo estimate (fixed seed,
standard errors from disjoint groups); lo is then cross-fitted (:func:`cross_fitted_top`), because the top
eigenvalue of a noisy B is biased up where E G's top eigenvalue is degenerate (the bulk). Everything else is
exact: plain and layer-norm layers, centre-only batch norm, full batch norm on the output.

With a full batch norm on the output every output's block carries 1/sigma_k^2, sigma_k^2 its batch variance,
r^2 = T sigma_k^2 a weighted sum of chi^2_1's (weights the eigenvalues of Pi q^L Pi). Its relative spread
sqrt(E[1/r^4] / E[1/r^2]^2 - 1) is sqrt(2 / (T - 5)) on an isotropic batch and more on a real one, whose
spectrum is uneven (on 16 digits, 55% against 43%); the law is right-skewed, so means over a few networks
fall below m and s in most runs and far above in a few, and a test that reads their standard errors as
normal false-alarms low more often than its nominal rate (s needs E[1/sigma^8] for its spread). The note
of :func:`skew_note` says so in every such prediction; m and s remain the means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..spec.network import BatchNorm, Network
from .backend import Arithmetic, fmt
from .kernels import (MC_GROUPS, MC_SEED, Kernels, batch_gram, check_batch_size,
                      expected_max_output_eigenvalue, has_monte_carlo, max_output_rayleigh, mc_samples_for,
                      output_square_norm, propagate)
from .recursions import alpha_normaliser, network_alpha
from .statistics import BULK_SPREAD, statistics_latex

__all__ = ["predict_batch", "BatchFisherStats", "BatchLeading", "cross_fitted_top", "skew_note"]


@dataclass(frozen=True)
class BatchLeading:
    """Leading-order (large M) values on the batch: no bias terms, P -> sum_{l<L} M_l M_{l-1}.

    Example:
        >>> X = np.eye(4) * 2.0
        >>> round(float(predict_batch(Network(3, "relu", 2, 0), 4, X).leading.kappa1), 12)
        1.5
    """

    kappa1: float
    kappa2: float
    P: float
    m: float
    s: float
    lambda_max: float
    gram_diag: float
    gram_offdiag: float
    expected_gram: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in ("kappa1", "kappa2", "P", "m", "s", "lambda_max", "gram_diag",
                                                     "gram_offdiag")}


@dataclass(frozen=True)
class BatchFisherStats:
    """Predicted FIM statistics of ``network`` at width M on a given batch (finite-width expectations).

    Attributes:
        network, width, samples (T), input_dim (d, the first layer's fan-in).
        kernels: the :class:`~meanfield.theory.kernels.Kernels` behind it.
        alpha, P: sum_{l<L} alpha_l alpha_{l-1} and the exact parameter count (layer 1 with d inputs).
        kappa1, kappa2: T gram_diag / (alpha M) and T gram_offdiag / (alpha M) at leading order.
        m, s, lambda_max, eta_max: module docstring; eta_max = 2 / lambda_max.
        expected_gram: B, the T x T per-output block of E G (:meth:`full_expected_gram` gives the CT x CT one).
        gram_diag, gram_offdiag: the means of B's diagonal and off-diagonal entries.
        layers: per weight layer l, (l, its contribution to gram_diag, to gram_offdiag).
        leading: :class:`BatchLeading`.
        lambda_max_kind: "prediction" or "bound"; lambda_max_bounds: (lo, hi) when "bound".
        rank: C (T - lost), lost = 1 or 2 with a batch norm on the output (generic batch).
        standard_errors: Monte-Carlo standard errors of m, s, lambda_max, gram_diag, gram_offdiag (full batch
            norm), else None.
        notes: what the numbers mean and what is estimated.
        includes_1_over_M: empty (as :class:`~meanfield.theory.fisher.FisherStats` in mean field).

    Example:
        >>> X = np.hstack([np.eye(4) * 10.0, np.zeros((4, 96))])     # X X^T / d = I, d = M = 100
        >>> st = predict_batch(Network(2, "linear", 1, 0), 100, X)
        >>> float(st.gram_diag), float(st.gram_offdiag)   # ((M + 1) + (M + 1)) / T, as predict(net, 100, 4)
        (50.5, 0.5)
    """

    network: Network
    width: int
    samples: int
    input_dim: int
    kernels: Kernels = field(repr=False)
    alpha: float
    P: int
    kappa1: float
    kappa2: float
    m: float
    s: float
    lambda_max: float
    eta_max: float
    gram_diag: float
    gram_offdiag: float
    expected_gram: np.ndarray = field(repr=False)
    layers: tuple
    leading: BatchLeading
    lambda_max_kind: str
    lambda_max_bounds: tuple | None
    rank: int
    standard_errors: dict | None = None
    notes: tuple = ()
    includes_1_over_M: frozenset = frozenset()  # as FisherStats: no O(1/M) correction on a batch (mean field)

    def full_expected_gram(self) -> np.ndarray:
        """The CT x CT expected dual Gram: C copies of ``expected_gram`` on the diagonal (rows a = k T + t).

        Example:
            >>> predict_batch(Network(2, "relu", 2, 0, outputs=3), 8, np.eye(2) * 8**0.5).full_expected_gram().shape
            (6, 6)
        """
        return np.kron(np.eye(self.network.outputs), self.expected_gram)

    def to_dict(self, gram: bool = False) -> dict:
        """A JSON-able dict of the numbers; ``gram=True`` adds expected_gram as nested lists (T^2 numbers)."""
        d = {k: float(getattr(self, k)) for k in ("kappa1", "kappa2", "alpha", "m", "s", "lambda_max", "eta_max",
                                                  "gram_diag", "gram_offdiag")}
        d.update(P=int(self.P), rank=int(self.rank), width=int(self.width), samples=int(self.samples),
                 input_dim=int(self.input_dim), network=self.network.describe(), lambda_max_kind=self.lambda_max_kind,
                 lambda_max_bounds=None if self.lambda_max_bounds is None
                 else [float(v) for v in self.lambda_max_bounds],
                 layers=[{"layer": l, "gram_diag": float(a), "gram_offdiag": float(b)} for l, a, b in self.layers],
                 leading=self.leading.to_dict(), notes=list(self.notes),
                 standard_errors=None if self.standard_errors is None else
                 {k: float(v) for k, v in self.standard_errors.items()})
        if gram:
            d["expected_gram"] = self.expected_gram.tolist()
        return d

    def table(self) -> str:
        se = self.standard_errors or {}

        def cell(name, value):
            text = fmt(value)
            return f"{text} +- {se[name]:.2g}" if name in se else text

        rows = [("P (parameters)", fmt(self.P), fmt(self.leading.P)),
                ("kappa_1", cell("kappa1", self.kappa1), fmt(self.leading.kappa1)),
                ("kappa_2", cell("kappa2", self.kappa2), fmt(self.leading.kappa2)),
                ("m", cell("m", self.m), fmt(self.leading.m)), ("s", cell("s", self.s), fmt(self.leading.s))]
        if self.lambda_max_kind == "bound":
            lo, hi = self.lambda_max_bounds
            rows.append(("lambda_max", f"bound: {fmt(lo)} .. {fmt(hi)}", "not predicted"))
            rows.append(("eta_max", f"<= {fmt(self.eta_max)}", ""))
        else:
            rows.append(("lambda_max", cell("lambda_max", self.lambda_max), fmt(self.leading.lambda_max)))
            rows.append(("eta_max = 2/lambda_max", fmt(self.eta_max), fmt(2 / self.leading.lambda_max)))
        rows += [("gram_diag", cell("gram_diag", self.gram_diag), fmt(self.leading.gram_diag)),
                 ("gram_offdiag", cell("gram_offdiag", self.gram_offdiag), fmt(self.leading.gram_offdiag))]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(max(len(r[1]) for r in rows), len("finite width"))
        lines = [f"BatchFisherStats: {self.network.describe()}",
                 f"  width M={self.width}  samples T={self.samples}  input dim d={self.input_dim}  "
                 f"alpha={fmt(self.alpha)}", f"  {'':<{w0}}  {'finite width':>{w1}}  leading order"]
        lines += [f"  {k:<{w0}}  {a:>{w1}}  {b}" for k, a, b in rows]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_latex_(self) -> str:
        return statistics_latex(self, f"M={self.width},\\ T={self.samples},\\ d={self.input_dim}")


def _stats(net: Network, p: Any, sizes: tuple, T: int, width: int, outputs: int) -> dict:
    """The numbers of one propagation (the full Monte Carlo or one group of it)."""
    L = net.depth
    C = outputs
    B = sum((sizes[l - 1] * p.weights[l] + p.biases[l]) for l in range(1, L + 1)) / T
    B_lead = sum((sizes[l - 1] * p.weights[l]) for l in range(1, L + 1)) / T
    Y = sum((sizes[l - 1] * p.opened[l][0] + p.opened[l][1]) for l in range(1, L + 1))
    Y_lead = sum((sizes[l - 1] * p.opened[l][0]) for l in range(1, L + 1))
    P = sum(sizes[l] * (sizes[l - 1] + 1) for l in range(1, L + 1))
    P_lead = float(sum(sizes[l] * sizes[l - 1] for l in range(1, L))) if L > 1 else float(C * sizes[0])
    A = float(alpha_normaliser(net, Arithmetic("float")))
    out = {"P": P, "P_lead": P_lead}
    for key, G, Yk, PP in (("", B, Y, P), ("_lead", B_lead, Y_lead, P_lead)):
        gd = float(np.trace(G)) / T
        go = float((G.sum() - np.trace(G)) / (T * (T - 1))) if T > 1 else 0.0
        second = output_square_norm(p.units[L], Yk) / T**2
        eig = np.linalg.eigvalsh((G + G.T) / 2)
        out.update({"B" + key: G, "Y" + key: Yk, "gd" + key: gd, "go" + key: go, "m" + key: C * T * gd / PP,
                    "s" + key: C * second / PP, "lam" + key: float(eig[-1]), "eig" + key: eig})
    out["kappa1"] = T * out["gd_lead"] / (A * width)
    out["kappa2"] = T * out["go_lead"] / (A * width)
    out["layers"] = tuple((l, float(np.trace(t)) / T**2, float((t.sum() - np.trace(t)) / (T**2 * (T - 1)))
                           if T > 1 else 0.0) for l in range(1, L + 1)
                          for t in [sizes[l - 1] * p.weights[l] + p.biases[l]])
    return out


def cross_fitted_top(parts: list, key: str) -> tuple[float, float]:
    """(estimate, standard error) of v^T B v with v the top eigenvector of the other half's mean of B.

    Unbiased for v^T E[B] v <= lambda_max(E[B]) (v is independent of the half it is evaluated on), and equal
    to lambda_max(E[B]) where v falls in a degenerate top eigenspace; the plain top eigenvalue of a noisy B
    is biased up there by about 2 sqrt(T) times the entries' noise.

    Example:
        >>> parts = [{"B": np.diag([2.0, 2.0]) + e * np.array([[0, 1], [1, 0]])} for e in (0.1, -0.1, 0.2, -0.2)]
        >>> round(cross_fitted_top(parts, "B")[0], 12)    # the noise-free top eigenvalue, not 2.15
        2.0
    """
    half = len(parts) // 2
    first, second = parts[:half], parts[half:]
    estimates, variances = [], []
    for fit, use in ((first, second), (second, first)):
        mean = sum(pp[key] for pp in fit) / len(fit)
        v = np.linalg.eigh((mean + mean.T) / 2)[1][:, -1]
        vals = np.array([v @ pp[key] @ v for pp in use])
        estimates.append(vals.mean())
        variances.append(vals.var(ddof=1) / len(vals))
    return float(np.mean(estimates)), float(math.sqrt(sum(variances)) / 2)


def predict_batch(net: Network, width: int, inputs: Any = None, *, gram: Any = None, input_dim: int | None = None,
                  samples: Any = None, finite_width: str = "mean-field", mc_samples: int | None = None,
                  seed: int = MC_SEED) -> BatchFisherStats:
    """m = C tr(B) / P, s = C E||G_kk||_F^2 / P, lambda_max = top eigenvalue of B = E G_kk on the batch X.

    Args:
        net: the network (its input_q1/input_q2 are replaced by the batch).
        width: base width M (hidden widths alpha_l M; the first layer's fan-in is d).
        inputs: X, T x d. Or ``gram``: the T x T input Gram X X^T / d, with d = ``input_dim`` (default the
            network's input width alpha_0 M).
        samples: T, optional; when given it must equal the batch's T.
        finite_width: "mean-field" (finite-width expectations) or "leading" (the leading-order values in m,
            s, lambda_max).
        mc_samples, seed: the Monte Carlo of a full batch norm (module docstring of
            :mod:`meanfield.theory.kernels`).

    Returns:
        :class:`BatchFisherStats`.

    Raises:
        InvalidArgument: bad inputs or Gram, samples different from the batch's T, T too small for a batch
            norm (or above the Monte Carlo's limit), an unsupported ``finite_width``.

    Example:
        >>> X = np.random.default_rng(0).standard_normal((16, 64))
        >>> st = predict_batch(Network(3, "relu", 2, 0.1, outputs=4), 64, X)
        >>> st.expected_gram.shape, st.lambda_max_kind
        ((16, 16), 'prediction')
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield.Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net, "numeric parameters (predict on a batch is numeric; kernels() takes a "
                              "sympy Gram for symbolic networks)")
    width = check_int("width", width, minimum=1)
    net.widths(width)
    if finite_width not in ("mean-field", "leading"):
        raise InvalidArgument("finite_width", finite_width, "'mean-field' or 'leading' on a batch of inputs",
                              "the finite-width models are calibrated on isotropic inputs")
    K0, d = batch_gram(inputs, gram)
    if not isinstance(K0, np.ndarray):
        raise InvalidArgument("gram", "sympy Matrix", "numbers (predict on a batch is numeric; use kernels() "
                              "for symbolic Grams)")
    T = K0.shape[0]
    if samples is not None and check_int("samples", samples, minimum=1) != T:
        raise InvalidArgument("samples", samples, f"the batch's T = {T} (or omitted)")
    if d is None:
        d = net.widths(width)[0] if input_dim is None else check_int("input_dim", input_dim, minimum=1)
    elif input_dim is not None and check_int("input_dim", input_dim, minimum=1) != d:
        raise InvalidArgument("input_dim", input_dim, f"the inputs' dimension d = {d} (or omitted)")
    check_batch_size(net, T)
    mc_samples = mc_samples_for(T) if mc_samples is None else check_int("mc_samples", mc_samples,
                                                                         minimum=2 * MC_GROUPS)
    seed = check_int("seed", seed, minimum=0)
    sizes = (d, *net.widths(width)[1:])
    C = net.outputs
    lead = finite_width == "leading"
    p = propagate(net, K0, mc_samples=mc_samples, seed=seed)
    st = _stats(net, p, sizes, T, width, C)
    L = net.depth
    last = net.norm_at(L)
    full_bn_last = isinstance(last, BatchNorm) and not last.center_only
    key = "_lead" if lead else ""
    m, s, lam = st["m" + key], st["s" + key], st["lam" + key]
    # the outlier rule (module docstring), exactly lambda_kind's on an isotropic batch
    eig = st["eig" + key]
    kind = "bound"
    if last is None and st["kappa2"] > 1e-12 and T > 1:
        lam1 = eig[-1]
        bulk = (float(np.sum(eig)) - lam1) / (T - 1)
        spread = BULK_SPREAD * math.sqrt(C * T / width)
        if bulk <= 0 or (lam1 - bulk) / bulk > spread:
            kind = "prediction"
    notes = []
    errors = None
    parts = []
    if has_monte_carlo(net):
        parts = [_stats(net, propagate(net, K0, mc_samples=mc_samples, seed=seed, part=(g, MC_GROUPS), reuse=p),
                        sizes, T, width, C) for g in range(MC_GROUPS)]
        errors = {}
        for name, k in (("m", "m" + key), ("s", "s" + key), ("lambda_max", "lam" + key), ("gram_diag", "gd" + key),
                        ("gram_offdiag", "go" + key), ("kappa1", "kappa1"), ("kappa2", "kappa2")):
            vals = np.array([pp[k] for pp in parts])
            errors[name] = float(vals.std(ddof=1) / math.sqrt(MC_GROUPS))
    bounds = None
    if kind == "bound":
        lo = lam
        if parts:
            # the top eigenvalue of a noisy B is biased up where E G's top eigenvalue is degenerate (the bulk):
            # a Rayleigh quotient with the top eigenvector of one half of the groups, on the other half, is not
            lo, errors["lambda_max"] = cross_fitted_top(parts, "B" + key)
        if full_bn_last:
            top, top_error = expected_max_output_eigenvalue(p.units[L], st["Y" + key], C)
            if parts:  # Y is noisy: cross-fit the top eigenvectors (cross_fitted_top), one value per group
                half = len(parts) // 2
                first = [pp["Y" + key] for pp in parts[:half]]
                second = [pp["Y" + key] for pp in parts[half:]]
                values = [max_output_rayleigh(p.units[L], sum(fit) / len(fit), use, C)
                          for fit, use in ((second, first), (first, second))]
                top = float(np.mean([v.mean() for v in values]))
                spread = math.sqrt(sum(v.var(ddof=1) / len(v) for v in values)) / 2
                top_error = math.hypot(top_error, spread)
            if top / T > lo:
                lo = top / T
                errors = {} if errors is None else errors
                errors["lambda_max"] = top_error / T
                notes.append(f"the lower bound is E[max_k lambda_max(G_kk)] over the C outputs' random batch "
                             f"variances (Monte Carlo over {mc_samples} draws of the output unit, seed {seed}; "
                             "standard error in standard_errors)")
        hi = math.sqrt(st["P" if not lead else "P_lead"] * s)
        bounds = (lo, hi)
        lam = lo
        if last is not None:
            notes.append("lambda_max is not predicted with normalization on the output (the top eigenvalue is "
                         "the bulk edge): bounds only; lambda_max holds the lower bound, eta_max = 2/lo")
        elif not st["kappa2"] > 1e-12:
            notes.append("kappa_2 <= 0: no O(M) outlier, the top eigenvalue is the bulk edge: bounds only")
        else:
            notes.append(f"the outlier does not clear the bulk's finite-width spread ~{BULK_SPREAD:g} sqrt(C T / M) "
                         "at this width: bounds only")
    if not lead:
        notes.append("finite width: exact P, bias terms and T on this batch; O(1/M) fluctuation corrections not "
                     "included")
    if full_bn_last:
        notes.append(skew_note(p.units[L].radial.e0, p.units[L].radial.e4, T))
    if parts:
        notes.append(f"full batch norm in a hidden layer: its T-dimensional law by Monte Carlo ({mc_samples} samples, "
                     f"seed {seed}); +- are standard errors from {MC_GROUPS} disjoint groups")
    leading = BatchLeading(st["kappa1"], st["kappa2"], st["P_lead"], st["m_lead"], st["s_lead"], st["lam_lead"],
                           st["gd_lead"], st["go_lead"], st["B_lead"])
    lost = (1 if last.center_only else 2) if isinstance(last, BatchNorm) else 0
    rank = min(C * (T - lost), st["P"])
    k = _kernels_of(net, T, d, width, p, sizes)
    alpha = float(network_alpha(net, Arithmetic("float")))
    return BatchFisherStats(net, width, T, d, k, alpha, st["P"], st["kappa1"], st["kappa2"], m, s, lam, 2 / lam,
                            st["gd" + key], st["go" + key], st["B" + key], st["layers"], leading, kind, bounds, rank,
                            errors, tuple(notes))


def skew_note(e0: float, e4: float, T: int) -> str:
    """The note of a full batch norm on the output: the relative spread sqrt(E[1/r^4] / E[1/r^2]^2 - 1) of each
    output's 1/sigma_k^2 (r^2 = T sigma_k^2; e0, e4 = E[1/r^2], E[1/r^4]), against sqrt(2 / (T - 5)) on an
    isotropic batch (r^2 ~ v chi^2_{T-1}).

    Example:
        >>> skew_note(1 / 13, 1 / 143, 16)[:92]     # isotropic T = 16: E 1/chi^2_15 = 1/13, E 1/chi^4_15 = 1/143
        "full batch norm on the output: each output's block carries 1/sigma_k^2, relative spread 43% "
    """
    spread = math.sqrt(max(e4 / e0**2 - 1.0, 0.0))
    return (f"full batch norm on the output: each output's block carries 1/sigma_k^2, relative spread {spread:.0%} "
            f"per output on this batch ({math.sqrt(2 / (T - 5)):.0%} on an isotropic batch of this T) and "
            "right-skewed: means over few networks fall below m and s more often than above them, so a "
            "normal-approximation test on few seeds false-alarms low more often than its nominal rate (s's own "
            "spread needs E[1/sigma^8], finite only on a batch spanning more than 8 dimensions); m and s are "
            "means, not typical values")


def _kernels_of(net: Network, T: int, d: int, width: int, p: Any, sizes: tuple) -> Kernels:
    """The :class:`Kernels` record of a propagation already computed (predict reuses predict's pass)."""
    L = net.depth
    ntk_param = sum(float(net.sigma_w2[l - 1]) * p.weights[l] + float(net.sigma_b2[l - 1]) * p.biases[l]
                    for l in range(1, L + 1))
    ntk = sum(sizes[l - 1] * p.weights[l] + p.biases[l] for l in range(1, L + 1))
    notes = ("plain and layer-norm layers and centre-only batch norm: exact Gaussian integrals per pair; a full "
             "batch norm on the output: exact radial integrals",)
    if has_monte_carlo(net):
        notes += ("full batch norm in a hidden layer: Monte Carlo with a fixed seed (standard errors in the predict "
                  "result)",)
    return Kernels(net, T, d, width, p.q, p.law, p.qhat, p.qtilde, p.weights, p.biases, ntk_param, ntk, None, notes)
