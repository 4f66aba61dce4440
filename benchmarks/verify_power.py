"""Power of meanfield.verify against the wrong predictions of tests/test_verify.py, over fresh seeds.

Two scenarios, each repeated over ``--repeats`` fresh seed sets (the sampled networks are shared by
the right and the wrong prediction through ``report.against``):

- kappa_2 off by 5%: L=2 ReLU (sigma_w^2 = 2, no bias), widths (128, 512), T = 16, 48 networks per
  width; the wrong prediction is meanfield.predict with kappa_2 scaled by 1.05;
- phi' index shifted: L=3 erf (sigma_w^2 = 2, sigma_b^2 = 0.2), widths (64, 256), T = 16, 32 networks
  per width; a user's leading-order conjecture for the kappa's with phi' evaluated at layer l+1's
  statistics instead of layer l's (kappa_1 -12%, kappa_2 +2.5%), against the same conjecture
  without the slip.

Prints, per scenario, the pass rate of the right prediction (should be >= 1 - alpha), the detection
rate of the wrong one (the power), and the mean z of the extrapolated error.

    python benchmarks/verify_power.py --repeats 20

A third scenario measures the claims (a prediction that includes the O(1/M) terms is tested with no
free bias) and the power they buy: ReLU L = 3 (sigma_w^2 = 2, no bias), C = 2, batch norm on the
output centre-only, T = 16, 16 networks at each of M = 128, 256, fresh seeds every repeat. The
"correct" predictions are

- the reference means: the mean of each statistic over ``--reference`` networks per width (seeds
  disjoint from the repeats'), claiming all five statistics (the ideal prediction, exact at each
  width: it measures the test, not a theory);
- meanfield.predict (mean-field, finite width) claiming m, kappa_1, kappa_2 (the reference sample shows
  how far it is from the means at these widths: printed);
- predict(finite_width="1/M") with its own claims, when that finite-width form is registered;

and each is also tested with m scaled by 1.08 and with kappa_2 scaled by 1.05 (the same claims), and
the same wrong predictions without claims (the free b/M bias every statistic had before claims). It
prints per prediction the pass rate of the correct one and the detection rates, with 95%
Clopper-Pearson intervals, and the median minimum detectable error of m and kappa_2 the reports state.

    python benchmarks/verify_power.py --scenarios claims --repeats 300 --processes 1

With the control variates (verify's default since they were added; ``meanfield.checking.controls``:
each network's statistics regressed on known-mean-0 quantities of the same network, 4 controls
here removing about 85% of the variance of m and the kappa's), 400 repeats, 1.27 s each, reference 1000
networks per width (the plain means of the same networks beside, ``control_variates=False``):

    prediction            correct passes    m x 1.08 caught   kappa_2 x 1.05 caught   median MDE(80%) m
    reference means       398/400 = 99.5%   400/400 = 100%    400/400 = 100%          2.51%
      plain means         399/400 = 99.8%   389/400 = 97.2%   238/400 = 59.5%         6.01%
    predict, mean-field   399/400 = 99.8%   400/400 = 100%    400/400 = 100%          2.51%
      plain means         399/400 = 99.8%   388/400 = 97.0%   238/400 = 59.5%         6.01%
    predict, "1/M"        399/400 = 99.8%   400/400 = 100%    400/400 = 100%          2.51%
      plain means         400/400 = 100%    387/400 = 96.8%   228/400 = 57.0%         6.02%

(95% Clopper-Pearson: 400/400 is [99.1, 100]%; 398/400 is [98.2, 99.9]%.) With the free b/M bias
(claims=()) and the control variates, m x 1.08 is caught 82-85% and kappa_2 x 1.05 27-28%, median
detectable error of m 7.2%.

Before the control variates (300 repeats, 1.4 s each on a loaded 2-core machine; reference 1000 networks per width; the
mean-field prediction is within 0.1% of the reference means of m and the kappa's here, and the 1/M
one within 0.2% of m, s and the kappa's; with claims, m, kappa_1 and kappa_2 are one test, so Holm's
family has 3 tests and each is held to 0.0033):

    prediction            correct passes   m x 1.08 caught (free bias)   kappa_2 x 1.05 caught (free bias)
    reference means       297/300 = 99.0%  291/300 = 97.0% (9.3%)        155/300 = 51.7% (3.3%)
    predict, mean-field   299/300 = 99.7%  291/300 = 97.0% (9.7%)        153/300 = 51.0% (3.7%)
    predict, "1/M"        299/300 = 99.7%  289/300 = 96.3% (9.7%)        152/300 = 50.7% (3.7%)

with median minimum detectable errors (80%) of 6.1% for m and kappa_2 (17.4% with the free bias).
A wrong m or kappa_2 alone splits the group (4 tests, level 0.0025), where the power the formula
gives (meanfield.checking.trend.minimum_detectable_error's noncentral t, with the reference spreads)
is 97.4% for m x 1.08 and 53.5% for kappa_2 x 1.05, as measured. A 5% error in kappa_2 is below what
16 networks per width can see at this false-alarm rate: its relative spread is m's
(kappa_2 = -kappa_1 / (T - 1) on every network). With ``--networks 24`` (200 repeats): correct
predictions pass 198/200, 198/200, 199/200; m x 1.08 caught 200/200 by each; kappa_2 x 1.05 caught
159/200 = 79.5% [73.2, 84.9] (the formula: 81.6%), 159/200, 156/200; median minimum detectable
error 4.75%.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import secrets
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))


def main(argv=None) -> int:
    import meanfield as mf
    import test_verify as tv
    from meanfield.checking.predictions import from_fisher

    V = importlib.import_module("meanfield.checking.verification")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--scenarios", default="kappa2,phi,claims",
                        help="comma list among kappa2 (kappa_2 +5%%), phi (phi' index shift), claims")
    parser.add_argument("--reference", type=int, default=1000,
                        help="networks per width behind the reference means of the claims scenario")
    parser.add_argument("--networks", type=int, default=16, help="networks per width of the claims scenario")
    args = parser.parse_args(argv)
    chosen = set(args.scenarios.split(","))
    if "claims" in chosen:
        claims_scenario(args.repeats, args.reference, args.processes, args.networks)
    if not chosen & {"kappa2", "phi"}:
        return 0

    relu = mf.Network(2, "relu", 2, 0)

    def kappa2_high(width, samples):
        stats = from_fisher(mf.predict(relu, width, samples), width, samples, relu)
        return dict(stats, kappa2=1.05 * stats["kappa2"])

    erf = mf.Network(3, "erf", 2, 0.2)
    scenarios = [
        ("kappa_2 +5%", relu, (128, 512), 48, None, kappa2_high, "kappa2"),
        ("phi' index shift", erf, (64, 256), 32, tv._kappas(erf, False), tv._kappas(erf, True), "kappa1"),
    ]
    scenarios = [sc for sc, key in zip(scenarios, ("kappa2", "phi")) if key in chosen]
    for name, net, widths, n, right, wrong, key in scenarios:
        start = time.perf_counter()
        passed, caught, z = 0, 0, []
        for _ in range(args.repeats):
            base = secrets.randbelow(2**31)
            report = V.verify(net, widths=widths, samples=16, seeds=range(base, base + n), prediction=right,
                              processes=args.processes, progress=False)
            passed += report.passed
            bad = report.against(wrong)
            caught += not bad.passed
            z.append(bad[key].extrapolated / bad[key].extrapolated_se)
        seconds = (time.perf_counter() - start) / args.repeats
        print(f"{name}: {net.describe()}, widths {widths}, N={n}: right prediction passed {passed}/{args.repeats}; "
              f"wrong one caught {caught}/{args.repeats}; z of the extrapolated {key} error "
              f"{np.mean(z):.1f} +- {np.std(z):.1f}; {seconds:.1f} s per repeat", flush=True)
    return 0


def _rate(k: int, n: int) -> str:
    """k/n as a percentage with its 95% Clopper-Pearson interval."""
    from scipy import stats

    lo = stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0
    hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def claims_scenario(repeats: int, reference: int, processes: int, networks: int = 16) -> None:
    import meanfield as mf
    from meanfield.checking.predictions import CLAIM_KEY, STATISTICS, from_fisher
    from meanfield.theory.fisher import finite_width_choices

    V = importlib.import_module("meanfield.checking.verification")
    net = mf.Network(3, "relu", 2, 0, outputs=2, norms=[mf.BatchNorm("last", center_only=True)])
    widths, T, N = (128, 256), 16, networks
    start = time.perf_counter()
    # reference means over seeds 10^9.. (the repeats draw theirs below 2^31 - 10^5, far from these
    # after network_seed's mixing; disjoint as seed numbers)
    means, sds = {}, {}
    for w in widths:
        run = [V.network_seed(10**9 + i, w) for i in range(reference)]
        values = mf.sample_many(net, w, T, run, processes=processes, progress=False).values
        means[w] = {k: float(np.mean(values[k])) for k in STATISTICS if k in values}
        sds[w] = {k: float(np.std(values[k], ddof=1)) for k in STATISTICS if k in values}
    print(f"claims scenario: {net.describe()}, T={T}, N={N} per width at M={widths}; reference means over "
          f"{reference} networks per width ({time.perf_counter() - start:.0f} s)", flush=True)
    for w in widths:
        theory = from_fisher(mf.predict(net, w, T), w, T, net)
        print(f"  M={w}: " + "; ".join(
            f"{k} ref {means[w][k]:.5g} (N={N} se {100 * sds[w][k] / abs(means[w][k]) / np.sqrt(N):.2f}%), "
            f"mean-field {100 * (theory[k] / means[w][k] - 1):+.2f}% +- "
            f"{100 * sds[w][k] / abs(means[w][k]) / np.sqrt(reference):.2f}%"
            for k in ("m", "s", "kappa1", "kappa2") if k in theory), flush=True)

    def reference_means(width, samples):
        return {**means[width], CLAIM_KEY: set(STATISTICS)}

    def mean_field(width, samples):
        out = from_fisher(mf.predict(net, width, samples), width, samples, net)
        out[CLAIM_KEY] = {"m", "kappa1", "kappa2"}
        return out

    predictions = [("reference means (claims all five)", reference_means),
                   ("meanfield.predict (claims m, kappa_1, kappa_2)", mean_field)]
    if "1/M" in finite_width_choices():

        def one_over_m(width, samples):
            return from_fisher(mf.predict(net, width, samples, finite_width="1/M"), width, samples, net)

        predictions.append(("predict(finite_width='1/M') (its own claims)", one_over_m))
    else:
        print("  predict(finite_width='1/M') is not registered: not measured", flush=True)

    # every prediction is deterministic: read it once per width
    cached = []
    for name, fn in predictions:
        table = {w: fn(w, T) for w in widths}
        cached.append((name, lambda width, samples, table=table: table[width]))
        print(f"  {name} against the reference means (+- their se): " + "; ".join(
            f"M={w} " + ", ".join(f"{k} {100 * (table[w][k] / means[w][k] - 1):+.2f}% +- "
                                  f"{100 * sds[w][k] / abs(means[w][k]) / np.sqrt(reference):.2f}%"
                                  for k in ("m", "s", "kappa1", "kappa2") if k in table[w])
            for w in widths), flush=True)
    predictions = cached

    def scaled(fn, key, factor):
        def wrong(width, samples):
            out = dict(fn(width, samples))
            out[key] = factor * out[key]
            return out
        return wrong

    counts = {name: {"pass": 0, "m": 0, "kappa2": 0, "free m": 0, "free kappa2": 0, "mde m": [], "mde kappa2": [],
                     "mde free m": [], "plain pass": 0, "plain m": 0, "plain kappa2": 0, "plain mde m": []}
              for name, _ in predictions}
    start = time.perf_counter()
    for done in range(repeats):
        if done and done % 25 == 0:
            print(f"  [{done} repeats, {time.perf_counter() - start:.0f} s]", flush=True)
        base = secrets.randbelow(2**31 - 10**5)
        report = V.verify(net, widths=widths, samples=T, seeds=range(base, base + N), prediction=predictions[0][1],
                          processes=processes, progress=False)
        # the same networks without the control variates (verify(..., control_variates=False))
        plain = dataclasses.replace(report, controls=None)
        for name, fn in predictions:
            right = report.against(fn)
            c = counts[name]
            c["pass"] += right.passed
            c["mde m"].append(right["m"].detectable)
            c["mde kappa2"].append(right["kappa2"].detectable)
            c["m"] += not report.against(scaled(fn, "m", 1.08)).passed
            c["kappa2"] += not report.against(scaled(fn, "kappa2", 1.05)).passed
            # the same wrong predictions without claims: the free b/M bias of before
            free_m = report.against(scaled(fn, "m", 1.08), claims=())
            c["free m"] += not free_m.passed
            c["mde free m"].append(free_m["m"].detectable)
            c["free kappa2"] += not report.against(scaled(fn, "kappa2", 1.05), claims=()).passed
            right_plain = plain.against(fn)
            c["plain pass"] += right_plain.passed
            c["plain mde m"].append(right_plain["m"].detectable)
            c["plain m"] += not plain.against(scaled(fn, "m", 1.08)).passed
            c["plain kappa2"] += not plain.against(scaled(fn, "kappa2", 1.05)).passed
    seconds = (time.perf_counter() - start) / max(repeats, 1)
    for name, _ in predictions:
        c = counts[name]
        print(f"  {name}, {repeats} repeats ({seconds:.2f} s each):\n"
              f"    correct passes        {_rate(c['pass'], repeats)} (false alarms {_rate(repeats - c['pass'], repeats)})\n"
              f"    m x 1.08 caught       {_rate(c['m'], repeats)}   (free b/M bias: {_rate(c['free m'], repeats)})\n"
              f"    kappa_2 x 1.05 caught {_rate(c['kappa2'], repeats)}   (free b/M bias: {_rate(c['free kappa2'], repeats)})\n"
              f"    median MDE(80%) m {100 * np.median(c['mde m']):.2f}%, kappa_2 {100 * np.median(c['mde kappa2']):.2f}%"
              f" (free b/M bias: m {100 * np.median(c['mde free m']):.2f}%)\n"
              f"    without control variates: correct passes {_rate(c['plain pass'], repeats)}, m x 1.08 caught "
              f"{_rate(c['plain m'], repeats)}, kappa_2 x 1.05 caught {_rate(c['plain kappa2'], repeats)}, median MDE(80%) m "
              f"{100 * np.median(c['plain mde m']):.2f}%", flush=True)


if __name__ == "__main__":
    sys.exit(main())
