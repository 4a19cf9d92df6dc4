"""Trained weights in the parity suite (``parity.trained``): the cache that keeps new
clones from retraining, and the float32 comparisons on trained weights.

The eval comparison (user-data path on the synthetic val images) is in the fast suite;
it needs the trained fixture, which ``trained_weights()`` trains once per machine
(~2-3 minutes, then cached under ~/.cache/rtdetr/trained/). Training forward and
backward and optimizer steps on trained weights, and the trained-vs-random study, are slow.
"""
import json
import os

import pytest

from parity import trained


@pytest.fixture
def fake_training(tmp_path, monkeypatch):
    """``parity.trained`` with its cache and fixture folders under tmp_path and a
    stand-in for the training that counts its calls."""
    calls = []

    def build(path, recipe=None):
        calls.append(path)
        with open(path, "w") as f:
            f.write("weights")
        with open(path + ".json", "w") as f:
            json.dump({"recipe": trained.RECIPE, "minutes": 0, "evaluations": []}, f)
        return path

    monkeypatch.setattr(trained, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(trained, "FIXTURE_DIR", str(tmp_path / "clone" / "fixtures" / "trained"))
    monkeypatch.setattr(trained, "build", build)
    return calls


def test_trains_once_then_reuses_the_fixture_then_the_machine_cache(fake_training, tmp_path):
    first = trained.trained_weights()
    assert len(fake_training) == 1 and fake_training[0].startswith(str(tmp_path / "cache"))
    assert first.startswith(trained.FIXTURE_DIR) and open(first).read() == "weights"
    assert os.path.isfile(first + ".json")
    assert trained.trained_weights() == first and len(fake_training) == 1
    os.remove(first)  # a new clone: no fixture, the machine's cache holds the weights
    assert trained.trained_weights() == first and len(fake_training) == 1
    assert trained.trained_weights(rebuild=True) == first and len(fake_training) == 2
    stale = os.path.join(trained.FIXTURE_DIR, "rtdetr_r18vd_small_synthetic-128steps-000000000000.pkl")
    open(stale, "w").close()  # weights of earlier code in this clone
    os.remove(first)
    assert trained.trained_weights() == first and not os.path.exists(stale)


def test_cache_key_follows_config_recipe_and_training_code(tmp_path, monkeypatch):
    key = trained.cache_key()
    assert key == trained.cache_key() and len(key) == 12
    assert trained.cache_key(recipe={**trained.RECIPE, "steps": 129}) != key
    assert trained.cache_key(config="configs/synthetic/rtdetr_r18vd_synthetic.yml") != key
    source = tmp_path / "engine.py"
    source.write_text("step = 1\n")
    monkeypatch.setattr(trained, "_TRAINING_SOURCES", (str(source),))
    before = trained.cache_key()
    source.write_text("step = 2\n")
    assert trained.cache_key() != before


@pytest.mark.parity
def test_eval_on_trained_weights_synthetic_val(parity_index):
    """The user-data path on trained weights: every image judged under the trained rules,
    detections matched, and both frameworks' COCO AP equal on the 16 synthetic val images."""
    from parity.__main__ import main
    from parity.user_report import user_index_entry
    weights = trained.trained_weights()
    run = "trained_eval_synthetic_val"
    status = main(["compare", "-c", os.path.relpath(trained.CONFIG, trained.ROOT), "--weights", weights,
                   "--images", "fixtures/synthetic_coco", "--out", "reports", "--run", run])
    run_dir = os.path.join("reports", "parity", run)
    with open(os.path.join(run_dir, "summary.json")) as f:
        report = json.load(f)
    parity_index(user_index_entry(report, f"{run}/report.md"))
    assert status == 0 and report["verdict"] == "PASS", report["totals"]
    totals, coco = report["totals"], report["coco"]
    assert totals["images"] == 16 and totals["not_judgeable"] == 0 and totals["failed"] == 0
    assert totals["matched"] == totals["detections_reference"] == 16 * 30
    assert coco["images"] == 16 and coco["diff_points"]["AP"] <= coco["tolerance_points"]
    assert coco["reference"]["AP50"] > 0.1  # trained: measured 0.194 (random weights score ~0)
    with open(os.path.join(run_dir, "images", "000001", "report.json")) as f:
        rules = {rule["pattern"] for rule in json.load(f)["rules"]}
    assert "* [weights: trained]" in rules and "*" not in rules  # the tighter trained rules judged it


@pytest.mark.slow
@pytest.mark.parity
def test_trained_versus_random_float32(parity_index):
    """Eval, training forward and backward, and 3 optimizer steps, on trained and on random
    weights, same images: the trained runs pass under the trained rules with their forward
    fully judgeable and floors far below random weights'; the side-by-side table goes to
    reports/parity/trained_vs_random/report.md."""
    from parity.trained_vs_random import study, write_study
    from rtdetr_convert import read_state_dict
    weights = trained.trained_weights()
    figures, judged = study(trained.CONFIG, read_state_dict(weights)[0], images=2, steps=3)
    settings = {"config": os.path.relpath(trained.CONFIG, trained.ROOT), "weights": weights, "images": 2, "steps": 3}
    _, rows = write_study(figures, judged, settings)
    for row in rows:
        parity_index(row)
    for mode, results in judged["trained"].items():
        failed = [f"{r.name}: {r.note}" for r in results if r.verdict == "fail"]
        assert not failed, (mode, failed[:5])
    for mode in ("eval", "train"):
        for family in ("activations", "logits", "boxes"):
            assert figures["trained"][mode][family]["not_judgeable"] == 0, (mode, family)
    train_t, train_r = figures["trained"]["train"], figures["random"]["train"]
    assert train_t["activations"]["max_floor_over_scale"] * 5 < train_r["activations"]["max_floor_over_scale"]
    assert train_t["logits"]["max_floor_over_scale"] * 5 < train_r["logits"]["max_floor_over_scale"]
    assert train_r["gradients"]["not_judgeable"] == train_r["gradients"]["tensors"]  # random: chaotic
    assert train_t["gradients"]["not_judgeable"] < train_t["gradients"]["tensors"] / 10
