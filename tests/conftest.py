"""Test configuration: hypothesis profiles and the fresh-randomness switch.

CI (the ``CI`` environment variable is set) uses the ``ci`` profile: derandomized, a bounded number
of examples, no deadline, so a run is reproducible and its time is bounded. Locally the ``dev``
profile explores more. ``HYPOTHESIS_PROFILE`` overrides either.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=25, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_configure(config):
    # the tables of Gaussian integrals a test run builds go to a folder of its own, not the user's cache:
    # every run starts from the same (empty) state
    if "MEANFIELD_CACHE" not in os.environ:
        import shutil
        import tempfile

        folder = os.environ["MEANFIELD_CACHE"] = tempfile.mkdtemp(prefix="meanfield-test-cache-")
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def pytest_addoption(parser):
    parser.addoption("--fresh", action="store_true", default=False,
                     help="run the statistical tests with fresh random seeds (marker 'fresh')")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--fresh"):
        return
    skip = pytest.mark.skip(reason="fresh-randomness run: use --fresh")
    for item in items:
        if "fresh" in item.keywords:
            item.add_marker(skip)
