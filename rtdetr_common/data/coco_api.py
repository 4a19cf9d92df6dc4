"""Load COCO annotation files with pycocotools without its progress chatter on stdout.

A file is checked before pycocotools indexes it: not JSON, a missing section or key,
a value of the wrong type or a repeated id raises ``AnnotationError`` with one line
naming the file and the entry (pycocotools would fail with a bare ``KeyError`` or
``TypeError``, or silently keep the last of two entries with one id). Values of the
right type but unusable (a box without area, an unknown category) are left to
``CocoDetection``, which warns and skips them.
"""
import contextlib
import io
import json
import os

from pycocotools.coco import COCO

from ..errors import AnnotationError, reason


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_bbox(value):
    return isinstance(value, list) and len(value) == 4 and all(map(_is_number, value))


KINDS = {"an integer": _is_int, "a number": _is_number, "a string": lambda v: isinstance(v, str),
         "a list [x, y, w, h] of numbers": _is_bbox, "0 or 1": lambda v: isinstance(v, int)}
# section -> {key: kind}; required keys, then keys checked only when present
REQUIRED = {"images": {"id": "an integer", "file_name": "a string"},
            "annotations": {"id": "an integer", "image_id": "an integer", "category_id": "an integer",
                            "bbox": "a list [x, y, w, h] of numbers", "area": "a number"},
            "categories": {"id": "an integer", "name": "a string"}}
OPTIONAL = {"images": {"width": "a number", "height": "a number"}, "annotations": {"iscrowd": "0 or 1"},
            "categories": {}}


def _short(value, limit=40):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _entry_problem(section, index, entry):
    """Why ``entry`` (item ``index`` of ``section``) is malformed, or None."""
    where = f"{section}[{index}]"
    if not isinstance(entry, dict):
        return f"{where} must be an object, got {_short(entry)}"
    missing = [key for key in REQUIRED[section] if key not in entry]
    if missing:
        return f"{where} has no {missing[0]!r}"
    for key, kind in {**REQUIRED[section], **OPTIONAL[section]}.items():
        if key in entry and not KINDS[kind](entry[key]):
            return f"{where}[{key!r}] must be {kind}, got {_short(entry[key])}"
    return None


def annotation_problem(dataset):
    """Why the parsed JSON ``dataset`` is not a usable COCO detection file, or None."""
    if not isinstance(dataset, dict):
        return f"the top level must be an object with {sorted(REQUIRED)}, got {type(dataset).__name__}"
    for section in REQUIRED:
        if not isinstance(dataset.get(section), list):
            return f"{section!r} must be a list, got {_short(dataset.get(section, 'nothing'))}"
        seen = set()
        for index, entry in enumerate(dataset[section]):
            problem = _entry_problem(section, index, entry)
            if problem is None and entry["id"] in seen:
                problem = f"{section}[{index}] repeats id {entry['id']}"
            if problem:
                return problem
            seen.add(entry["id"])
    return None


def read_annotation_file(path):
    """The checked contents of the COCO annotation JSON at ``path``; raises ``AnnotationError``."""
    try:
        with open(path, encoding="utf-8") as f:
            dataset = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or bad UTF-8
        raise AnnotationError(f"{path}: not a readable JSON file ({reason(e)})") from None
    problem = annotation_problem(dataset)
    if problem:
        raise AnnotationError(f"{path}: not a usable COCO annotation file: {problem}")
    return dataset


def load_coco(ann_file_or_coco):
    """A pycocotools ``COCO`` from a path to an annotation JSON (or the object itself)."""
    if isinstance(ann_file_or_coco, COCO):
        return ann_file_or_coco
    path = os.fspath(ann_file_or_coco)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    return coco_from_dict(read_annotation_file(path))


def coco_from_dict(dataset):
    """A pycocotools ``COCO`` built from an in-memory annotation dict."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
