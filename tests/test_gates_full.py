"""The gates in their full form (``make gates``: ``pytest -m "gate and slow"``): one test
per gate and framework, with ``reports/gates/summary.{json,md}`` written on the way.
Progress lines (gate, epoch, step, ETA) are shown while pytest runs."""
import os

import pytest

from gates.checks import report
from gates.run_gates import FRAMEWORKS, FULL, GATES, ROOT, run_all

pytestmark = [pytest.mark.gate, pytest.mark.slow]


@pytest.fixture(scope="module")
def summary(request):
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return run_all(FULL, os.path.join(ROOT, "reports", "gates"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("gate", GATES + ("official", "distributed"))
def test_gate(summary, framework, gate):
    result = summary["gates"][framework][gate]
    assert result["passed"], report(result)
