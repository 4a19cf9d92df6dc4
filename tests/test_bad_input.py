"""Bad input at every entry point ends in the project's own error, one line, or is
skipped and counted; nothing turns into NaN and nothing is written after a failure.

- Targets: ``validate_targets`` refuses labels outside ``[0, num_classes)``, non-finite
  or malformed boxes, and both twins' ``Engine.train_step`` refuse them with the same
  ``TargetError`` and message, weights untouched (the Jittor twin used to read its
  class embedding out of range and return NaN boxes).
- Non-finite values: a NaN weight or an infinite loss weight stops the step with
  ``NonFiniteLossError`` naming the loss terms (or the outputs), weights untouched;
  the training loop adds the step and the last good checkpoint, and writes nothing
  after it (log and checkpoint byte-identical).
- Annotation files: not JSON, missing keys, wrong types, repeated ids fail with
  ``AnnotationError`` naming the file and the entry.
- Infer: an unreadable image is reported once (file, reason) and skipped; the summary
  counts it and the tool exits 3; with nothing readable it exits 2 with one line.
"""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from rtdetr_common import cli
from rtdetr_common.checkpoint_io import save_atomic
from rtdetr_common.data import CocoDetection
from rtdetr_common.data.coco_api import load_coco
from rtdetr_common.errors import AnnotationError, InputError, NonFiniteLossError, TargetError
from rtdetr_common.loops import train
from rtdetr_common.validation import check_finite_loss, validate_targets
from tests.tiny import CFG, SIZE, TINY_OVERRIDES, engine_class, make_tiny_coco, train_args

FRAMEWORKS = ("pytorch", "jittor")
BOXES = np.array([[0.5, 0.5, 0.2, 0.3], [0.3, 0.3, 0.1, 0.1]], np.float32)


def target(labels=(1, 2), boxes=BOXES):
    return {"labels": np.asarray(labels, np.int64), "boxes": np.asarray(boxes)}


# --- validate_targets ---------------------------------------------------------------------

@pytest.mark.parametrize("targets,match", [
    ([target(labels=(1, 4))], r"targets\[0\]\['labels'\]\[1\] = 4 is outside \[0, num_classes=4\)"),
    ([target(), target(labels=(-1, 0))], r"targets\[1\]\['labels'\]\[0\] = -1 is outside"),
    ([{"labels": np.array([1.0, 2.0]), "boxes": BOXES}], "integer class ids"),
    ([target(boxes=BOXES[:1])], r"numeric \(2, 4\) array"),
    ([target(boxes=[[0.5, np.nan, 0.2, 0.3], [0.3, 0.3, 0.1, 0.1]])], r"\['boxes'\]\[0\] .* is not finite"),
    ([target(boxes=[[0.5, 0.5, 0.2, 0.3], [30, 30, 10, 10]])], r"\['boxes'\]\[1\] .* is not normalized cxcywh"),
    ([target(boxes=[[0.5, 0.5, -0.2, 0.3], [0.3, 0.3, 0.1, 0.1]])], "is not normalized cxcywh"),
    ([{"labels": np.array([1])}], "must be a dict with 'labels' and 'boxes'"),
    ({"labels": np.array([1]), "boxes": BOXES[:1]}, "one dict per image"),
])
def test_bad_targets_are_refused_with_one_line_naming_the_entry(targets, match):
    with pytest.raises(TargetError, match=match) as err:
        validate_targets(targets, num_classes=4)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)


def test_good_targets_pass_in_both_box_formats():
    validate_targets([target(), target(labels=[], boxes=np.zeros((0, 4)))], num_classes=4)
    validate_targets([target(boxes=[[0, 0, 30, 40], [5, 5, 5, 6]])], num_classes=3, box_format="xyxy")
    with pytest.raises(TargetError, match="x2 >= x1"):
        validate_targets([target(boxes=[[0, 0, 30, 40], [5, 5, 4, 6]])], num_classes=3, box_format="xyxy")


# --- both twins' engines ------------------------------------------------------------------

@pytest.fixture(scope="module")
def engines():
    out = {}
    for fw in FRAMEWORKS:
        out[fw] = engine_class(fw)(CFG, TINY_OVERRIDES, seed=0)
        out[fw].setup_training()
    return out


def batch():
    return np.random.default_rng(0).uniform(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32), [target()]


def _refusal(engine, images, targets, error):
    """The message of ``error`` raised by a train step, checking the weights did not change."""
    before = engine.model_state()
    with pytest.raises(error) as err:
        engine.train_step(images, targets)
    after = engine.model_state()
    changed = [k for k in before if not np.array_equal(before[k], after[k], equal_nan=True)
               and "running_" not in k and "num_batches" not in k]  # BatchNorm statistics move in forward
    assert not changed, changed[:5]
    assert "\n" not in str(err.value)
    return str(err.value)


def test_label_at_or_above_num_classes_is_the_same_error_in_both_twins(engines):
    images, _ = batch()
    bad = [target(labels=(1, 79))]
    messages = {fw: _refusal(engines[fw], images, bad, TargetError) for fw in FRAMEWORKS}
    assert messages["pytorch"] == messages["jittor"]
    assert "= 79 is outside [0, num_classes=4)" in messages["jittor"]


def test_non_finite_images_are_refused_in_both_twins(engines):
    images, targets = batch()
    images[0, 1, 2, 3] = np.inf
    for fw in FRAMEWORKS:
        assert "1 NaN or infinite" in _refusal(engines[fw], images, targets, InputError)


def test_infinite_loss_stops_the_step_naming_the_terms(engines):
    images, targets = batch()
    for fw in FRAMEWORKS:
        weights = engines[fw].criterion.weight_dict
        saved, weights["loss_bbox"] = weights["loss_bbox"], float("inf")
        try:
            message = _refusal(engines[fw], images, targets, NonFiniteLossError)
        finally:
            weights["loss_bbox"] = saved
        assert "non-finite loss inf" in message and "loss_bbox=inf" in message and "loss_giou=" in message


def test_nan_weight_stops_the_step_before_the_update(engines):
    """A NaN in the first convolution: the reference's outputs go NaN; Jittor's -ffast-math
    kernels return finite outputs and loss from it, and NaN gradients."""
    images, targets = batch()
    for fw, engine in engines.items():
        state = engine.model_state()
        poisoned = dict(state)
        key = "backbone.conv1.conv1_1.conv.weight"
        poisoned[key] = state[key].copy()
        poisoned[key][0, 0, 0, 0] = np.nan
        engine.load_weights(poisoned)
        try:
            message = _refusal(engine, images, targets, NonFiniteLossError)
        finally:
            engine.load_weights(state)
        assert "non-finite model outputs" in message or "non-finite gradient norm nan" in message


def test_check_finite_loss_names_the_non_finite_terms():
    check_finite_loss(1.5, {"a": 1.0, "b": 0.5}, grad_norm=3.0)
    with pytest.raises(NonFiniteLossError, match=r"non-finite terms \['b'\]") as err:
        check_finite_loss(float("nan"), {"a": 1.0, "b": float("nan")})
    assert err.value.losses == {"a": 1.0, "b": float("nan")} or np.isnan(err.value.losses["b"])
    with pytest.raises(NonFiniteLossError, match="gradient norm inf"):
        check_finite_loss(1.5, {"a": 1.0, "b": 0.5}, grad_norm=float("inf"))


# --- the training loop --------------------------------------------------------------------

def test_non_finite_loss_stops_training_naming_step_terms_and_checkpoint(tmp_path):
    data, out = make_tiny_coco(tmp_path / "data"), str(tmp_path / "run")
    Engine = engine_class("pytorch")
    train(Engine(CFG, TINY_OVERRIDES, seed=0), train_args(data, out, epochs=1))  # steps 1-2, last.ckpt
    last = os.path.join(out, "last.ckpt")
    files = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
    engine = Engine(CFG, TINY_OVERRIDES, seed=0)
    engine.criterion.weight_dict["loss_giou"] = float("inf")
    with pytest.raises(NonFiniteLossError) as err:
        train(engine, train_args(data, out, epochs=2, resume=last))
    message = str(err.value)
    assert "step 3 (epoch 1)" in message and f"last good checkpoint: {last}" in message
    assert "loss_giou=inf" in message and "\n" not in message
    assert {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)} == files


# --- annotation files ---------------------------------------------------------------------

def coco_document():
    return {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 10], "area": 100,
                             "iscrowd": 0}],
            "categories": [{"id": 3, "name": "three"}]}


def _mutated(path, change):
    doc = coco_document()
    change(doc)
    return json.dumps(doc)


@pytest.mark.parametrize("content,match", [
    ("{not json", "not a readable JSON file"),
    (b"\xff\xfe\x00garbage", "not a readable JSON file"),
    ("[1, 2, 3]", "the top level must be an object"),
    (lambda d: d.pop("categories"), "'categories' must be a list"),
    (lambda d: d["images"][0].pop("file_name"), r"images\[0\] has no 'file_name'"),
    (lambda d: d["annotations"][0].update(image_id="1"), r"annotations\[0\]\['image_id'\] must be an integer"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, "w", 4]), r"\['bbox'\] must be a list \[x, y, w, h\]"),
    (lambda d: d["annotations"][0].update(category_id=[3]), r"\['category_id'\] must be an integer"),
    (lambda d: d["categories"].append({"id": 3, "name": "again"}), r"categories\[1\] repeats id 3"),
    (lambda d: d["annotations"].append(7), r"annotations\[1\] must be an object"),
])
def test_malformed_annotation_file_fails_with_one_line_naming_file(tmp_path, content, match):
    path = tmp_path / "instances_val.json"
    if callable(content):
        content = _mutated(path, content)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for load in (load_coco, lambda p: CocoDetection(tmp_path, p)):
        with pytest.raises(AnnotationError, match=match) as err:
            load(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_well_formed_annotation_file_loads(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco_document()))
    assert load_coco(path).imgs[1]["file_name"] == "a.png"


# --- infer ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Bare state_dict of a tiny model, readable by both twins."""
    path = str(tmp_path_factory.mktemp("weights") / "tiny.pkl")
    save_atomic(engine_class("pytorch")(CFG, TINY_OVERRIDES, seed=0).model_state(), path)
    return path


def run_infer_tool(framework, image, out, weights, monkeypatch, capsys):
    """``python -m <twin>.tools.infer`` in-process: (exit status, stderr lines)."""
    argv = ["infer", "-c", CFG, "--set", json.dumps(TINY_OVERRIDES), "--input-size", str(SIZE),
            "--checkpoint", weights, "--image", str(image), "--output-dir", str(out), "--no-progress"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        cli.run_tool(cli.infer_main, engine_class(framework))
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_infer_skips_unreadable_images_and_counts_them(tmp_path, weights, monkeypatch, capsys, framework):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)).save(folder / "b_good.png")
    png = (folder / "b_good.png").read_bytes()
    (folder / "a_broken.jpg").write_bytes(b"this is not a picture")
    (folder / "c_cut.png").write_bytes(png[:len(png) // 2])
    (folder / "notes.txt").write_text("not looked at")
    status, lines = run_infer_tool(framework, folder, tmp_path / "out", weights, monkeypatch, capsys)
    assert status == cli.SKIPPED_EXIT_STATUS
    for name in ("a_broken.jpg", "c_cut.png"):
        assert len([line for line in lines if name in line]) == 1, lines
    assert "1 of 3 image(s) done, 2 skipped as unreadable, 1 file(s) without an image extension ignored" in lines[-1]
    assert list(json.loads((tmp_path / "out" / "detections.json").read_text())) == ["b_good.png"]
    assert sorted(os.listdir(tmp_path / "out")) == ["b_good.png", "detections.json"]


def test_infer_with_nothing_readable_fails_with_one_line(tmp_path, weights, monkeypatch, capsys):
    bad = tmp_path / "only.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    status, lines = run_infer_tool("pytorch", bad, tmp_path / "out", weights, monkeypatch, capsys)
    assert status == cli.ERROR_EXIT_STATUS
    assert lines[-1].startswith("error: no usable image at") and "only.png" in lines[-1]
    assert not (tmp_path / "out" / "detections.json").exists()
