"""COCO-format detection dataset read with pycocotools, as the official CocoDetection.

An item is ``(image, target)``. Before transforms the image is a PIL RGB image and
``target["boxes"]`` are xyxy pixels clipped to the image; crowd annotations are
left out. Annotations with unusable boxes or unknown categories are reported once
(``DataWarning``) when the dataset is built and ignored; an unreadable image file is
reported when first met and its item raises ``SampleUnavailable``, which the loader
skips.
"""
import math
import os
import warnings

import numpy as np

from ..errors import ImageError
from .coco_api import load_coco
from .errors import DataWarning, SampleUnavailable
from .images import read_image
from .label_maps import contiguous_label_map, identity_label_map, mscoco_label_map
from .op_base import image_size
from .transforms import Compose, build_transforms

# How many offending annotations a warning lists by id before summarising the rest.
MAX_LISTED = 20


def _bad_box_reason(bbox):
    """Why a COCO xywh bbox is unusable, or None if it is fine."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"bbox {bbox!r} is not [x, y, w, h]"
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return f"bbox {bbox!r} is not numeric"
    if not all(math.isfinite(v) for v in values):
        return f"bbox {bbox!r} is not finite"
    if values[2] <= 0 or values[3] <= 0:
        return f"bbox {bbox!r} has no area"
    return None


class CocoDetection:
    """Detection dataset over ``img_folder`` and the COCO ``ann_file``.

    Labels: with ``remap_mscoco_category`` the official 80-class COCO table; else
    with ``contiguous_labels`` the file's categories in ascending id order as
    0..K-1; else the category id itself. ``transforms`` is a ``Compose``, an ops
    list / transforms config section, or ``None``.
    """

    def __init__(self, img_folder, ann_file, transforms=None, remap_mscoco_category=False,
                 return_masks=False, contiguous_labels=False):
        if return_masks:
            raise NotImplementedError("segmentation masks are not supported (return_masks=True)")
        if remap_mscoco_category and contiguous_labels:
            raise ValueError("choose one of remap_mscoco_category and contiguous_labels")
        self.img_folder = os.fspath(img_folder)
        self.ann_file = os.fspath(ann_file)
        self.coco = load_coco(self.ann_file)
        self.ids = sorted(self.coco.imgs)
        categories = self.coco.loadCats(self.coco.getCatIds())
        if remap_mscoco_category:
            self.label_map = mscoco_label_map()
        elif contiguous_labels:
            self.label_map = contiguous_label_map(categories)
        else:
            self.label_map = identity_label_map(categories)
        if transforms is None or isinstance(transforms, Compose):
            self.transforms = transforms
        else:
            self.transforms = build_transforms(transforms)
        self._annotations = self._usable_annotations()
        self.unreadable_image_ids = set()

    @property
    def label2category(self):
        return self.label_map.label2category

    @property
    def category2label(self):
        return self.label_map.category2label

    @property
    def label_names(self):
        return self.label_map.label_names

    @property
    def num_classes(self):
        return self.label_map.num_classes

    def __len__(self):
        return len(self.ids)

    def _usable_annotations(self):
        """Per image id, the non-crowd annotations that can become training targets."""
        usable = {image_id: [] for image_id in self.ids}
        rejected = []
        for image_id in self.ids:
            for ann in self.coco.imgToAnns.get(image_id, []):
                if ann.get("iscrowd", 0):
                    continue
                reason = _bad_box_reason(ann.get("bbox"))
                if reason is None and ann.get("category_id") not in self.label_map.category2label:
                    reason = f"category_id {ann.get('category_id')!r} is not a known category"
                if reason is None:
                    usable[image_id].append(ann)
                else:
                    file_name = self.coco.imgs[image_id].get("file_name", f"image {image_id}")
                    rejected.append(f"annotation id {ann.get('id')} ({file_name}): {reason}")
        if rejected:
            listed = "; ".join(rejected[:MAX_LISTED])
            more = f"; and {len(rejected) - MAX_LISTED} more" if len(rejected) > MAX_LISTED else ""
            warnings.warn(
                f"{self.ann_file}: skipping {len(rejected)} unusable annotation(s): {listed}{more}",
                DataWarning,
                stacklevel=3,
            )
        return usable

    def image_path(self, index):
        return os.path.join(self.img_folder, self.coco.imgs[self.ids[index]]["file_name"])

    def load_image(self, index):
        """The RGB PIL image of item ``index``; raises SampleUnavailable if unreadable."""
        image_id = self.ids[index]
        path = self.image_path(index)
        if image_id in self.unreadable_image_ids:
            raise SampleUnavailable(f"image {path} (image id {image_id}) is unreadable")
        try:
            return read_image(path)
        except ImageError as error:
            self.unreadable_image_ids.add(image_id)
            warnings.warn(
                f"skipping unreadable image (image id {image_id}): {error}",
                DataWarning,
                stacklevel=2,
            )
            raise SampleUnavailable(f"image {path} (image id {image_id}) is unreadable") from error

    def load_target(self, index, width, height):
        """The untransformed target of item ``index`` for an image of ``width`` x ``height``."""
        image_id = self.ids[index]
        anns = self._annotations[image_id]
        boxes = np.array([ann["bbox"] for ann in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        labels = np.array([self.label_map.category2label[ann["category_id"]] for ann in anns], dtype=np.int64)
        areas = np.array(
            [ann.get("area", ann["bbox"][2] * ann["bbox"][3]) for ann in anns], dtype=np.float32
        )
        return {
            "boxes": boxes[keep],
            "labels": labels[keep],
            "image_id": np.array(image_id, dtype=np.int64),
            "area": areas[keep],
            "iscrowd": np.zeros(int(keep.sum()), dtype=np.int64),
            "orig_size": np.array([width, height], dtype=np.int64),
            "size": np.array([width, height], dtype=np.int64),
        }

    def load(self, index, rng=None):
        """Item ``index`` with the transforms' randomness drawn from ``rng``."""
        image = self.load_image(index)
        target = self.load_target(index, *image.size)
        if self.transforms is not None:
            image, target = self.transforms(image, target, rng)
            target["size"] = np.array(image_size(image), dtype=np.int64)
        return image, target

    def __getitem__(self, index):
        """Item ``index``; random transforms use a generator seeded by ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        return self.load(index, rng=np.random.default_rng(index))

    def __repr__(self):
        return (f"CocoDetection(img_folder={self.img_folder!r}, ann_file={self.ann_file!r}, "
                f"items={len(self)}, classes={self.num_classes}, transforms={self.transforms!r})")
