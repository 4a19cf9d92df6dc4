"""The train/eval/infer/resume gates in their quick form (tiny images, a few steps),
for both frameworks: the whole chain a user runs, proven on every change.
``make gates`` runs the full form."""
import pytest

from gates.run_gates import FRAMEWORKS, QUICK, run_all


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    return run_all(QUICK, str(tmp_path_factory.mktemp("gates")))


@pytest.mark.gate
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("gate", ["train", "eval", "infer", "resume", "cross_resume"])
def test_gate(summary, framework, gate):
    result = summary["gates"][framework][gate]
    assert result["passed"], result
