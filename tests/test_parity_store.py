"""Captures on disk: a saved run is judged again offline, with the same verdicts as the
live comparison, and a different tolerance file changes them without rerunning a model."""
import pytest
import yaml

from parity import store
from parity.cases import Case, pair_for
from parity.run import compare, judge_run
from parity.tolerances import load_registry

CONFIG = "configs/synthetic/rtdetr_r18vd_small_synthetic.yml"


def _verdicts(results):
    return {r.name: (r.verdict, r.metrics.get("tol_ratio")) for r in results}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    case = Case(CONFIG, mode="train", dtype="float32", height=64, width=96, batch=2, seed=1,
                targets=[{"labels": [1, 2], "boxes": [[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.5, 0.4]]},
                         {"labels": [0], "boxes": [[0.5, 0.5, 0.9, 0.9]]}])
    directory = str(tmp_path_factory.mktemp("captures"))
    results = compare(pair_for(case), case.mode, case.images(), case.numpy_targets(), noise_seed=case.seed,
                      directory=directory)
    return directory, results


@pytest.mark.parity
def test_saved_run_judges_as_the_live_comparison(saved_run):
    directory, live = saved_run
    info = store.read_run(directory)
    assert info["mode"] == "train" and info["dtype"] == "float32"
    assert [p["floor"] for p in info["passes"]] == ["floor"], "a float32 run saves the reference's noise floor"
    again = judge_run(directory, load_registry(dtype="float32"))
    assert _verdicts(again) == _verdicts(live)
    assert any(r.name.startswith("grad:") for r in again) and any(r.name.startswith("loss:") for r in again)


@pytest.mark.parity
def test_another_tolerance_file_changes_the_verdict_offline(saved_run, tmp_path):
    """Zero tolerance for every float tensor: float32 rounding differences now fail.
    Nothing is rerun: the captures on disk are judged under the new file."""
    directory, live = saved_run
    assert not [r.name for r in live if r.verdict == "fail"]
    strict = {"float64": [], "float32": [{"pattern": "*", "atol": 0.0, "rtol": 0.0,
                                          "reason": "test: any difference fails"}]}
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(strict))
    rejudged = judge_run(directory, load_registry(str(path), dtype="float32"))
    failed = [r.name for r in rejudged if r.verdict == "fail"]
    assert len(failed) > len(rejudged) // 4, f"only {len(failed)} of {len(rejudged)} failed under zero tolerance"


@pytest.mark.parity
def test_stored_records_read_back_what_was_captured(tmp_path):
    import numpy as np

    from parity.capture import Capture, Record
    cap = Capture(records=[Record("a", np.arange(6.0).reshape(2, 3), "m", "module"),
                           Record("grad:w", np.array(np.nan, np.float32), "grad:w", "no-gradient"),
                           Record("probe:decoder.topk_ind", np.array([[3, 1]], np.int64), "decoder", "probe")])
    store.save_capture(str(tmp_path), "x", cap)
    back = store.load_capture(str(tmp_path), "x")
    assert [(r.name, r.module, r.kind) for r in back.records] == [(r.name, r.module, r.kind) for r in cap.records]
    for a, b in zip(cap.records, back.records):
        np.testing.assert_array_equal(a.value, b.value)
        assert a.value.dtype == b.value.dtype
