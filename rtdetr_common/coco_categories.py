"""The 80 MS-COCO categories and the official label <-> category-id tables, for the
post-processor's ``remap_mscoco_category`` and the dataset.

Single source: the tables live in ``rtdetr_common/data/coco_categories.py``; this
module re-exports them so both import paths give the same objects.
"""
from rtdetr_common.data.coco_categories import (  # noqa: F401
    mscoco_category2label,
    mscoco_category2name,
    mscoco_label2category,
)

__all__ = ["mscoco_category2name", "mscoco_category2label", "mscoco_label2category"]
