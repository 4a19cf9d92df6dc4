"""Top-level pytest configuration: hypothesis profiles and shared fixtures.

Profiles (select with HYPOTHESIS_PROFILE): ``ci`` (derandomized, bounded examples,
no deadline; the default), ``dev`` (random, few examples, for quick iteration) and
``thorough`` (random, many examples).
"""
import os
import shutil
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


@pytest.fixture(scope="module")
def module_folder(tmp_path_factory):
    """A temporary folder for a module's shared runs, removed when the module ends: the
    gates' checkpoints and the data-parallel captures are gigabytes each, and pytest would
    otherwise keep them until the session ends."""
    folder = tmp_path_factory.mktemp("module")
    yield str(folder)
    shutil.rmtree(folder, ignore_errors=True)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run `slow` tests (real-size models) under a -m that does not name slow")


def pytest_collection_modifyitems(config, items):
    """`slow` tests run when asked (`-m slow`, a -m naming slow, or --run-slow), not under
    plain `pytest -m parity`."""
    if config.getoption("--run-slow") or "slow" in (config.option.markexpr or "").replace("not slow", ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


_PARITY_INDEX = []


@pytest.fixture
def parity_report(request):
    """``parity_report(results, case, expected="PASS", label=None, **details)`` writes the
    report of ``case`` (a ``parity.cases.Case``, or anything with ``config``, ``command()``
    and, without a ``label``, ``dtype``) under reports/parity/<test id>__<label or dtype>/
    and indexes it (reports/parity/index.md) with the verdict the test expects (a planted
    bug expects FAIL)."""
    from parity.index import write_test_report

    def write(results, case, expected="PASS", label=None, **details):
        return write_test_report(_PARITY_INDEX, request.node.nodeid, results, label or case.dtype,
                                 {"command": case.command(), **details}, {"path": case.config}, expected=expected)
    return write


@pytest.fixture
def parity_index():
    """``parity_index(entry)`` adds a row (``parity.index`` format, e.g. a user-data run's
    ``parity.user_report.user_index_entry``) to the session's index."""
    return _PARITY_INDEX.append


def pytest_sessionfinish(session, exitstatus):
    if _PARITY_INDEX:
        from parity.index import write_index
        path = write_index(_PARITY_INDEX)
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(f"parity reports: {path}")
