"""Load COCO annotation files with pycocotools without its progress chatter on stdout."""
import contextlib
import io
import os

from pycocotools.coco import COCO


def load_coco(ann_file_or_coco):
    """A pycocotools ``COCO`` from a path to an annotation JSON (or the object itself)."""
    if isinstance(ann_file_or_coco, COCO):
        return ann_file_or_coco
    path = os.fspath(ann_file_or_coco)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(path)


def coco_from_dict(dataset):
    """A pycocotools ``COCO`` built from an in-memory annotation dict."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
