"""Hypothesis strategies for meanfield objects: random activations, networks and order parameters.

Use them to ask a property of *every* architecture rather than of the one you thought of:

    from hypothesis import given
    import meanfield as mf
    from meanfield import strategies as mfst

    @given(mfst.networks(max_depth=3, norms=("none", "layer")))
    def test_kappa1_is_positive(net):
        assert mf.predict(net, width=64, samples=8).kappa1 > 0

Following Hypothesis's own style guide: the strategies are plural nouns; their arguments say what is
*valid* (``min_``/``max_`` bounds, which families or placements may appear), not a distribution;
every draw is a valid :class:`~meanfield.Network` by construction (no filtering); fields that
constrain each other are drawn together (the normalization placements first, then a depth that can
hold them), so a failing example shrinks toward the simplest network: depth ``min_depth``, no
normalization, a linear or ReLU activation, ``sigma_w2 = 1``, ``sigma_b2 = 0``, all width ratios 1,
one output. Bad arguments raise :class:`~meanfield.InvalidArgument` when the strategy is built.

Width ratios are drawn from powers of two (1, 1/2, 2, 1/4, 4 within ``[min_alpha, max_alpha]``) so
that ``alpha_l * M`` is a whole number for every width ``M`` that is a multiple of
:func:`width_multiple` (4 at most): the sampler can always build the drawn network.
"""

from __future__ import annotations

import math

from collections.abc import Iterable
from fractions import Fraction

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .spec.activations import Activation, activation, catalogue
from .errors import InvalidArgument, check_choice, check_int, check_real
from .spec.network import BatchNorm, LayerNorm, Network
from .theory.recursions import min_samples_for

__all__ = [
    "ACTIVATION_FAMILIES",
    "PLACEMENTS",
    "activations",
    "networks",
    "order_parameters",
    "samples",
    "width_multiple",
]

#: Catalogue families whose mean-field theory is defined (phi' is a function), simplest first.
#: Not included by default: ``step``/``sign``/``leaky_step`` (phi' is a Dirac delta or zero: no
#: gradient flows), ``constant`` (degenerate), and the derivative activations ``erf_prime``,
#: ``sigmoid_prime``, ``silu_prime`` (valid, pass them in ``families`` to use them).
ACTIVATION_FAMILIES = ("linear", "relu", "tanh", "erf", "leaky_relu", "abs", "sigmoid", "softplus",
                       "gelu", "silu", "sin", "cos")

# leaky_relu slopes, the catalogue default first so that it is what examples shrink to.
_LEAKY_SLOPES = (None, 0.1, 0.2, 0.5)

#: Normalization placements ``networks(norms=...)`` understands, simplest first:
#:
#: - ``"none"``: networks without any normalization may be drawn;
#: - ``"batch-last"``: batch norm on the output pre-activation u^L;
#: - ``"batch-center-last"``: mean-only batch norm on u^L;
#: - ``"batch-hidden"``: batch norm on one hidden layer (drawn);
#: - ``"batch-center-hidden"``: mean-only batch norm on one hidden layer;
#: - ``"layer"``: layer norm on one hidden layer;
#: - ``"batch-every"``: batch norm on every hidden layer;
#: - ``"layer-every"``: layer norm on every hidden layer.
PLACEMENTS = ("none", "batch-last", "batch-center-last", "batch-hidden", "batch-center-hidden", "layer",
              "batch-every", "layer-every")
_LAST = ("batch-last", "batch-center-last")
_SINGLE_HIDDEN = ("batch-hidden", "batch-center-hidden", "layer")
_EVERY_HIDDEN = ("batch-every", "layer-every")

# Width ratios: powers of two, the simplest first (shrinking goes to 1).
_ALPHAS = (Fraction(1), Fraction(1, 2), Fraction(2), Fraction(1, 4), Fraction(4))


def activations(families: Iterable[str] | None = None, *, formulas: Iterable[str] = ()) -> SearchStrategy[Activation]:
    """Catalogued activations phi from ``families`` (default :data:`ACTIVATION_FAMILIES`), and formulas.

    ``leaky_relu`` comes with a slope drawn from 0.01 (the default), 0.1, 0.2, 0.5. Examples shrink
    toward the first family listed; the formulas come after every family.

    Args:
        families: catalogue names (or aliases, e.g. ``"swish"``); every one must be in
            :func:`meanfield.catalogue`.
        formulas: custom activations as formulas in ``x`` (``"x*tanh(x)"``), read by the network
            grammar (:func:`meanfield.spec.grammar.parse_activation`).

    Returns:
        A strategy drawing :class:`~meanfield.Activation` objects.

    Raises:
        InvalidArgument: an unknown or empty list of families.

    Example:
        >>> from hypothesis import find
        >>> find(activations(["tanh", "relu"]), lambda a: a.family == "relu").name
        'relu'
    """
    names = _families(families)
    choices = []
    for name in names:
        if name == "leaky_relu":
            choices.append(st.sampled_from(_LEAKY_SLOPES).map(
                lambda a: activation("leaky_relu") if a is None else activation("leaky_relu", a=a)))
        else:
            choices.append(st.just(activation(name)))
    if isinstance(formulas, str):
        formulas = (formulas,)
    custom = []
    for formula in formulas:
        if not isinstance(formula, str):
            raise InvalidArgument("formulas", formula, "formulas in x as strings, e.g. 'x*tanh(x)'")
        act = Activation.from_expr(formula)
        if act not in custom:
            custom.append(act)
    if custom:
        choices.append(st.sampled_from(custom))
    return st.one_of(choices)


def _default_activations() -> SearchStrategy[Activation]:
    # networks() has an argument named `activations`, which hides the function in its body
    return activations()


def _families(families: Iterable[str] | None) -> tuple[str, ...]:
    if families is None:
        return ACTIVATION_FAMILIES
    if isinstance(families, str):
        families = (families,)
    try:
        given = list(families)
    except TypeError:
        raise InvalidArgument("families", families, "an iterable of catalogue names") from None
    if not given:
        raise InvalidArgument("families", families, "at least one catalogue name")
    out = []
    for name in given:
        if not isinstance(name, str):
            raise InvalidArgument("families", families, "catalogue names (strings)")
        family = activation(check_choice("families", name.strip().lower(), catalogue())).family
        if family not in out:
            out.append(family)
    return tuple(out)


def order_parameters(min_q1: float = 0.1, max_q1: float = 10.0, *, min_correlation: float = -1.0,
                     max_correlation: float = 1.0) -> SearchStrategy[tuple[float, float]]:
    """Valid pairs (q_1, q_2) = (q, c q): a variance q in [min_q1, max_q1] and a correlation c.

    These are the arguments of the Gaussian integrals I_phi[q_1, q_2] and the input statistics
    (qhat_1^0, qhat_2^0) of a :class:`~meanfield.Network`: any drawn pair has q_1 > 0 and
    |q_2| <= q_1 (q_2 = c q_1 is computed so that this holds exactly in floating point).
    Examples shrink toward q_1 = 1, c = 0.

    Args:
        min_q1, max_q1: bounds on the variance q_1 (0 < min_q1 <= max_q1, finite).
        min_correlation, max_correlation: bounds on c = q_2 / q_1 (-1 <= min <= max <= 1).

    Returns:
        A strategy drawing ``(q1, q2)`` tuples of floats.

    Raises:
        InvalidArgument: bounds outside those ranges or in the wrong order.

    Example:
        >>> from hypothesis import find
        >>> q1, q2 = find(order_parameters(max_q1=4.0), lambda p: p[1] < -1.0)
        >>> q1 >= 1.0 and abs(q2) <= q1
        True
    """
    lo = check_real("min_q1", min_q1, minimum=0, strict_min=True, symbolic=False)
    hi = check_real("max_q1", max_q1, minimum=lo, symbolic=False)
    c_lo = check_real("min_correlation", min_correlation, minimum=-1, maximum=1, symbolic=False)
    c_hi = check_real("max_correlation", max_correlation, minimum=c_lo, maximum=1, symbolic=False)

    @st.composite
    def pairs(draw):
        q1 = draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
        c = draw(st.floats(c_lo, c_hi, allow_nan=False, allow_infinity=False))
        # |c| <= 1 and rounding is monotone, so |fl(c q1)| <= q1 exactly
        return q1, c * q1

    return pairs()


def width_multiple(network: Network) -> int:
    """The smallest M0 such that every multiple M of M0 makes each alpha_l M a whole number.

    Example:
        >>> width_multiple(Network(3, "relu", 2, 0, alphas=(1, 0.5, 2)))
        2
    """
    from math import lcm

    denominators = [Fraction(float(a)).limit_denominator(1 << 20).denominator for a in network.alphas]
    return lcm(*denominators)


def networks(*, min_depth: int = 1, max_depth: int = 4, activations: SearchStrategy[Activation] | None = None,
             mixed_activations: bool = False, min_alpha: float = 0.5, max_alpha: float = 2.0,
             min_sigma_w2: float = 0.5, max_sigma_w2: float = 3.0, min_sigma_b2: float = 0.0,
             max_sigma_b2: float = 0.5, per_layer_variances: bool = False, min_outputs: int = 1,
             max_outputs: int = 3, norms: Iterable[str] = PLACEMENTS,
             inputs: SearchStrategy[tuple[float, float]] | None = None) -> SearchStrategy[Network]:
    """Random valid :class:`~meanfield.Network` specs within the given bounds.

    What is drawn, in this order (so that shrinking simplifies the architecture first): which
    normalization placements appear (a subset of ``norms``; at most one on the output, either
    single hidden-layer ones or one "every hidden layer" kind), a depth that can hold them, the
    activation (one for all layers unless ``mixed_activations``), sigma_w^2 and sigma_b^2 (one
    value for all layers unless ``per_layer_variances``), width ratios, the number of outputs C,
    the input statistics, and the layers of the hidden placements.

    Args:
        min_depth, max_depth: bounds on L, the number of weight layers.
        activations: strategy for the activations (default :func:`activations` over
            :data:`ACTIVATION_FAMILIES`).
        mixed_activations: draw one activation per hidden layer instead of one for all.
        min_alpha, max_alpha: bounds on the width ratios alpha_l, drawn from {1, 1/2, 2, 1/4, 4};
            the interval must contain one of them (widths that are multiples of 4 are then always
            valid; see :func:`width_multiple`).
        min_sigma_w2, max_sigma_w2: bounds on the weight variances (min > 0).
        min_sigma_b2, max_sigma_b2: bounds on the bias variances (min >= 0).
        per_layer_variances: draw sigma's per layer instead of one value for all layers.
        min_outputs, max_outputs: bounds on C.
        norms: the placements that may appear, names from :data:`PLACEMENTS`. With ``"none"`` among
            them, networks without normalization are drawn too; without it, every network has one.
            Placements the depth bounds cannot hold (hidden ones with ``max_depth=1``) never appear.
        inputs: strategy for the input statistics (qhat_1^0, qhat_2^0), e.g. :func:`order_parameters`;
            default: iid N(0, 1) inputs, (1, 0).

    Returns:
        A strategy drawing :class:`~meanfield.Network` objects.

    Raises:
        InvalidArgument: inconsistent bounds, unknown placements, or no drawable network.

    Example:
        >>> from hypothesis import find
        >>> net = find(networks(norms=("batch-last", "layer")), lambda n: len(n.norms) == 2)
        >>> [str(n) for n in net.norms], net.depth
        (['layer:1', 'batch:2'], 2)

        In a test (the usual use)::

            @given(networks(max_depth=3, norms=("none", "batch-hidden")), st.integers(8, 32))
            def test_kappa1_positive(net, T): ...
    """
    lo_depth = check_int("min_depth", min_depth, minimum=1)
    hi_depth = check_int("max_depth", max_depth, minimum=lo_depth)
    if activations is None:
        acts = _default_activations()
    elif isinstance(activations, SearchStrategy):
        acts = activations
    else:
        raise InvalidArgument("activations", activations, "a hypothesis strategy of Activations, e.g. "
                              "meanfield.strategies.activations(['relu'])")
    lo_a = check_real("min_alpha", min_alpha, minimum=0, strict_min=True, symbolic=False)
    hi_a = check_real("max_alpha", max_alpha, minimum=lo_a, symbolic=False)
    alphas = [a for a in _ALPHAS if lo_a <= a <= hi_a]
    if not alphas:
        raise InvalidArgument("min_alpha, max_alpha", (min_alpha, max_alpha),
                              "an interval containing one of 1/4, 1/2, 1, 2, 4")
    lo_w = check_real("min_sigma_w2", min_sigma_w2, minimum=0, strict_min=True, symbolic=False)
    hi_w = check_real("max_sigma_w2", max_sigma_w2, minimum=lo_w, symbolic=False)
    lo_b = check_real("min_sigma_b2", min_sigma_b2, minimum=0, symbolic=False)
    hi_b = check_real("max_sigma_b2", max_sigma_b2, minimum=lo_b, symbolic=False)
    lo_c = check_int("min_outputs", min_outputs, minimum=1)
    hi_c = check_int("max_outputs", max_outputs, minimum=lo_c)
    if not isinstance(mixed_activations, bool):
        raise InvalidArgument("mixed_activations", mixed_activations, "True or False")
    if not isinstance(per_layer_variances, bool):
        raise InvalidArgument("per_layer_variances", per_layer_variances, "True or False")
    if inputs is not None and not isinstance(inputs, SearchStrategy):
        raise InvalidArgument("inputs", inputs, "None or a strategy of (q1, q2) pairs, e.g. order_parameters()")
    kinds = _placements(norms, hi_depth)

    @st.composite
    def draw_network(draw):
        chosen = draw(_placement_sets(kinds))
        singles = [k for k in chosen if k in _SINGLE_HIDDEN]
        hidden = bool(singles) or any(k in _EVERY_HIDDEN for k in chosen)
        need = max(lo_depth, len(singles) + 1 if hidden else 1)
        depth = draw(st.integers(need, hi_depth))
        n_hidden = max(depth - 1, 1)
        if mixed_activations and depth > 1:
            activation_ = tuple(draw(st.lists(acts, min_size=depth - 1, max_size=depth - 1)))
        else:
            activation_ = draw(acts)
        variances = st.floats(lo_w, hi_w, allow_nan=False, allow_infinity=False)
        biases = st.floats(lo_b, hi_b, allow_nan=False, allow_infinity=False)
        if per_layer_variances:
            sigma_w2 = tuple(draw(st.lists(variances, min_size=depth, max_size=depth)))
            sigma_b2 = tuple(draw(st.lists(biases, min_size=depth, max_size=depth)))
        else:
            sigma_w2, sigma_b2 = draw(variances), draw(biases)
        ratios = tuple(float(a) for a in draw(st.lists(st.sampled_from(alphas), min_size=depth, max_size=depth)))
        outputs = draw(st.integers(lo_c, hi_c))
        layers = draw(st.lists(st.integers(1, n_hidden), min_size=len(singles), max_size=len(singles),
                               unique=True)) if singles else []
        placed = []
        for kind in chosen:
            if kind == "batch-last":
                placed.append(BatchNorm("last"))
            elif kind == "batch-center-last":
                placed.append(BatchNorm("last", center_only=True))
            elif kind == "batch-every":
                placed.extend(BatchNorm(l) for l in range(1, depth))
            elif kind == "layer-every":
                placed.extend(LayerNorm(l) for l in range(1, depth))
        for kind, layer in zip(singles, layers):
            placed.append(LayerNorm(layer) if kind == "layer" else BatchNorm(layer, kind == "batch-center-hidden"))
        q1, q2 = 1.0, 0.0
        if inputs is not None:
            # the norms need a few samples, and a negative input correlation caps how many inputs can have
            # it (q2 >= -q1/(T-1)): draw only statistics that a batch size valid for these norms realises
            plain = Network(depth, activation_, sigma_w2, sigma_b2, outputs=outputs, alphas=ratios, norms=placed)
            fewest = max(2, plain.min_samples(), min_samples_for(plain, "fisher"))
            # and a batch norm of identical inputs (q2 = q1) would divide by a zero batch variance
            distinct = any(isinstance(n, BatchNorm) for n in placed)
            q1, q2 = draw(inputs.filter(lambda pair: pair[1] * (fewest - 1) >= -pair[0]
                                        and not (distinct and pair[1] >= pair[0])))
        return Network(depth, activation_, sigma_w2, sigma_b2, outputs=outputs, alphas=ratios, norms=placed,
                       input_q1=q1, input_q2=q2)

    return draw_network()


def _placements(norms: Iterable[str], max_depth: int) -> tuple[tuple[str, ...], bool, int]:
    if isinstance(norms, str):
        norms = (norms,)
    try:
        given = list(norms)
    except TypeError:
        raise InvalidArgument("norms", norms, "an iterable of placement names from " + ", ".join(PLACEMENTS)) from None
    if not given:
        raise InvalidArgument("norms", norms, "at least one of " + ", ".join(PLACEMENTS))
    kinds = []
    for name in given:
        if not isinstance(name, str):
            raise InvalidArgument("norms", norms, "placement names (strings) from " + ", ".join(PLACEMENTS))
        kind = check_choice("norms", name, PLACEMENTS)
        if kind not in kinds:
            kinds.append(kind)
    none_ok = "none" in kinds
    usable = [k for k in PLACEMENTS if k in kinds and k != "none" and (max_depth >= 2 or k in _LAST)]
    if not usable and not none_ok:
        raise InvalidArgument("norms", given, "placements that fit in max_depth="
                              f"{max_depth} (hidden-layer placements need depth >= 2)")
    return tuple(usable), none_ok, max_depth


@st.composite
def _placement_sets(draw, spec):
    """A valid set of placements: <= 1 on the output, and single hidden ones or one 'every' kind."""
    usable, none_ok, max_depth = spec
    if not usable:
        return ()
    # one include/exclude flag per placement: each flag shrinks to "exclude" on its own, so a
    # failing example loses every placement it does not need
    forced = None if none_ok else draw(st.sampled_from(usable))
    chosen = [k for k in usable if k == forced or draw(st.booleans())]
    last = [k for k in chosen if k in _LAST][:1]
    every = [k for k in chosen if k in _EVERY_HIDDEN][:1]
    # distinct single hidden placements need distinct hidden layers: at most max_depth - 1
    singles = [] if every else [k for k in chosen if k in _SINGLE_HIDDEN][:max_depth - 1]
    return tuple(last + every + singles)


def _largest_realisable(network: Network) -> int | None:
    """Most samples T whose exchangeable inputs can have the network's input statistics, or None (any T).

    The T x T input covariance (q1 - q2) I + q2 11^T is positive semi-definite iff q2 >= -q1 / (T - 1): a
    negative mean product allows only T <= 1 + q1 / (-q2) inputs (T = 2 for perfectly anti-correlated ones).
    """
    q1, q2 = network.input_q1, network.input_q2
    if not (getattr(q1, "is_number", True) and getattr(q2, "is_number", True)) or float(q2) >= 0:
        return None
    bound = 1 + float(q1) / -float(q2)
    if bound > 2**53:  # a correlation this close to 0 caps nothing a batch could reach
        return None
    return int(math.floor(bound + 1e-12))  # equality is realisable (rank-deficient)


def samples(network: Network | None = None, *, min_samples: int = 2, max_samples: int = 64) -> SearchStrategy[int]:
    """Batch sizes T in [max(min_samples, what the network needs), max_samples].

    Every drawn T is one that both the sampler and :func:`meanfield.predict` accept for the network:
    the sampler's batch norm needs T >= 3 (its mean-only form T >= 2), and the theory's expected
    Gram with a full batch norm needs T >= 4, or T >= 6 for s with a full batch norm on the output
    (:func:`meanfield.theory.recursions.min_samples_for`). Examples shrink toward the smallest valid T.

    Args:
        network: the network the batch is for, or None.
        min_samples, max_samples: bounds on T.

    Returns:
        A strategy drawing ints.

    Raises:
        InvalidArgument: bounds in the wrong order, or max_samples below what the network needs.

    Example:
        >>> from hypothesis import find
        >>> find(samples(Network(2, "relu", 2, 0, norms=[BatchNorm("last")])), lambda T: True)
        6
        >>> find(samples(Network(3, "relu", 2, 0, norms=[BatchNorm(1)])), lambda T: True)
        4
    """
    lo = check_int("min_samples", min_samples, minimum=1)
    if network is not None:
        if not isinstance(network, Network):
            raise InvalidArgument("network", network, "a meanfield.Network or None")
        lo = max(lo, network.min_samples(), min_samples_for(network, "fisher"))
    hi = check_int("max_samples", max_samples, minimum=lo)
    most = None if network is None else _largest_realisable(network)
    if most is not None:
        if most < lo:
            raise InvalidArgument("network", network, f"input statistics realisable by at least {lo} samples",
                                  f"input_q2={network.input_q2} allows at most {most}: draw it with networks(), "
                                  "which keeps the two compatible")
        hi = min(hi, most)
    return st.integers(lo, hi)
