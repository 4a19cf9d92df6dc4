"""Mappings between dataset category ids and the model's class labels.

Three schemes: the official MS-COCO table (80 ids -> 0..79), contiguous labels built
from an annotation file's own categories (sorted ids -> 0..K-1), and the identity
(label = category id, as the official code does without remapping).
"""
from dataclasses import dataclass

from .coco_categories import mscoco_category2label, mscoco_category2name


@dataclass(frozen=True)
class LabelMap:
    category2label: dict
    label2category: dict
    label_names: dict  # label -> category name

    @property
    def num_classes(self):
        """Size of the label space the model needs (largest label + 1)."""
        return max(self.label2category, default=-1) + 1

    @classmethod
    def from_pairs(cls, pairs):
        """From (category_id, label, name) triples."""
        pairs = list(pairs)
        return cls(
            category2label={cid: label for cid, label, _ in pairs},
            label2category={label: cid for cid, label, _ in pairs},
            label_names={label: name for _, label, name in pairs},
        )


def mscoco_label_map():
    return LabelMap.from_pairs(
        (cid, mscoco_category2label[cid], name) for cid, name in mscoco_category2name.items()
    )


def contiguous_label_map(categories):
    """``categories``: COCO category dicts ({id, name}); labels follow ascending id."""
    ordered = sorted(categories, key=lambda cat: cat["id"])
    return LabelMap.from_pairs((cat["id"], label, cat["name"]) for label, cat in enumerate(ordered))


def identity_label_map(categories):
    return LabelMap.from_pairs((cat["id"], cat["id"], cat["name"]) for cat in categories)
