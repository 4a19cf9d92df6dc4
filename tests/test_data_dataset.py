"""Tests of CocoDetection: targets built from COCO annotations, label mappings, and
skipping of unusable annotations and unreadable images."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtdetr_common.config import load_config
from rtdetr_common.data import (
    CocoDetection,
    DataWarning,
    SampleUnavailable,
    mscoco_category2label,
    mscoco_category2name,
    mscoco_label2category,
)

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "fixtures" / "synthetic_coco"
VAL_ANN = SYNTHETIC / "annotations" / "instances_val.json"


def write_coco(folder, images, annotations, categories):
    """Write ``images`` ({file_name: PIL image or bytes}) and an annotation file; return its path."""
    image_records = []
    for image_id, (file_name, content) in enumerate(images.items(), start=1):
        path = folder / file_name
        if isinstance(content, bytes):
            path.write_bytes(content)
            width, height = 64, 48
        else:
            content.save(path)
            width, height = content.size
        image_records.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    ann_file = folder / "instances.json"
    ann_file.write_text(json.dumps({"images": image_records, "annotations": annotations, "categories": categories}))
    return ann_file


def annotation(ann_id, image_id, category_id, bbox, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": 1.0, "iscrowd": iscrowd}


CATEGORIES = [{"id": 3, "name": "three"}, {"id": 9, "name": "nine"}]


def test_synthetic_val_targets_match_the_annotation_file():
    dataset = CocoDetection(SYNTHETIC / "val", VAL_ANN, contiguous_labels=True)
    raw = json.loads(VAL_ANN.read_text())
    assert len(dataset) == len(raw["images"])
    assert dataset.label_names == {0: "circle", 1: "square", 2: "triangle", 3: "cross"}
    assert dataset.label2category == {0: 1, 1: 2, 2: 3, 3: 4}
    assert dataset.num_classes == 4
    for index, record in enumerate(sorted(raw["images"], key=lambda r: r["id"])):
        image, target = dataset[index]
        assert image.size == (record["width"], record["height"])
        anns = [a for a in raw["annotations"] if a["image_id"] == record["id"]]
        expected = sorted((a["category_id"] - 1, a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]) for a in anns)
        got = sorted((int(label), *box.tolist()) for label, box in zip(target["labels"], target["boxes"]))
        assert got == expected
        assert int(target["image_id"]) == record["id"] and target["image_id"].dtype == np.int64
        assert target["orig_size"].tolist() == [record["width"], record["height"]]
        assert target["boxes"].dtype == np.float32 and target["labels"].dtype == np.int64


def test_val_transforms_resize_image_and_boxes():
    val_ops = [{"type": "Resize", "size": [64, 64]}, {"type": "ToImageTensor"}, {"type": "ConvertDtype"}]
    plain = CocoDetection(SYNTHETIC / "val", VAL_ANN, contiguous_labels=True)
    resized = CocoDetection(SYNTHETIC / "val", VAL_ANN, transforms=val_ops, contiguous_labels=True)
    for index in range(3):
        _, raw_target = plain[index]
        image, target = resized[index]
        assert image.shape == (3, 64, 64) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert target["size"].tolist() == [64, 64] and target["orig_size"].tolist() == [128, 128]
        np.testing.assert_allclose(target["boxes"], raw_target["boxes"] / 2)


def test_official_train_transforms_give_normalised_cxcywh():
    ops = load_config(REPO / "configs/rtdetr/include/dataloader.yml")["train_dataloader"]["dataset"]["transforms"]
    for op in ops["ops"]:
        if op["type"] == "Resize":
            op["size"] = [96, 96]
    dataset = CocoDetection(SYNTHETIC / "train", SYNTHETIC / "annotations/instances_train.json",
                            transforms=ops, contiguous_labels=True)
    for index in range(8):
        image, target = dataset.load(index, rng=np.random.default_rng(index))
        assert image.shape == (3, 96, 96)
        boxes = target["boxes"]
        assert ((boxes >= 0) & (boxes <= 1)).all()
        assert (boxes[:, :2] - boxes[:, 2:] / 2 >= -1e-6).all() and (boxes[:, :2] + boxes[:, 2:] / 2 <= 1 + 1e-6).all()


def test_label_modes(tmp_path):
    ann_file = write_coco(tmp_path, {"a.png": Image.new("RGB", (64, 48))},
                          [annotation(1, 1, 9, [1, 2, 10, 10]), annotation(2, 1, 3, [5, 5, 10, 10])], CATEGORIES)
    identity = CocoDetection(tmp_path, ann_file)
    assert sorted(identity[0][1]["labels"].tolist()) == [3, 9]
    assert identity.num_classes == 10 and identity.label_names[9] == "nine"
    contiguous = CocoDetection(tmp_path, ann_file, contiguous_labels=True)
    assert sorted(contiguous[0][1]["labels"].tolist()) == [0, 1]
    assert contiguous.label2category == {0: 3, 1: 9} and contiguous.num_classes == 2
    with pytest.raises(ValueError):
        CocoDetection(tmp_path, ann_file, remap_mscoco_category=True, contiguous_labels=True)
    with pytest.raises(NotImplementedError):
        CocoDetection(tmp_path, ann_file, return_masks=True)


def test_mscoco_remap(tmp_path):
    categories = [{"id": 1, "name": "person"}, {"id": 13, "name": "stop sign"}, {"id": 90, "name": "toothbrush"}]
    ann_file = write_coco(tmp_path, {"a.png": Image.new("RGB", (64, 48))},
                          [annotation(1, 1, 90, [1, 1, 5, 5]), annotation(2, 1, 1, [1, 1, 6, 6]),
                           annotation(3, 1, 13, [1, 1, 7, 7])], categories)
    dataset = CocoDetection(tmp_path, ann_file, remap_mscoco_category=True)
    by_width = {round(float(box[2] - box[0])): int(label) for box, label in zip(*(dataset[0][1][k] for k in ("boxes", "labels")))}
    # COCO's 80 ids in ascending order: person is the first, stop sign the 12th, toothbrush the last.
    assert by_width == {5: 79, 6: 0, 7: 11}
    assert dataset.num_classes == 80 and dataset.label_names[0] == "person"


def test_mscoco_tables_are_consistent():
    assert len(mscoco_category2name) == 80
    assert sorted(mscoco_category2label.values()) == list(range(80))
    assert all(mscoco_label2category[mscoco_category2label[cid]] == cid for cid in mscoco_category2name)
    assert mscoco_category2name[1] == "person" and mscoco_category2name[90] == "toothbrush"
    missing = set(range(1, 91)) - set(mscoco_category2name)
    assert missing == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}


def test_crowd_annotations_are_dropped_and_boxes_clipped(tmp_path):
    ann_file = write_coco(tmp_path, {"a.png": Image.new("RGB", (64, 48))},
                          [annotation(1, 1, 3, [-5, 40, 20, 20]),
                           annotation(2, 1, 9, [10, 10, 20, 20], iscrowd=1),
                           annotation(3, 1, 9, [70, 10, 5, 5])],  # wholly right of the image
                          CATEGORIES)
    _, target = CocoDetection(tmp_path, ann_file)[0]
    assert target["boxes"].tolist() == [[0, 40, 15, 48]]
    assert target["labels"].tolist() == [3]
    assert len(target["area"]) == len(target["iscrowd"]) == 1


def test_unusable_annotations_are_reported_and_skipped(tmp_path):
    anns = [
        annotation(11, 1, 3, [1, 1, 10, 10]),
        annotation(12, 1, 3, [1, 1, 0, 10]),
        annotation(13, 1, 9, [1, 1, 10, -2]),
        annotation(14, 1, 9, [1, float("nan"), 10, 10]),
        annotation(15, 1, 4, [1, 1, 10, 10]),  # category 4 does not exist
    ]
    ann_file = write_coco(tmp_path, {"pic.png": Image.new("RGB", (64, 48))}, anns, CATEGORIES)
    with pytest.warns(DataWarning) as record:
        dataset = CocoDetection(tmp_path, ann_file)
    message = " ".join(str(w.message) for w in record)
    for ann_id in (12, 13, 14, 15):
        assert f"annotation id {ann_id} (pic.png)" in message
    assert "annotation id 11" not in message
    _, target = dataset[0]
    assert target["boxes"].tolist() == [[1, 1, 11, 11]]


def test_unreadable_image_is_reported_once_and_skipped(tmp_path):
    good = Image.new("RGB", (64, 48), (9, 9, 9))
    truncated = Image.new("RGB", (64, 48))
    truncated.save(tmp_path / "full.png")
    ann_file = write_coco(
        tmp_path,
        {"good.png": good, "garbage.png": b"not an image at all",
         "truncated.png": (tmp_path / "full.png").read_bytes()[:60]},
        [annotation(1, 1, 3, [1, 1, 10, 10]), annotation(2, 2, 3, [1, 1, 10, 10])],
        CATEGORIES,
    )
    dataset = CocoDetection(tmp_path, ann_file)
    assert dataset[0][0].size == (64, 48)
    for index, name in ((1, "garbage.png"), (2, "truncated.png")):
        with pytest.warns(DataWarning, match=name):
            with pytest.raises(SampleUnavailable):
                dataset[index]
        with pytest.raises(SampleUnavailable, match=name):
            dataset[index]
    assert dataset.unreadable_image_ids == {2, 3}


def test_missing_image_file_is_unavailable(tmp_path):
    ann_file = write_coco(tmp_path, {"here.png": Image.new("RGB", (8, 8))}, [], CATEGORIES)
    data = json.loads(ann_file.read_text())
    data["images"].append({"id": 2, "file_name": "gone.png", "width": 8, "height": 8})
    ann_file.write_text(json.dumps(data))
    dataset = CocoDetection(tmp_path, ann_file)
    with pytest.warns(DataWarning, match="gone.png"):
        with pytest.raises(SampleUnavailable):
            dataset[1]
