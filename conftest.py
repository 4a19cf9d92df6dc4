"""Top-level pytest configuration: hypothesis profiles and shared fixtures.

Profiles (select with HYPOTHESIS_PROFILE): ``ci`` (derandomized, bounded examples,
no deadline; the default), ``dev`` (random, few examples, for quick iteration) and
``thorough`` (random, many examples).
"""
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", derandomize=True, max_examples=10, deadline=None,
                          suppress_health_check=_SLOW_OK, print_blob=True)
settings.register_profile("dev", max_examples=5, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def np_rng():
    """A fresh, seeded NumPy generator per test."""
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def repo_root():
    return ROOT
