"""Fuzzing the files a user hands in: every malformed annotation file, image or
checkpoint ends in the project's own error type (``AnnotationError``, ``ImageError``,
``CheckpointError``) with a one-line message, never a library exception, never a hang
(each example must finish within ``DEADLINE``).

Checkpoints are fed to both twins' readers: ``read_weights``, ``load_training_checkpoint``
and ``load_model_state`` of a small Linear model.
"""
import io
import json
import pickle
from datetime import timedelta

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import reference_pytorch.checkpoint as t_ckpt
import rtdetr_jittor.checkpoint as j_ckpt
from rtdetr_jittor._env import jt
from rtdetr_common.checkpoint_io import CheckpointError
from rtdetr_common.data.coco_api import load_coco
from rtdetr_common.data.images import read_image
from rtdetr_common.errors import AnnotationError, ImageError
from tests.strategies import cut_points, json_values, wrong_typed_values

DEADLINE = settings(deadline=timedelta(seconds=10))
SIDES = {"pytorch": (t_ckpt, lambda: torch.nn.Linear(3, 2)), "jittor": (j_ckpt, lambda: jt.nn.Linear(3, 2))}


def one_line(error):
    message = str(error.value)
    assert message and "\n" not in message
    return message


# --- annotation files -------------------------------------------------------------------

def coco_document():
    return {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                       {"id": 2, "file_name": "b.png", "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 10], "area": 100,
                             "iscrowd": 0},
                            {"id": 2, "image_id": 2, "category_id": 3, "bbox": [1, 2, 5, 5], "area": 25}],
            "categories": [{"id": 3, "name": "three"}]}


@st.composite
def faulty_coco_documents(draw):
    """A well-formed document with one required key of one entry deleted or given a wrong type."""
    doc = coco_document()
    section = draw(st.sampled_from(sorted(doc)))
    entry = draw(st.sampled_from(doc[section]))
    key = draw(st.sampled_from(sorted(k for k in entry if k not in ("width", "height", "iscrowd"))))
    if draw(st.booleans()):
        del entry[key]
    else:
        entry[key] = draw(wrong_typed_values)
    return doc


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


@DEADLINE
@given(doc=faulty_coco_documents())
def test_coco_document_with_a_missing_or_wrong_typed_key_is_refused(tmp_path_factory, doc):
    path = write(tmp_path_factory.mktemp("ann") / "instances.json", doc)
    with pytest.raises(AnnotationError) as err:
        load_coco(path)
    assert one_line(err).startswith(f"{path}: ")


@DEADLINE
@given(content=json_values | st.binary(max_size=64))
def test_random_json_or_bytes_load_or_are_refused(tmp_path_factory, content):
    path = write(tmp_path_factory.mktemp("ann") / "instances.json", content)
    try:
        coco = load_coco(path)
    except AnnotationError as err:
        assert str(err).startswith(f"{path}: ") and "\n" not in str(err)
    else:  # only a document with the three (here empty) lists is usable
        assert isinstance(content, dict) and coco.imgs == {}


# --- images --------------------------------------------------------------------------------

def encoded(fmt):
    pixels = np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


REAL = {fmt: encoded(fmt) for fmt in ("PNG", "JPEG", "BMP")}


@DEADLINE
@given(content=st.binary(max_size=256) | st.sampled_from(sorted(REAL)).flatmap(
    lambda fmt: cut_points(REAL[fmt]).map(lambda n: REAL[fmt][:n])))
def test_random_or_truncated_image_file_is_an_image_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("img") / "picture.png"
    path.write_bytes(content)
    try:
        image = read_image(path)
    except ImageError as err:
        assert str(err).startswith(f"{path}: ") and "\n" not in str(err)
    else:  # a file cut after its pixel data (just short of PNG's IEND, JPEG's EOI) still decodes
        assert image.mode == "RGB" and image.size == (32, 24) and any(r.startswith(content) for r in REAL.values())


# --- checkpoints ---------------------------------------------------------------------------

def checkpoint_bytes(side, tmp_path):
    ckpt, make = SIDES[side]
    path = tmp_path / "full.ckpt"
    ckpt.save_training_checkpoint(str(path), make(), epoch=1, step=3)
    return path.read_bytes()


def assert_refused(side, path):
    ckpt, make = SIDES[side]
    for read in (ckpt.read_weights, lambda p: ckpt.load_training_checkpoint(p, make())):
        with pytest.raises(CheckpointError) as err:
            read(str(path))
        one_line(err)


@pytest.mark.parametrize("side", SIDES)
@DEADLINE
@given(data=st.data())
def test_random_or_truncated_checkpoint_is_refused(tmp_path_factory, side, data):
    tmp = tmp_path_factory.mktemp("ckpt")
    full = checkpoint_bytes(side, tmp)
    content = data.draw(st.binary(max_size=256) | cut_points(full).map(lambda n: full[:n]))
    assert_refused(side, write(tmp / "bad.ckpt", content))


@pytest.mark.parametrize("side", SIDES)
@DEADLINE
@given(obj=json_values)
def test_pickle_of_anything_but_a_checkpoint_is_refused(tmp_path_factory, side, obj):
    path = tmp_path_factory.mktemp("ckpt") / "other.pkl"
    path.write_bytes(pickle.dumps(obj))
    assert_refused(side, path)


@st.composite
def wrong_states(draw):
    """A Linear(3, 2) state_dict with a key renamed, dropped or added, or a shape changed."""
    state = {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(2, np.float32)}
    key = draw(st.sampled_from(sorted(state)))
    fault = draw(st.sampled_from(["rename", "drop", "add", "reshape"]))
    if fault == "rename":
        state[key + draw(st.text(min_size=1, max_size=4))] = state.pop(key)
    elif fault == "drop":
        del state[key]
    elif fault == "add":
        state["extra." + draw(st.text(max_size=4))] = np.zeros(1, np.float32)
    else:
        shape = draw(st.lists(st.integers(0, 4), max_size=3).filter(lambda s: tuple(s) != state[key].shape))
        state[key] = np.zeros(shape, np.float32)
    return state


@pytest.mark.parametrize("side", SIDES)
@DEADLINE
@given(state=wrong_states())
def test_state_dict_with_wrong_keys_or_shapes_is_refused(side, state):
    ckpt, make = SIDES[side]
    with pytest.raises(CheckpointError) as err:
        ckpt.load_model_state(make(), state, strict=True)
    assert "does not match the model" in one_line(err)
