"""Tests of the synthetic COCO fixture: the generator reproduces the committed copy
byte for byte, and the copy is a well-formed, learnable detection set."""
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "fixtures" / "synthetic_coco"
GENERATOR = REPO / "fixtures" / "make_synthetic_coco.py"


def file_hashes(root):
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_default_arguments_regenerate_the_committed_copy(tmp_path):
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], check=True, capture_output=True)
    regenerated, committed = file_hashes(tmp_path), file_hashes(COMMITTED)
    assert sorted(regenerated) == sorted(committed)
    differing = [name for name in committed if committed[name] != regenerated[name]]
    assert differing == []


def test_other_seed_and_counts_give_other_data(tmp_path):
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path), "--train", "3", "--val", "2",
                    "--size", "96", "--seed", "7"], check=True, capture_output=True)
    train = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    assert len(train["images"]) == 3 and len(list((tmp_path / "train").glob("*.png"))) == 3
    assert len(list((tmp_path / "val").glob("*.png"))) == 2
    assert Image.open(tmp_path / "train" / "000001.png").size == (96, 96)
    committed_first = (COMMITTED / "train" / "000001.png").read_bytes()
    assert (tmp_path / "train" / "000001.png").read_bytes() != committed_first


def test_committed_copy_is_a_well_formed_learnable_coco_set():
    total_bytes = sum(path.stat().st_size for path in COMMITTED.rglob("*") if path.is_file())
    assert total_bytes < 3 * 1024 * 1024
    for split, expected_images in (("train", 64), ("val", 16)):
        data = json.loads((COMMITTED / "annotations" / f"instances_{split}.json").read_text())
        assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4]
        assert all(c["name"] for c in data["categories"])
        assert len(data["images"]) == expected_images
        ann_ids = [a["id"] for a in data["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
        per_image = Counter(a["image_id"] for a in data["annotations"])
        assert any(image["id"] not in per_image for image in data["images"]), "some images have no objects"
        assert max(per_image.values()) >= 3
        assert {a["category_id"] for a in data["annotations"]} == {1, 2, 3, 4}
        sides = []
        for image in data["images"]:
            pixels = np.asarray(Image.open(COMMITTED / split / image["file_name"]))
            assert pixels.shape == (image["height"], image["width"], 3)
            for ann in (a for a in data["annotations"] if a["image_id"] == image["id"]):
                x, y, w, h = ann["bbox"]
                assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
                assert ann["iscrowd"] == 0 and 0 < ann["area"] <= w * h
                sides.append(max(w, h) / image["width"])
        assert max(sides) <= 0.5
        assert np.median(sides) >= 0.15
