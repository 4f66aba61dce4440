"""Tables of I_phi[q1, q2] for smooth activations without a closed form: built once, cached in memory and on disk.

    I_phi[q, c q] ~ sum_jk C_jk T_j(x) T_k(y)   on panels in (log2 q, c),  x, y the local coordinates

The quadrature of :mod:`.numeric` (Mehler series / conditional quadrature) costs tens of
microseconds a pair; a table turns that into one small bilinear form (14 x 20 Chebyshev
coefficients). Panels:

* q: factors of 2, log2 q in [i, i + 1) for i = -10 .. 9 (q from 1/1024 to 1024), each built when
  first needed by a large call (:data:`BUILD_FROM`) from ~16000 conditional-quadrature pairs;
* c: [0, 1/2], then [1 - 2^-j, 1 - 2^-(j+1)] for j = 1 .. 29, and [1 - 2^-30, 1], mirrored for c < 0.
  I(q, c) is analytic for |c| < 1 but not at c = +-1 (Mehler's series, whose coefficients decay
  only like exp(-a sqrt k) for phi with complex poles, has radius 1), so the panels shrink
  geometrically toward +-1: each ends half its own width from the singularity, outside its
  Bernstein ellipse of parameter 3 + 2 sqrt 2 ~ 5.8, and degree 19 leaves ~5.8^-20 ~ 5e-16 of the
  panel's size. In log2 q the nearest singularity (Re q = 0) is pi / (2 ln 2) ~ 2.3 off the real
  axis, a panel's half width 1/2: parameter ~9.2, and degree 13 leaves ~3e-14.

Certification, per q-panel and c-panel: the interpolant is compared with the quadrature halfway
between nodes in both directions (and the last Chebyshev coefficients are read); a c-panel is used
only where both are below ``TOL`` = 1e-13 of the largest |I| at its q-nodes (Cauchy-Schwarz:
E[phi(u)^2]), and a value only where it is certified to ``REL`` = 1e-12 relative with a safety
factor of 4 (|I| REL >= 4 x the measured error: near a zero of I the quadrature answers). Measured
errors are ~1e-14 of E[phi^2] for the catalogue's smooth entries and their derivatives; pairs
outside the q range, in a panel not built or not certified, go to the quadrature, which stays the
oracle (``fast_cross(..., use_tables=False)``). E[phi^2](q) is the table's c = 1 edge.

Built once: a q-panel built from the library's own quadrature is also written to a cache folder
(``$MEANFIELD_CACHE``, else ``$XDG_CACHE_HOME/meanfield``, else ``~/.cache/meanfield``;
``MEANFIELD_CACHE=off`` turns it off), one ``.npz`` per activation and panel, named by a digest of the
activation's expression and of the source of this module and of :mod:`.numeric` (so a changed rule
never reads an old table). Later processes, pool workers included, read it instead of building it
(a few seconds per panel); a file that cannot be read or written is ignored and the panel is built.

The module holds no quadrature of its own: :mod:`.numeric` hands its rule in (``oracle``), so
this module imports nothing from it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sympy

from ..spec.activations import Activation

__all__ = ["TOL", "REL", "SAFETY", "C_SMALL", "BUILD_FROM", "Q_PANELS", "CrossTable", "cross_table", "table_cross",
           "table_second", "table_stats", "clear_tables", "cache_folder"]

TOL = 1e-13
#: relative accuracy a table value must be certified to; below it the quadrature answers. The
#: certificate asks |I| REL >= SAFETY x the panel's measured error (measured at a few points per
#: panel, so it can miss the worst one by a small factor)
REL = 1e-12
SAFETY = 4.0
#: Mehler terms a_k(q)^2 c^k (k < K) summed instead of the 2-D table where |c| <= C_SMALL: there
#: the table's absolute error is large next to I when I vanishes at c = 0 (odd phi), the series's
#: is relative; its remainder is at most |c|^K E[phi^2] (all terms >= 0 at c = 1)
_K = 16
C_SMALL = 0.125
#: pairs in one call that make a q-panel worth building (its build costs ~20000 quadrature pairs; a
#: call that large is usually one of many, as in a phase diagram)
BUILD_FROM = 8192
Q_PANELS = (-10, 10)  # log2 q panels [i, i + 1) for i in range(*Q_PANELS)
_DQ = 14  # Chebyshev-Lobatto nodes per q-panel (degree 13)
_DC = 20  # per c-panel (degree 19)
_J = 30  # c-panels per side: [0, 1/2], [1 - 2^-j, 1 - 2^-(j+1)] (j = 1..J-1), [1 - 2^-J, 1]


def _lobatto(n: int) -> np.ndarray:
    """Chebyshev-Lobatto points cos(pi j / (n - 1)) on [-1, 1], ascending."""
    return -np.cos(np.pi * np.arange(n) / (n - 1))


def _values_to_coefficients(n: int) -> np.ndarray:
    """M with c = M f: Chebyshev coefficients of the interpolant through f at :func:`_lobatto` points."""
    x = _lobatto(n)
    k = np.arange(n)
    t = np.cos(np.outer(k, np.arccos(np.clip(x, -1, 1))))  # T_k(x_j)
    w = np.full(n, 2.0 / (n - 1))
    w[[0, -1]] /= 2
    m = t * w
    m[[0, -1]] /= 2
    return m


_MQ, _MC = _values_to_coefficients(_DQ), _values_to_coefficients(_DC)


def _basis(x: np.ndarray, n: int) -> np.ndarray:
    """T_0 .. T_{n-1} at x (rows), by the three-term recurrence."""
    return _basis_rows(x, n).T


def _basis_rows(x: np.ndarray, n: int) -> np.ndarray:
    """T_k(x) as row k (contiguous rows: the recurrence streams through memory)."""
    out = np.empty((n, x.size))
    out[0] = 1.0
    out[1] = x
    two_x = 2 * x
    for k in range(2, n):
        np.multiply(two_x, out[k - 1], out=out[k])
        out[k] -= out[k - 2]
    return out


def _c_edges() -> np.ndarray:
    """The c-panel edges on [0, 1] (mirrored for c < 0)."""
    return np.concatenate([[0.0], 1 - 2.0 ** -np.arange(1, _J + 1), [1.0]])


_EDGES = _c_edges()


def _c_panel(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For |c| = a in [0, 1]: panel index (0 .. J) and the local coordinate in [-1, 1]."""
    with np.errstate(divide="ignore"):
        j = np.floor(-np.log2(1 - a))
    j = np.clip(np.nan_to_num(j, posinf=_J), 0, _J).astype(int)
    lo, hi = _EDGES[j], _EDGES[j + 1]
    y = np.clip((2 * a - lo - hi) / (hi - lo), -1.0, 1.0)
    return j, y


@dataclass
class _QPanel:
    coef: np.ndarray  # (2 J + 2, DQ, DC): c-panels -J-1..-1 mirrored then 0..J (index side * (J + 1) + j)
    ok: np.ndarray  # (2 J + 2,) certified
    error: np.ndarray  # (2 J + 2,) measured error / scale
    abs_error: np.ndarray  # (2 J + 2,) measured error (absolute)
    seconds: float
    scale: float = 0.0  # the largest |I| at the panel's smallest q: E[phi^2] there
    series: np.ndarray | None = None  # (K, DQ): Chebyshev coefficients of a_k(q)^2, k < K
    series_error: np.ndarray | None = None  # (K,): their measured absolute error


@dataclass(frozen=True)
class CrossTable:
    """The lazily built table of one activation: q-panels by index, and how they were built."""

    activation: Activation
    oracle: Callable
    panels: dict
    squares: Callable | None = None
    #: digest naming this table's files in :func:`cache_folder` (None: not kept on disk)
    digest: str | None = None

    def panel(self, i: int) -> _QPanel:
        """The q-panel [2^i, 2^(i+1)): read from the disk cache, else built (and written there) on first use."""
        if i not in self.panels:
            qp = _load(self.digest, i, self.squares is not None)
            if qp is None:
                qp = _build(self.oracle, self.squares, i)
                _save(self.digest, i, qp)
            self.panels[i] = qp
        return self.panels[i]

    def build(self, q_lo: float, q_hi: float) -> None:
        """Build every q-panel that meets [q_lo, q_hi] (within the table's range) now."""
        lo = max(Q_PANELS[0], int(np.floor(np.log2(q_lo))))
        hi = min(Q_PANELS[1] - 1, int(np.floor(np.log2(q_hi))))
        for i in range(lo, hi + 1):
            self.panel(i)


_TABLES: dict[Activation, CrossTable] = {}


def cross_table(f: Activation, oracle: Callable, squares: Callable | None = None, *,
                persist: str | None = None) -> CrossTable:
    """The cached table of ``f`` (``oracle(q1, q2)`` the quadrature it is built from; ``squares(q, k)``,
    if given, the squared Hermite coefficients a_j(q)^2, j < k, of rows q, for the series near c = 0).

    ``persist``: the source text of the oracle's module; given, the panels are also kept in
    :func:`cache_folder` under a digest of it, of this module's source and of ``f``'s expression.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> table = cross_table(activation("linear"), lambda q1, q2: q2)
        >>> bool(table.panel(0).ok.all())
        True
    """
    table = _TABLES.get(f)
    if table is None:
        digest = None if persist is None else _digest(f, persist, squares is not None)
        table = _TABLES[f] = CrossTable(f, oracle, {}, squares, digest)
    return table


def cache_folder() -> Path | None:
    """Where built panels are kept: ``$MEANFIELD_CACHE`` ("off", "0" or "" for nowhere), else
    ``$XDG_CACHE_HOME/meanfield``, else ``~/.cache/meanfield``.

    Example:
        >>> folder = cache_folder()
        >>> folder is None or isinstance(folder, Path)
        True
    """
    setting = os.environ.get("MEANFIELD_CACHE")
    if setting is not None:
        return None if setting.strip().lower() in ("", "0", "off", "false", "no") else Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "meanfield"


_SOURCE = Path(__file__).read_text(encoding="utf-8")


def _digest(f: Activation, oracle_source: str, series: bool) -> str:
    text = "\x00".join((sympy.srepr(f.expr), oracle_source, _SOURCE, str(series), np.__version__))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _path(digest: str | None, i: int) -> Path | None:
    folder = cache_folder()
    if digest is None or folder is None:
        return None
    return folder / "tables" / f"{digest}-q{i}.npz"


_FIELDS = ("coef", "ok", "error", "abs_error", "seconds", "scale")


def _load(digest: str | None, i: int, series: bool) -> _QPanel | None:
    """The panel kept on disk, or None (no cache, no file, or a file that does not read as one)."""
    path = _path(digest, i)
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            fields = {k: z[k] for k in _FIELDS}
            extra = (z["series"], z["series_error"]) if series else (None, None)
        qp = _QPanel(fields["coef"], fields["ok"].astype(bool), fields["error"], fields["abs_error"], 0.0,
                     float(fields["scale"]), *extra)
    except (OSError, KeyError, ValueError):
        return None
    shape = (2 * _J + 2, _DQ, _DC)
    return qp if qp.coef.shape == shape and qp.ok.shape == shape[:1] else None


def _save(digest: str | None, i: int, qp: _QPanel) -> None:
    """Write the panel atomically (a temporary file renamed), so parallel builders never read half a file."""
    path = _path(digest, i)
    if path is None:
        return
    arrays = {k: np.asarray(getattr(qp, k)) for k in _FIELDS}
    if qp.series is not None:
        arrays.update(series=qp.series, series_error=qp.series_error)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def clear_tables() -> None:
    """Forget every table (the next use rebuilds them; for benchmarks that time the build)."""
    _TABLES.clear()


def table_stats(f: Activation) -> dict:
    """For the report: q-panels built, seconds spent, certified fraction, worst measured error."""
    table = _TABLES.get(f)
    if table is None:
        return {"panels": 0, "seconds": 0.0, "certified": 0.0, "worst": 0.0}
    ps = list(table.panels.values())
    return {"panels": len(ps), "seconds": sum(p.seconds for p in ps),
            "certified": float(np.mean([p.ok.mean() for p in ps])) if ps else 0.0,
            "worst": float(max((p.error[p.ok].max(initial=0.0) for p in ps), default=0.0))}


def _build(oracle: Callable, squares: Callable | None, i: int) -> _QPanel:
    start = time.perf_counter()
    xq = _lobatto(_DQ)
    q = 2.0 ** (i + (xq + 1) / 2)
    yc = _lobatto(_DC)
    lo, hi = _EDGES[:-1], _EDGES[1:]
    a = (lo[:, None] + hi[:, None]) / 2 + (hi - lo)[:, None] / 2 * yc  # (J + 1, DC) |c| nodes
    c = np.concatenate([-a[::-1, ::-1], a])  # c-panels in increasing c: mirrored ones first
    values = oracle(np.repeat(q, c.size), (q[:, None] * c.reshape(-1)).reshape(-1)).reshape(_DQ, *c.shape)
    # values (DQ, panels, DC) -> coefficients (panels, DQ, DC)
    coef = np.einsum("ij,jpk,lk->pil", _MQ, values, _MC)
    scale = np.abs(values).max(axis=(1, 2)).min()  # >= E[phi^2] at c = +-1 ... the column's max |I|
    tail = (np.abs(coef[:, -1, :]).sum(axis=1) + np.abs(coef[:, :, -1]).sum(axis=1)) / scale
    # measured error halfway between the nodes, both directions
    xm = np.cos(np.pi * (np.arange(_DQ - 1) + 0.5) / (_DQ - 1))[::2]
    ym = np.cos(np.pi * (np.arange(_DC - 1) + 0.5) / (_DC - 1))[1::4]
    qm = 2.0 ** (i + (xm + 1) / 2)
    am = (lo[:, None] + hi[:, None]) / 2 + (hi - lo)[:, None] / 2 * ym
    cm = np.concatenate([-am[::-1], am])  # (panels, len(ym)) in the same panel order as coef
    exact = oracle(np.repeat(qm, cm.size), (qm[:, None] * cm.reshape(-1)).reshape(-1)).reshape(qm.size, *cm.shape)
    tq = _basis(xm, _DQ)
    # a mirrored panel's nodes run c = -mid + half y: its local coordinate is minus that of |c|
    panel_y = np.concatenate([-_local(am)[::-1], _local(am)])
    approx = np.einsum("mi,pil,pnl->mpn", tq, coef, _basis_stack(panel_y))
    error = (np.abs(approx - exact).max(axis=(0, 2))) / scale
    ok = (error <= TOL) & (tail <= TOL)
    error = np.maximum(error, tail)
    series = series_error = None
    if squares is not None:
        series = squares(q, _K) @ _MQ.T  # (K, DQ) Chebyshev coefficients in log2 q
        series_error = np.abs(series @ _basis_rows(xm, _DQ) - squares(qm, _K)).max(axis=1)
    return _QPanel(coef, ok, error, error * scale, time.perf_counter() - start, scale, series, series_error)


def _local(a: np.ndarray) -> np.ndarray:
    """Local coordinates of |c| = a within its (row's) panel."""
    lo, hi = _EDGES[:-1, None], _EDGES[1:, None]
    return (2 * a - lo - hi) / (hi - lo)


def _basis_stack(y: np.ndarray) -> np.ndarray:
    """T_k at the local points y (panels, n) -> (panels, n, DC)."""
    return _basis(y.reshape(-1), _DC).reshape(*y.shape, _DC)


def table_cross(table: CrossTable, q1: np.ndarray, q2: np.ndarray,
                build_from: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok) for I_phi[q1, q2] on 1-D arrays (q1 > 0, |q2| <= q1); ok False where the table
    does not apply: q1 outside its range, a q-panel not built, or a value the panel does not
    certify to ``REL`` relative (|I| below its measured error / REL: near a zero of I).

    A q-panel that is not built yet is built when this call has at least ``build_from`` pairs in
    it (None: :data:`BUILD_FROM`), or 1/16 of that when another of its q-panels qualifies (the thin
    ends of a large call's range), so one-off small calls never pay for a table. Values from a
    table and from the quadrature agree to ~1e-13 relative: which one answers depends on what
    was built before, so a result can change at that level once a table exists.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> table = cross_table(activation("linear"), lambda q1, q2: q2)
        >>> values, ok = table_cross(table, np.array([1.5, 3000.0]), np.array([-0.75, 0.0]), build_from=1)
        >>> round(float(values[0]), 14), ok.tolist()
        (-0.75, [True, False])
    """
    out = np.empty(q1.shape)
    s = np.log2(q1)
    iq = np.floor(s)
    inside = (iq >= Q_PANELS[0]) & (iq < Q_PANELS[1])
    ok = np.zeros(q1.shape, dtype=bool)
    idx = np.nonzero(inside)[0]
    if idx.size == 0:
        return out, ok
    c = q2[idx] / q1[idx]
    j, y = _c_panel(np.abs(c))
    panel = np.where(c < 0, _J - j, _J + 1 + j)
    qi = iq[idx].astype(int)
    need = BUILD_FROM if build_from is None else build_from
    panels_here, counts = np.unique(qi, return_counts=True)
    if np.any(counts >= need):  # a large call: its thin edge panels are worth building too
        need = min(need, max(1, need // 16))
    usable = {int(i) for i, n in zip(panels_here, counts) if int(i) in table.panels or n >= need}
    key = (qi - Q_PANELS[0]) * (2 * _J + 2) + panel
    # sorted by panel, each panel's pairs are one contiguous slice of the basis rows
    order = np.argsort(key, kind="stable")
    key, idx = key[order], idx[order]
    y = np.where(c < 0, -y, y)[order]
    cs = c[order]
    x = np.clip(2 * (s[idx] - iq[idx]) - 1, -1.0, 1.0)
    tq, tc = _basis_rows(x, _DQ), _basis_rows(y, _DC)
    keys, starts = np.unique(key, return_index=True)
    bounds = np.append(starts, key.size)
    for kk, a, b in zip(keys, bounds[:-1], bounds[1:]):
        i, p = divmod(int(kk), 2 * _J + 2)
        if i + Q_PANELS[0] not in usable:
            continue
        qp = table.panel(i + Q_PANELS[0])
        if not qp.ok[p]:
            continue
        value = np.einsum("im,im->m", qp.coef[p] @ tc[:, a:b], tq[:, a:b])
        good = np.abs(value) * REL >= SAFETY * qp.abs_error[p]
        if qp.series is not None and p in (_J, _J + 1):
            small = np.nonzero(np.abs(cs[a:b]) <= C_SMALL)[0]
            if small.size:
                v, g = _series(qp, tq[:, a:b][:, small], cs[a:b][small])
                value[small], good[small] = v, g
        out[idx[a:b]] = value
        ok[idx[a:b]] = good
    return out, ok


def table_second(table: CrossTable, q: np.ndarray, build_from: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok) for E[phi(sqrt(q) z)^2] = I_phi[q, q] on a 1-D array q > 0: the c = 1 edge of
    the cross table (its last c-panel at y = 1, a 1-D Chebyshev series in log2 q), with the same
    building rule and certificate as :func:`table_cross`.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> table = cross_table(activation("linear"), lambda q1, q2: q2)
        >>> values, ok = table_second(table, np.array([1.5]), build_from=1)
        >>> round(float(values[0]), 14), ok.tolist()
        (1.5, [True])
    """
    out = np.empty(q.shape)
    ok = np.zeros(q.shape, dtype=bool)
    s = np.log2(q)
    iq = np.floor(s)
    need = BUILD_FROM if build_from is None else build_from
    panels_here, counts = np.unique(iq[(iq >= Q_PANELS[0]) & (iq < Q_PANELS[1])], return_counts=True)
    if np.any(counts >= need):
        need = min(need, max(1, need // 16))
    last = 2 * _J + 1  # the c-panel [1 - 2^-J, 1]; T_l(1) = 1
    for i, n in zip(panels_here.astype(int), counts):
        if i not in table.panels and n < need:
            continue
        qp = table.panel(int(i))
        if not qp.ok[last]:
            continue
        sel = np.nonzero(iq == i)[0]
        x = np.clip(2 * (s[sel] - i) - 1, -1.0, 1.0)
        value = qp.coef[last].sum(axis=1) @ _basis_rows(x, _DQ)
        out[sel] = value
        ok[sel] = np.abs(value) * REL >= SAFETY * qp.abs_error[last]
    return out, ok


def _series(qp: _QPanel, tq: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sum_k a_k(q)^2 c^k (k < K) at the pairs with basis rows tq, and where it is certified to REL
    (bound: remainder |c|^K E[phi^2] plus the coefficients' measured errors, times SAFETY)."""
    squares = qp.series @ tq  # (K, m)
    a = np.abs(c)
    value, spread, error = squares[-1].copy(), np.abs(squares[-1]), np.full(c.shape, qp.series_error[-1])
    for k in range(_K - 2, -1, -1):
        value = value * c + squares[k]
        spread = spread * a + np.abs(squares[k])
        error = error * a + qp.series_error[k]
    bound = a**_K * qp.scale + error + 1e-15 * spread  # the last term: rounding of the sum
    return value, np.abs(value) * REL >= SAFETY * bound
