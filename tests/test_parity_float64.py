"""The float64 logic verdict on r18vd: training forward, every loss term, every
gradient and the unforced matcher assignment, at a non-square size with duplicate,
huge and tiny boxes. In double precision no rounding flips a ReLU, a top-k or a
matching, so every tensor is held to the float64 thresholds of parity/tolerances.yaml,
gradients included; the twin's own float32-built constants (position embedding,
anchors, noised denoising boxes) are judged before the reference's are forced."""
import pytest

from parity.cases import Case, run_case

CONFIG = "configs/rtdetr/rtdetr_r18vd_6x_coco.yml"
TARGETS = [{"labels": [3, 3, 70], "boxes": [[0.5, 0.5, 0.98, 0.98], [0.5, 0.5, 0.98, 0.98], [0.02, 0.9, 0.004, 0.01]]},
           {"labels": [0, 12, 44, 79, 8], "boxes": [[0.25, 0.3, 0.5, 0.2], [0.7, 0.6, 0.2, 0.5], [0.9, 0.9, 0.2, 0.2],
                                                    [0.1, 0.5, 0.2, 0.3], [0.6, 0.2, 0.05, 0.1]]}]


@pytest.mark.parity
def test_float64_training_every_tensor_meets_the_logic_thresholds(parity_report):
    case = Case(CONFIG, mode="train", dtype="float64", height=96, width=160, batch=2, seed=0, targets=TARGETS,
                force_matcher=False)
    results, _ = run_case(case)
    parity_report(results, case)
    failed = [f"{r.name}: {r.note}" for r in results if r.verdict != "pass"]
    assert not failed, failed[:10]
    names = {r.name for r in results}
    assert sum(n.startswith("grad:") for n in names) > 300 and sum(n.startswith("loss:") for n in names) == 22
    assert {"probe:encoder.pos_embed", "probe:decoder.anchors", "probe:decoder.dn.input_query_bbox"} <= names
