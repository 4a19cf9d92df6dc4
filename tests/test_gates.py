"""The gates in their quick form (64 px, a few steps on the committed fixture) for both
frameworks, run by ``make test``; and the acceptance tests that show each kind of gate
fails when training or resuming is broken. ``tests/test_gates_full.py`` runs the full form."""
import json
import os
import shutil

import pytest

from gates.checks import check, report, verdict
from gates.infer_content import infer_problems
from gates.run_gates import (FIXTURE_DATA, FRAMEWORKS, GATES, QUICK, continue_run, engine_class,
                             gate_train_fixed_batch, judge_cross_resume, run_all)
from rtdetr_common.checkpoint_io import read_checkpoint

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def quick(module_folder):
    """``(output folder, summary)`` of one quick run of every gate."""
    return module_folder, run_all(QUICK, module_folder)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("gate", GATES)
def test_gate(quick, framework, gate):
    result = quick[1]["gates"][framework][gate]
    assert result["passed"], report(result)


def test_failure_report_names_the_threshold_and_the_margin():
    result = verdict({}, [check("loss_drop", 0.02, ">=", 0.10), check("detections", 3, ">=", 1)])
    assert not result["passed"]
    assert report(result) == "loss_drop = 0.02 (needs >= 0.1; off by 0.08)"


def failed_checks(result):
    return [c["name"] for c in result["checks"] if not c["passed"]]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_train_gate_fails_at_learning_rate_zero(framework, tmp_path):
    result = gate_train_fixed_batch(framework, QUICK, FIXTURE_DATA, str(tmp_path), overrides={"optimizer": {"lr": 0.0}})
    assert failed_checks(result) == ["loss_drop"]
    assert not result["passed"]


def _weights(run_dir):
    return read_checkpoint(os.path.join(run_dir, "last.ckpt"))["model"]


def test_cross_resume_gate_fails_when_resumed_at_the_wrong_step(quick, monkeypatch, tmp_path):
    """Jittor's half-way checkpoint continued in PyTorch, whose resume reports one step
    too few, so it trains one step more than the same-framework continuation."""
    base = os.path.join(quick[0], "jittor", "cross_resume")
    engine = engine_class("pytorch")
    resume = engine.resume

    def resume_one_step_early(self, path):
        ckpt = resume(self, path)
        return {**ckpt, "step": ckpt["step"] - 1}

    monkeypatch.setattr(engine, "resume", resume_one_step_early)
    continue_run("pytorch", QUICK, FIXTURE_DATA, str(tmp_path / "continued"), os.path.join(base, "half"))
    result = judge_cross_resume(_weights(os.path.join(base, "own")), _weights(os.path.join(base, "own_ulp")),
                                _weights(str(tmp_path / "continued")))
    assert failed_checks(result) == ["l2_weight_distance_vs_same_framework"]


@pytest.mark.parametrize("corrupt, problem", [
    (lambda det: det.update(box_xyxy=[-5.0, 0.0, 10.0, 10.0]), "not inside"),
    (lambda det: det.update(name="dog"), "named 'dog'"),
    (lambda det: det.update(score=0.001), "outside [0.05, 1]"),
    (lambda det: det.update(extra=1), "keys"),
])
def test_infer_content_check_finds_corrupted_detections(quick, tmp_path, corrupt, problem):
    out = str(tmp_path / "infer")
    shutil.copytree(os.path.join(quick[0], "pytorch", "infer"), out)
    path = os.path.join(out, "detections.json")
    with open(path) as f:
        results = json.load(f)
    names = {d["label"]: d["name"] for dets in results.values() for d in dets}
    corrupt(results["chelsea.jpg"][-1])
    with open(path, "w") as f:
        json.dump(results, f)
    problems = infer_problems(out, os.path.join(out, "images"), QUICK["score_threshold"], names)
    assert len(problems) == 1 and problem in problems[0], problems
