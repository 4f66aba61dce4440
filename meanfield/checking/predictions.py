"""What verify compares: the statistics, a prediction read as numbers per width, and the bias allowed.

A prediction is :func:`meanfield.predict` (default), a finite-width form of it named by a string
(``"rmt"``, ``"1/M"``: ``predict(..., finite_width=name)``), a ``FisherStats`` at one width, or a
user's callable ``(width, samples) -> FisherStats | dict``; :func:`predictor` turns each into one
function ``(width, samples) -> {statistic: value}`` with the kappa's on the sampler's scale
(T gram / (alpha M)).

Claims. A prediction declares which statistics it gives up to O(1/M^2), i.e. including their O(1/M)
terms: ``FisherStats.includes_1_over_M``, or the key ``"includes_1_over_M"`` (an iterable of
statistic names) of a user's dict; :func:`from_fisher` and the predictor carry it as the key
:data:`CLAIM_KEY` of the per-width dict, and :func:`declared_claims` reads it (the statistics claimed
at every width). A claimed statistic admits no bias (:data:`NO_BIAS`: verify tests each width's mean
against the prediction at that width); every other statistic keeps the bias of :func:`default_bias`,
the O(1/M) term the prediction declares missing. :func:`bias_models` assembles both with a user's
overrides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidArgument, check_real
from ..spec.network import Network
from ..theory.fisher import finite_width_choices, predict
from .trend import NO_BIAS, BiasModel

__all__ = ["STATISTICS", "CLAIM_KEY", "default_bias", "bias_models", "from_fisher", "predictor", "check_claims",
           "declared_claims"]

#: The statistics compared, in report order.
STATISTICS = ("m", "s", "lambda_max", "kappa1", "kappa2")
#: The key of a prediction's dict naming the statistics whose O(1/M) term it includes.
CLAIM_KEY = "includes_1_over_M"
_PREDICTION_KEYS = (*STATISTICS, "lambda_max_bounds", "gram_diag", "gram_offdiag", CLAIM_KEY)
_CLAIM_ALIASES = {"gram_diag": "kappa1", "gram_offdiag": "kappa2"}


def default_bias(net: Network) -> dict[str, BiasModel]:
    """The finite-width bias each statistic may carry under H0 of the trend test.

    m, kappa_1, kappa_2: b/M (exact P and bias terms leave O(1/M)); s: b/M (the excess O(T/M) of
    entry-wise Gram fluctuations, and O(1/M) prediction terms); lambda_max: b/M of either sign plus
    c/sqrt(M) with c >= 0: the C outliers (or, when kappa_2 is near 0, the top of the bulk) split by
    O(sqrt(M)) around an O(M) value, which can only raise the maximum (lambda_max is convex).

    Example:
        >>> str(default_bias(Network(3, "relu", 2, 0, outputs=10))["lambda_max"])
        'M^-1 + (+)M^-0.5'
    """
    plain = BiasModel((1.0,))
    return {"m": plain, "s": plain, "lambda_max": BiasModel((1.0,), (0.5,)), "kappa1": plain, "kappa2": plain}


def check_claims(claims: Any) -> frozenset[str] | None:
    """Statistic names a prediction claims to include the O(1/M) term of, checked; None stays None.

    ``gram_diag`` and ``gram_offdiag`` (a FisherStats' names) stand for kappa_1 and kappa_2, their
    rescalings.

    Example:
        >>> sorted(check_claims(["kappa2", "m", "gram_diag"])), check_claims(None)
        (['kappa1', 'kappa2', 'm'], None)
    """
    if claims is None:
        return None
    if isinstance(claims, str):
        claims = (claims,)
    try:
        names = frozenset(_CLAIM_ALIASES.get(name, name) for name in claims)
    except TypeError:
        raise InvalidArgument("claims", claims, "an iterable of statistic names among " + ", ".join(STATISTICS)) from None
    unknown = sorted(str(n) for n in names if n not in STATISTICS)
    if unknown:
        raise InvalidArgument("claims", sorted(map(str, names)), "statistic names among " + ", ".join(STATISTICS),
                              "unknown: " + ", ".join(unknown))
    return names


def declared_claims(predicted: Mapping[int, Mapping[str, Any]]) -> frozenset[str]:
    """The statistics a prediction claims (key :data:`CLAIM_KEY`) at every width it was read at.

    Example:
        >>> sorted(declared_claims({64: {"m": 1.0, CLAIM_KEY: {"m", "s"}}, 256: {"m": 1.0, CLAIM_KEY: {"m"}}}))
        ['m']
    """
    sets = [frozenset(values.get(CLAIM_KEY, ())) for values in predicted.values()]
    return frozenset.intersection(*sets) if sets else frozenset()


def bias_models(net: Network, bias: Any, widths: tuple[int, ...], prediction: Any = None,
                claims: Any = None) -> dict[str, BiasModel]:
    """The bias model per statistic: :func:`default_bias`, none for the ``claims``, the user's ``bias`` overrides.

    ``claims`` names the statistics whose O(1/M) term the prediction includes: they admit no bias
    (:data:`NO_BIAS`). ``bias`` maps a statistic to a :class:`BiasModel`, an exponent g (one term
    b M^-g of either sign) or ``"none"``; it wins over the claims. The result is checked against the
    widths (a free bias needs one width more than its terms).

    Example:
        >>> models = bias_models(Network(2, "relu", 2, 0), {"m": 0.5}, (64, 256), claims={"kappa1"})
        >>> str(models["m"]), str(models["lambda_max"]), models["kappa1"].is_none
        ('M^-0.5', 'M^-1 + (+)M^-0.5', True)
    """
    models = default_bias(net)
    if isinstance(prediction, str) and prediction == "rmt":
        # the random-matrix prediction already contains the O(1/sqrt M) excess of the top eigenvalue: what
        # is left is an O(1/M) error of either sign, so lambda_max is tested two-sided
        models["lambda_max"] = BiasModel((1.0,))
    for name in check_claims(claims) or ():
        # the prediction includes the O(1/M) term: what is left is O(1/M^2), below the noise
        models[name] = NO_BIAS
    if bias is not None and not isinstance(bias, Mapping):
        raise InvalidArgument("bias", bias, "a dict statistic -> BiasModel (or exponent, or 'none')")
    for key, value in (bias or {}).items():
        if key not in models:
            raise InvalidArgument("bias", dict(bias), "keys among " + ", ".join(STATISTICS))
        if isinstance(value, str) and value == "none":
            models[key] = NO_BIAS
            continue
        models[key] = value if isinstance(value, BiasModel) else BiasModel(
            (check_real(f"bias[{key!r}]", value, minimum=0, strict_min=True, symbolic=False),))
    free_terms = max(len(m.free) for m in models.values())
    if len(widths) != 1 and len(widths) <= free_terms:
        raise InvalidArgument("widths", widths, f"one width, or at least {free_terms + 1} for the bias model")
    return models


def from_fisher(stats: Any, width: int, samples: int, net: Network) -> dict[str, Any]:
    """The compared statistics of a FisherStats: kappa's as T gram/(alpha M), like the sampler's.

    Example:
        >>> net = Network(2, "relu", 2, 0)
        >>> sorted(from_fisher(predict(net, 64, 8), 64, 8, net))
        ['kappa1', 'kappa2', 'lambda_max', 'm', 's']
    """
    out: dict[str, Any] = {"m": float(stats.m), "s": float(stats.s)}
    kind = getattr(stats, "lambda_max_kind", "prediction")
    if kind == "bound":
        lo, hi = stats.lambda_max_bounds
        out["lambda_max_bounds"] = (float(lo), float(hi))
    else:
        out["lambda_max"] = float(stats.lambda_max)
    if float(stats.alpha) > 0:  # a depth-1 network has no kappa's (alpha = 0)
        scale = samples / (float(stats.alpha) * width)
        out["kappa1"] = float(stats.gram_diag) * scale
        out["kappa2"] = float(stats.gram_offdiag) * scale
    declared = getattr(stats, "includes_1_over_M", None) or ()
    claimed = frozenset(_CLAIM_ALIASES.get(name, name) for name in declared) & frozenset(out)
    if claimed:
        out[CLAIM_KEY] = claimed
    return out



def _from_mapping(values: Mapping[str, Any], width: int, samples: int, net: Network, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _PREDICTION_KEYS:
            raise InvalidArgument(f"{source}[{key!r}]", value, "keys among " + ", ".join(_PREDICTION_KEYS))
        if key == CLAIM_KEY:
            out[key] = check_claims(value)
            continue
        if key == "lambda_max_bounds":
            try:
                lo, hi = value
            except (TypeError, ValueError):
                raise InvalidArgument(f"{source}['lambda_max_bounds']", value, "a pair (lo, hi)") from None
            lo = -math.inf if lo is None else float(lo)
            hi = math.inf if hi is None else float(hi)
            if not lo <= hi:
                raise InvalidArgument(f"{source}['lambda_max_bounds']", value, "lo <= hi")
            out[key] = (lo, hi)
        else:
            out[key] = check_real(f"{source}[{key!r}]", value, symbolic=False)
    if float(net.alpha) > 0:  # the kappa's of the gram entries (a depth-1 net has none)
        scale = samples / (float(net.alpha) * width)
        if "kappa1" not in out and "gram_diag" in out:
            out["kappa1"] = out["gram_diag"] * scale
        if "kappa2" not in out and "gram_offdiag" in out:
            out["kappa2"] = out["gram_offdiag"] * scale
    out.pop("gram_diag", None)
    out.pop("gram_offdiag", None)
    if "lambda_max" in out and "lambda_max_bounds" in out:
        raise InvalidArgument(source, values, "either lambda_max or lambda_max_bounds, not both")
    return out



def predictor(net: Network, prediction: Any, widths: Sequence[int] | None, samples: int | None):
    """(widths, samples, name, function (width, samples) -> dict of predicted statistics) of a prediction.

    ``widths`` and ``samples`` come back as given, or fixed by the prediction (a FisherStats holds one
    width and one T).

    Example:
        >>> widths, T, name, at = predictor(Network(2, "relu", 2, 0), lambda M, T: {"m": 1.0}, None, 8)
        >>> name, at(64, 8)
        ('callable <lambda>', {'m': 1.0})
    """
    if prediction is None:

        def fn(width: int, T: int) -> dict[str, Any]:
            return from_fisher(predict(net, width, T), width, T, net)

        return widths, samples, "meanfield.predict (finite width)", fn
    if isinstance(prediction, str):
        if prediction not in finite_width_choices():
            raise InvalidArgument("prediction", prediction, "None, a FisherStats, a callable, or a finite-width "
                                  "form of meanfield.predict: " + ", ".join(map(repr, finite_width_choices())))
        choice = prediction

        def fn(width: int, T: int) -> dict[str, Any]:
            return from_fisher(predict(net, width, T, finite_width=choice), width, T, net)

        return widths, samples, f"meanfield.predict(finite_width={choice!r})", fn
    if callable(prediction):
        name = getattr(prediction, "__qualname__", None) or type(prediction).__name__

        def fn(width: int, T: int) -> dict[str, Any]:
            value = prediction(width, T)
            if hasattr(value, "gram_diag") and hasattr(value, "m"):
                return from_fisher(value, width, T, net)
            if not isinstance(value, Mapping):
                raise InvalidArgument("prediction", prediction,
                                      "a callable (width, samples) -> FisherStats or dict of statistics",
                                      f"it returned {type(value).__name__}")
            return _from_mapping(value, width, T, net, "prediction(width, samples)")

        return widths, samples, f"callable {name}", fn
    if hasattr(prediction, "gram_diag") and hasattr(prediction, "width"):
        # a FisherStats is a prediction at one width and one T: verify there alone
        w, T = int(prediction.width), int(prediction.samples)
        if widths is not None and tuple(widths) != (w,):
            raise InvalidArgument("widths", widths, f"({w},): the width of the given FisherStats",
                                  "to test several widths pass a callable (width, samples) -> FisherStats")
        if samples is not None and samples != T:
            raise InvalidArgument("samples", samples, f"{T}, the samples of the given FisherStats")
        if getattr(prediction, "network", net) != net:
            raise InvalidArgument("prediction", "FisherStats of another network",
                                  "a FisherStats computed for this network")
        fixed = from_fisher(prediction, w, T, net)
        return (w,), T, f"FisherStats at M={w}, T={T}", lambda width, T_: fixed
    raise InvalidArgument("prediction", prediction,
                          "None (meanfield.predict), a finite-width name such as 'rmt' or '1/M' "
                          "(predict(..., finite_width=name)), a FisherStats, or a callable (width, samples) -> dict")
