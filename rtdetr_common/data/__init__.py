"""Framework-neutral COCO data pipeline (NumPy, Pillow, pycocotools only): the
dataset, the official training/validation transforms and a seeded, resumable
batch loader. Both framework twins consume exactly the same batches from it."""
from .coco_categories import mscoco_category2label, mscoco_category2name, mscoco_label2category
from .coco_dataset import CocoDetection
from .errors import DataWarning, SampleUnavailable
from .label_maps import LabelMap
from .loader import DataLoader, collate_detection, derive_rng, epoch_order
from .transforms import TRANSFORMS, Compose, build_transform, build_transforms

__all__ = [
    "CocoDetection",
    "Compose",
    "DataLoader",
    "DataWarning",
    "LabelMap",
    "SampleUnavailable",
    "TRANSFORMS",
    "build_transform",
    "build_transforms",
    "collate_detection",
    "derive_rng",
    "epoch_order",
    "mscoco_category2label",
    "mscoco_category2name",
    "mscoco_label2category",
]
