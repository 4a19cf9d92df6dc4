"""Real-size parity (minutes each; runs only when asked: `pytest -m slow` or
`--run-slow`): r18vd at 640 (eval, training forward and backward, 10 optimizer steps)
in both verdicts, r50vd eval at 640 in float32. Reports under reports/parity/."""
import pytest

from parity.cases import Case, run_case

R18 = "configs/rtdetr/rtdetr_r18vd_6x_coco.yml"
R50 = "configs/rtdetr/rtdetr_r50vd_6x_coco.yml"
TARGETS = [{"labels": [1, 7, 30], "boxes": [[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.4, 0.5], [0.5, 0.5, 0.9, 0.9]]},
           {"labels": [2, 2, 50, 11, 79], "boxes": [[0.2, 0.2, 0.1, 0.1]] * 2 + [[0.8, 0.5, 0.4, 0.9],
                                                     [0.5, 0.05, 0.3, 0.1], [0.5, 0.5, 0.01, 0.01]]}]


def check(case, parity_report):
    results, extra = run_case(case)
    parity_report(results, case, drift=extra.get("drift"))
    failed = [f"{r.name}: {r.note}" for r in results if r.verdict == "fail"]
    assert not failed, failed[:10]
    if case.dtype == "float64":
        assert all(r.verdict == "pass" for r in results)
    return results


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("config,dtype", [(R18, "float32"), (R18, "float64"), (R50, "float32")],
                         ids=["r18vd-float32", "r18vd-float64", "r50vd-float32"])
def test_eval_640(config, dtype, parity_report):
    check(Case(config, mode="eval", dtype=dtype, height=640, width=640, batch=1), parity_report)


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("dtype,batch", [("float32", 2), ("float64", 1)])
def test_r18vd_training_forward_and_backward_640(dtype, batch, parity_report):
    check(Case(R18, mode="train", dtype=dtype, height=640, width=640, batch=batch, targets=TARGETS[:batch],
               force_matcher=True), parity_report)


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_r18vd_ten_optimizer_steps_640(dtype, parity_report):
    check(Case(R18, mode="steps", dtype=dtype, height=640, width=640, batch=2, targets=TARGETS, steps=10),
          parity_report)
