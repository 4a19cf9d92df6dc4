"""The images of a user-data comparison, through the config's evaluation transforms.

``--images`` names image files, a folder of images, or a COCO root (a folder holding
``annotations/instances_<split>.json`` and the split's image folder). Every image goes
through the config's ``val_dataloader`` transforms (the shared data pipeline in
``rtdetr_common.data``, as the eval and infer tools use it), with Resize set to
``--size`` when given. Images load one at a time (``ImageSet.load``), so a large COCO
root costs memory for one image only. A COCO root also carries the dataset, for AP.
"""
import dataclasses
import os
from typing import Optional

import numpy as np

from rtdetr_common.data.images import read_image
from rtdetr_common.errors import InputError
from rtdetr_common.loops import IMAGE_EXTENSIONS, eval_transforms, make_dataset, resolve_split


@dataclasses.dataclass
class UserImage:
    """One image: its name, the original (for drawing), the model input (3, H, W)
    float32, the original size (width, height) and its COCO image id (COCO root only)."""
    name: str
    original: object
    tensor: np.ndarray
    orig_size: tuple
    image_id: Optional[int] = None


@dataclasses.dataclass
class ImageSet:
    """The images to compare: ``names`` in order, ``load(i)`` reads one; ``dataset`` is
    the ``CocoDetection`` of a COCO root (else None); ``label_names`` maps label -> name."""
    source: str
    kind: str  # "files", "folder" or "coco"
    names: list
    label_names: Optional[dict]
    dataset: object = None
    paths: list = dataclasses.field(default_factory=list)
    transforms: object = None

    def __len__(self):
        return len(self.names)

    def load(self, i):
        """Image ``i``; an unreadable file raises ``ImageError``."""
        if self.dataset is not None:
            image = read_image(self.dataset.image_path(i))
            tensor, _ = self.dataset.transforms(image, None)
            return UserImage(self.names[i], image, tensor, image.size, int(self.dataset.ids[i]))
        image = read_image(self.paths[i])
        tensor, _ = self.transforms(image, None)
        return UserImage(self.names[i], image, tensor, image.size)


def _is_coco_root(path):
    return os.path.isdir(os.path.join(path, "annotations"))


def _image_files(paths):
    """The image files among ``paths`` (files, or one folder's sorted contents)."""
    if len(paths) == 1 and os.path.isdir(paths[0]):
        names = sorted(os.listdir(paths[0]))
        files = [os.path.join(paths[0], n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        if not files:
            raise InputError(f"no images in {paths[0]}: {len(names)} file(s), none ending in "
                             f"{'/'.join(IMAGE_EXTENSIONS)}")
        return files, "folder"
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise InputError(f"image path not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if missing[1:] else ""))
    return list(paths), "files"


def default_label_names(cfg):
    """Class names of an 80-class COCO model; None (labels shown as numbers) otherwise."""
    from rtdetr_common.cli import label_names_for
    return label_names_for(cfg, None)


def open_images(paths, cfg, size=None, split="val", limit=None):
    """The :class:`ImageSet` of ``paths`` (a list: image files, one folder, or one COCO
    root) for ``cfg`` at ``size`` ((height, width) or None for the config's), the first
    ``limit`` images only when given."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise InputError("no --images given")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    source = " ".join(paths)
    if len(paths) == 1 and os.path.isdir(paths[0]) and _is_coco_root(paths[0]):
        try:
            resolve_split(paths[0], split)
        except FileNotFoundError as e:
            raise InputError(str(e)) from None
        dataset = make_dataset(cfg, paths[0], split, size, cfg["num_classes"])
        if len(dataset) == 0:
            raise InputError(f"no images in the {split} split of {paths[0]}")
        count = len(dataset) if limit is None else min(limit, len(dataset))
        dataset.ids = dataset.ids[:count]
        names = [os.path.basename(dataset.image_path(i)) for i in range(count)]
        return ImageSet(source, "coco", names, dict(dataset.label_names), dataset=dataset)
    files, kind = _image_files(paths)
    files = files[:limit] if limit is not None else files
    return ImageSet(source, kind, [os.path.basename(f) for f in files], default_label_names(cfg),
                    paths=files, transforms=eval_transforms(cfg, size))
