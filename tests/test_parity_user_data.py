"""``python -m parity compare --weights --images``: user weights and images, compared image
by image (tensor verdict, detections matched box by box, COCO AP on a COCO root).

The weights here are realistic random ones written to a file as an official ``.pth``
(``{"ema": {"module": ...}}``); the trained-weight runs are in test_parity_trained.py.
Reports go under reports/parity/<test>/ and into the session's index.
"""
import json
import os

import numpy as np
import pytest
import torch

from parity.__main__ import main
from parity.user_report import user_index_entry

CONFIG = "configs/synthetic/rtdetr_r18vd_small_synthetic.yml"
PHOTOS = "fixtures/photos"
COCO_ROOT = "fixtures/synthetic_coco"
SIZE = (96, 128)  # non-square, small: the photographs go in as 96 x 128


@pytest.fixture(scope="module")
def random_pth(tmp_path_factory):
    """Realistic random weights of the config as an official .pth layout (``ema.module``)."""
    import reference_pytorch
    from parity.weights import realistic_random_state, torch_shapes
    ref = reference_pytorch.build(CONFIG)
    state = realistic_random_state(torch_shapes(ref.model), seed=5)
    path = tmp_path_factory.mktemp("weights") / "random_small.pth"
    torch.save({"ema": {"module": {k: torch.from_numpy(v) for k, v in state.items()}}}, path)
    return str(path)


def run_cli(request, args, run):
    status = main(["compare", "-c", CONFIG, *args, "--out", "reports", "--run", run])
    run_dir = os.path.join("reports", "parity", run)
    with open(os.path.join(run_dir, "summary.json")) as f:
        return status, run_dir, json.load(f)


def reference_detections(weights, image_path, size):
    """What the reference's own eval tool path gives for one image: weights loaded by its
    engine, the image read and resized by the shared infer pipeline, boxes in original pixels."""
    from reference_pytorch.engine import Engine
    from rtdetr_common.data.images import read_image
    from rtdetr_common.loops import eval_transforms
    overrides = {"HybridEncoder": {"eval_spatial_size": list(size)}, "RTDETRTransformer": {"eval_spatial_size": list(size)}}
    engine = Engine(CONFIG, overrides)
    engine.load_weights(weights)
    image = read_image(image_path)
    tensor, _ = eval_transforms(engine.cfg, size)(image, None)
    return engine.predict(tensor[None], np.array([image.size], np.float32), use_ema=False)[0]


@pytest.mark.parity
def test_photos_non_square(request, random_pth, parity_index, capsys):
    status, run_dir, report = run_cli(request, ["--weights", random_pth, "--images", PHOTOS, "--size", "96,128"],
                                      "user_data_photos_96x128")
    parity_index(user_index_entry(report, f"{os.path.basename(run_dir)}/report.md"))
    assert status == 0 and report["verdict"] == "PASS", report["totals"]
    assert [r["image"] for r in report["per_image"]] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    assert report["weights"]["format"] == "torch" and report["coco"] is None
    for row in report["per_image"]:
        assert row["input_size"] == list(SIZE) and row["tensors"]["failed"] == 0 and row["tensors"]["total"] > 400
        d = row["detections"]
        assert d["agree"] and d["matched"] == d["reference"] == d["jittor"] == 30
        assert 0 <= d["max_box_diff_px"] <= d["box_tol_px"]
        for name in (row["report"], row["drawing"], f"images/{row['image'][:-4]}/error_by_layer.png"):
            assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    assert report["per_image"][1]["orig_size"] == [451, 300]
    with open(os.path.join(run_dir, "report.md")) as f:
        markdown = f.read()
    assert markdown.startswith("# Parity on user data") and "**Verdict: PASS**" in markdown
    assert "chelsea_detections.png" in markdown and "images/coffee/report.md" in markdown
    # the reference's detections are the reference's own eval path, in original-image pixels
    with open(os.path.join(run_dir, "detections.json")) as f:
        listed = json.load(f)["chelsea.jpg"]["reference"]
    own = reference_detections(random_pth, os.path.join(PHOTOS, "chelsea.jpg"), SIZE)
    np.testing.assert_array_equal([d["label"] for d in listed], own["labels"])
    np.testing.assert_allclose([d["box_xyxy"] for d in listed], own["boxes"], atol=1e-3)
    assert max(d["box_xyxy"][2] for d in listed) > SIZE[1] * 1.5  # scaled to the 451 px original, not 128 px
    assert "image 3/3 coffee.jpg" in capsys.readouterr().err  # progress per image


@pytest.mark.parity
def test_coco_root_with_limit_gives_both_aps(request, random_pth, parity_index, capsys):
    status, run_dir, report = run_cli(request, ["--weights", random_pth, "--images", COCO_ROOT, "--size", "96,128",
                                                "--limit", "2"], "user_data_synthetic_coco_limit2")
    parity_index(user_index_entry(report, f"{os.path.basename(run_dir)}/report.md"))
    assert status == 0 and report["verdict"] == "PASS", report["totals"]
    assert [r["image"] for r in report["per_image"]] == ["000001.png", "000002.png"]
    assert [r["image_id"] for r in report["per_image"]] == [1, 2]
    coco = report["coco"]
    assert coco["images"] == 2 and coco["agree"]
    for key in ("AP", "AP50", "AP75"):
        assert 0.0 <= coco["reference"][key] <= 1.0
        assert coco["diff_points"][key] == pytest.approx(abs(coco["reference"][key] - coco["jittor"][key]) * 100)
    out = capsys.readouterr().out
    assert "COCO AP (2 images): reference" in out and "difference" in out


@pytest.mark.parity
def test_one_weight_changed_in_one_framework_is_flagged(tmp_path, random_pth):
    """Negative control: the last decoder layer's box-head bias moved by 0.05 in Jittor only."""
    from parity.user_data import build_user_pair, run_user_data
    from parity.user_images import open_images
    from rtdetr_common.config import load_config
    pair, _ = build_user_pair(CONFIG, random_pth, SIZE)
    name = "decoder.dec_bbox_head.2.layers.2.bias"
    edited = pair.weights[name].copy()
    edited[0] += 0.05
    pair.jittor_weight_edits = {name: edited}
    images = open_images([COCO_ROOT], load_config(CONFIG), SIZE, limit=1)
    rows, coco, _ = run_user_data(pair, images, str(tmp_path), log=lambda text: None)
    row = rows[0]
    assert row["verdict"] == "FAIL" and row["first_divergence"].startswith("decoder.dec_bbox_head.2")
    d = row["detections"]
    assert not d["agree"] and d["max_box_diff_px"] > 10 * d["box_tol_px"]
    assert any("box differs" in p for p in d["problems"])
    assert coco["images"] == 1


@pytest.mark.parity
@pytest.mark.parametrize("case, message", [
    ("missing weights", "weights file not found"),
    ("no images", "no images in"),
    ("weights of another config", "does not fit configs/rtdetr/rtdetr_r18vd_6x_coco.yml"),
])
def test_bad_input_fails_with_one_line(case, message, tmp_path, random_pth, capsys):
    config, weights, images = CONFIG, random_pth, PHOTOS
    if case == "missing weights":
        weights = str(tmp_path / "nothing.pth")
    elif case == "no images":
        (tmp_path / "notes.txt").write_text("not an image")
        images = str(tmp_path)
    else:
        config = "configs/rtdetr/rtdetr_r18vd_6x_coco.yml"
    status = main(["compare", "-c", config, "--weights", weights, "--images", images, "--size", "96,128",
                   "--out", str(tmp_path / "reports")])
    err = capsys.readouterr().err
    assert status == 2 and message in err, err
    assert not os.path.exists(tmp_path / "reports" / "parity")  # nothing written
    if case == "weights of another config":
        assert "mis-shaped" in err
