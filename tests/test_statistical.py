"""The statistical tier: theory versus sampled networks, over architectures drawn by meanfield.strategies.

Every case is a network drawn by :func:`meanfield.strategies.networks` for one (activation family,
normalization placement) pair; the cases cycle through all 12 families of
:data:`~meanfield.strategies.ACTIVATION_FAMILIES` and all placements (none, batch norm on the output,
its mean-only form, batch norm on a hidden layer and its mean-only form, layer norm, batch norm and
layer norm on every hidden layer, and two combinations), so each family meets two or three placements
and each placement several families. :func:`meanfield.verify` must pass for each, against two
predictions (:data:`PREDICTIONS`): the mean-field one (``meanfield.predict``, every statistic with a
free b/M bias) and the "1/M" one (``predict(..., finite_width="1/M")``: the statistics its
``includes_1_over_M`` names are tested with no bias at each width, the rest keep the free b/M bias of
the term it declares missing, so a case where it corrects nothing is tested like the mean-field
one). Both test the same sampled networks: the 1/M test is ``report.against("1/M")`` of the
mean-field report (no second sampling), whatever ``includes_1_over_M`` says on the day.

False-alarm rate: the tier as a whole is one test at 1%: each of the 2 x CASES (prediction, case)
tests runs at alpha = 1% / (2 CASES) (Bonferroni over cases and both predictions; within a test
verify's Holm correction covers the five statistics), so a correct theory fails the tier with
probability <= 1%. Bonferroni is valid under any dependence; the two tests of a case share their
networks and, where the 1/M model corrects nothing, are the same test, so the tier's true rate is
below 1%, at the price of a level half as large per test (the minimum detectable error grows by
~4%: z_{1-alpha/2} + z_{0.8} = 4.55 instead of 4.37 for a two-sided test of one statistic). (At verify's
default alpha = 1% per test, 48 tests would give a false alarm in ~40% of fresh runs; the observed
per-case rate over >= 200 fresh correct cases is measured by ``benchmarks/false_alarm.py`` and
recorded in the project notes.) Power: the report of every test gives each statistic's minimum
detectable error at 80% power (``detectable_error``); ``benchmarks/verify_power.py`` measures it.

Reproducibility (marker ``statistical``): the networks come from a derandomized hypothesis run (the
same draws on every machine with this hypothesis version), picked with a seeded choice, and the
sampling seeds are fixed, so the outcome is deterministic. Marker ``fresh``
(``pytest -m fresh --fresh``) runs the same cases with fresh networks and seeds.

Sizes: widths (64, 256), T = 16, 16 networks per width, depth <= 3, C <= 2: about 2 minutes on 2
cores for the sampling; the 24 1/M tests sample nothing and add their predictions (the layer-norm
and output batch-norm terms, up to ~4 s per width): 40 s against 122 s for the 24 mean-field tests,
measured together on a loaded 2-core machine with one sampling process. With full batch norm on the
output T = 32: every Gram entry of output k then carries 1/sigma_k^2 with sigma_k^2 ~ chi^2_{T-1},
whose skewness makes the t approximation optimistic (s has infinite kurtosis for T <= 17); T = 32 reduces, but does not
remove, the excess false-alarm rate (see the notes and meanfield.verify's docstring).
"""

import functools
import importlib
import os
import random
import secrets
import zlib

import pytest
from hypothesis import HealthCheck, Phase, given, settings

import meanfield as mf
from meanfield import strategies as mfst

V = importlib.import_module("meanfield.checking.verification")

WIDTHS = (64, 256)
SAMPLES = 16
SEEDS = 16
MAX_DEPTH = 3

# placement patterns: names of mfst.PLACEMENTS, or a pair = a combination on one network
PATTERNS = ("none", "batch-last", "batch-center-last", "batch-hidden", "batch-center-hidden", "layer",
            "batch-every", "layer-every", ("layer", "batch-last"), ("batch-hidden", "batch-center-last"))
FAMILIES = mfst.ACTIVATION_FAMILIES
CASES = 2 * len(FAMILIES)  # 24: every family twice, every pattern two or three times
TIER_ALPHA = 0.01           # false-alarm rate of the whole tier
PREDICTIONS = (None, "1/M")  # verify's prediction argument: mean field, and the derived 1/M terms
TEST_ALPHA = TIER_ALPHA / (len(PREDICTIONS) * CASES)  # Bonferroni over (prediction, case)


def _strategy(family, pattern):
    kinds = pattern if isinstance(pattern, tuple) else (pattern,)
    hidden = any(k not in ("none", "batch-last", "batch-center-last") for k in kinds)
    # A depth-1 network with full batch norm on the output makes m and s sums of C inverse
    # chi-squares and nothing else: the t approximation fails there (4 false alarms in 22 correct
    # cases at nominal 1%, benchmarks/false_alarm.py), so the tier draws such placements at depth >= 2
    # (where 0 of 80 failed). It is a limit of the test's normal approximation, not of the theory:
    # the failing depth-1 networks agree with the prediction when re-run with 400 seeds.
    shallowest = 2 if "batch-last" in kinds else 1
    return mfst.networks(min_depth=3 if len(kinds) > 1 or "every" in kinds[0] else (2 if hidden else shallowest),
                         max_depth=MAX_DEPTH, activations=mfst.activations([family]), max_outputs=2,
                         norms=kinds)


@functools.lru_cache(maxsize=None)
def _drawn(family, pattern):
    """The derandomized draw of a case, once per session (several tests use it)."""
    return _draw(family, pattern)


def _draw(family, pattern, fresh=False, draws=60):
    """A network for (family, pattern): one of ``draws`` hypothesis draws, picked by a seeded choice.

    Hypothesis starts with the simplest networks (depth 1, sigma_b^2 = 0, C = 1) and varies more
    later, so the pick skips the first ten draws. A combination pattern keeps only draws with both
    placements (the strategy may draw either subset of its allowed placements).
    """
    drawn = []
    want = len(pattern) if isinstance(pattern, tuple) else 1

    @settings(max_examples=draws, derandomize=not fresh, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(_strategy(family, pattern))
    def collect(net):
        if pattern == "none" or len(net.norms) >= want:
            drawn.append(net)

    collect()
    if fresh and len(drawn) <= 10:  # a combination pattern drew too few networks with both placements
        return _draw(family, pattern, fresh=True, draws=2 * draws)
    assert len(drawn) > 10, (family, pattern)
    chooser = random.Random() if fresh else random.Random(zlib.crc32(_label((family, pattern)).encode()))
    return chooser.choice(drawn[10:])


def cases():
    return [(FAMILIES[i % len(FAMILIES)], PATTERNS[i % len(PATTERNS)]) for i in range(CASES)]


def samples_for(net):
    """T for this network: 32 with full batch norm on the output, else 16."""
    output = net.norm_at(net.depth)
    return 2 * SAMPLES if isinstance(output, mf.BatchNorm) and not output.center_only else SAMPLES


def _sampled(net, seeds):
    """The mean-field report of ``net`` on ``seeds``: the sampled networks both predictions are tested on."""
    return V.verify(net, widths=WIDTHS, samples=samples_for(net), seeds=seeds, progress=False, alpha=TEST_ALPHA,
                    processes=int(os.environ.get("MEANFIELD_PROCESSES", "2")))


@functools.lru_cache(maxsize=None)
def _sampled_case(case):
    """The fixed-seed mean-field report of a case, once per session (both predictions use its samples)."""
    return _sampled(_drawn(*case), tuple(range(SEEDS)))


_FRESH = {}


def _sampled_fresh(case):
    """A fresh network and fresh seeds for a case, once per session (both predictions use its samples)."""
    if case not in _FRESH:
        net = _draw(*case, fresh=True)
        base = secrets.randbelow(2**31)
        print(f"fresh seeds {base}..{base + SEEDS - 1} for {net.describe()}")
        _FRESH[case] = _sampled(net, tuple(range(base, base + SEEDS)))
    return _FRESH[case]


def _check(report, prediction):
    """Assert that the sampled networks of ``report`` agree with ``prediction`` (None: the report's own)."""
    if prediction is not None:
        report = report.against(prediction)
    assert report.alpha == TEST_ALPHA
    assert report.passed, "\n" + str(report)
    return report


def _label(case):
    family, pattern = case
    return f"{family}-{'+'.join(pattern) if isinstance(pattern, tuple) else pattern}"


def test_cases_cover_every_family_and_placement():
    chosen = cases()
    assert {f for f, _ in chosen} == set(FAMILIES)
    placements = {k for _, p in chosen for k in (p if isinstance(p, tuple) else (p,))}
    assert placements == set(mfst.PLACEMENTS)


@pytest.mark.statistical
@pytest.mark.parametrize("case", cases(), ids=_label)
def test_prediction_agrees_with_sampled_networks(case):
    _check(_sampled_case(case), None)


@pytest.mark.statistical
@pytest.mark.parametrize("case", cases(), ids=_label)
def test_1_over_M_prediction_agrees_with_sampled_networks(case):
    # the statistics includes_1_over_M names: no bias at any width; the others: the free b/M bias
    _check(_sampled_case(case), "1/M")


@pytest.mark.statistical
@pytest.mark.fresh
@pytest.mark.parametrize("case", cases(), ids=_label)
def test_prediction_agrees_with_sampled_networks_fresh(case):
    _check(_sampled_fresh(case), None)


@pytest.mark.statistical
@pytest.mark.fresh
@pytest.mark.parametrize("case", cases(), ids=_label)
def test_1_over_M_prediction_agrees_with_sampled_networks_fresh(case):
    _check(_sampled_fresh(case), "1/M")


def test_drawn_cases_are_valid_for_the_sizes():
    for family, pattern in cases():
        net = _drawn(family, pattern)
        assert net.min_samples() <= SAMPLES and net.depth <= MAX_DEPTH
        for w in WIDTHS:
            net.widths(w)
        assert all(a.family == family for a in net.activation)

