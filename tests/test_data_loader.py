"""Tests of the seeded batch loader: epoch coverage, per-epoch shuffling, exact
mid-epoch resume, and skipping of unavailable items."""
from pathlib import Path

import numpy as np
import pytest

from rtdetr_common.data import CocoDetection, DataLoader, SampleUnavailable, collate_detection

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "fixtures" / "synthetic_coco"

TRAIN_OPS = [
    {"type": "RandomPhotometricDistort", "p": 0.5},
    {"type": "RandomZoomOut", "fill": 0},
    {"type": "RandomIoUCrop", "p": 0.8},
    {"type": "SanitizeBoundingBox", "min_size": 1},
    {"type": "RandomHorizontalFlip"},
    {"type": "Resize", "size": [48, 48]},
    {"type": "ToImageTensor"},
    {"type": "ConvertDtype"},
    {"type": "SanitizeBoundingBox", "min_size": 1},
    {"type": "ConvertBox", "out_fmt": "cxcywh", "normalize": True},
]


class IndexDataset:
    """Items are (a 1x1 image holding the index, {index, a draw from rng})."""

    def __init__(self, size, unavailable=()):
        self.size = size
        self.unavailable = set(unavailable)

    def __len__(self):
        return self.size

    def load(self, index, rng=None):
        if index in self.unavailable:
            raise SampleUnavailable(f"item {index}")
        image = np.full((3, 1, 1), index, dtype=np.float32)
        return image, {"index": index, "draw": float(rng.random())}


def indices(batch):
    return [target["index"] for target in batch[1]]


def synthetic_val_loader(**kwargs):
    dataset = CocoDetection(SYNTHETIC / "val", SYNTHETIC / "annotations/instances_val.json",
                            transforms=TRAIN_OPS, contiguous_labels=True)
    return DataLoader(dataset, **kwargs)


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for (images_a, targets_a), (images_b, targets_b) in zip(first, second):
        assert np.array_equal(images_a, images_b)
        for target_a, target_b in zip(targets_a, targets_b):
            assert target_a.keys() == target_b.keys()
            for key in target_a:
                assert np.array_equal(target_a[key], target_b[key]), key


def test_length_and_drop_last():
    assert len(DataLoader(IndexDataset(10), batch_size=4)) == 3
    assert len(DataLoader(IndexDataset(10), batch_size=4, drop_last=True)) == 2
    assert len(DataLoader(IndexDataset(8), batch_size=4, drop_last=True)) == 2
    assert [len(indices(b)) for b in DataLoader(IndexDataset(10), batch_size=4)] == [4, 4, 2]
    assert [len(indices(b)) for b in DataLoader(IndexDataset(10), batch_size=4, drop_last=True)] == [4, 4]


def test_each_epoch_visits_every_item_once_in_a_seeded_order():
    loader = DataLoader(IndexDataset(13), batch_size=5, shuffle=True, seed=3)
    epochs = [sum((indices(b) for b in loader), []) for _ in range(3)]
    assert all(sorted(order) == list(range(13)) for order in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    again = DataLoader(IndexDataset(13), batch_size=5, shuffle=True, seed=3)
    assert [sum((indices(b) for b in again), []) for _ in range(3)] == epochs
    other_seed = DataLoader(IndexDataset(13), batch_size=5, shuffle=True, seed=4)
    assert sum((indices(b) for b in other_seed), []) != epochs[0]
    assert sum((indices(b) for b in DataLoader(IndexDataset(13), batch_size=5)), []) == list(range(13))


def test_item_randomness_changes_with_epoch_but_not_with_rerun():
    loader = DataLoader(IndexDataset(4), batch_size=4)
    first, second = next(iter(loader)), next(iter(loader))
    assert indices(first) == indices(second)
    assert [t["draw"] for t in first[1]] != [t["draw"] for t in second[1]]
    replay = DataLoader(IndexDataset(4), batch_size=4)
    assert [t["draw"] for t in next(iter(replay))[1]] == [t["draw"] for t in first[1]]


def test_resume_mid_epoch_gives_the_uninterrupted_batches():
    uninterrupted = synthetic_val_loader(batch_size=3, shuffle=True, drop_last=True, seed=11)
    assert len(uninterrupted) == 5
    reference = [batch for _ in range(2) for batch in uninterrupted]

    interrupted = synthetic_val_loader(batch_size=3, shuffle=True, drop_last=True, seed=11)
    seen = list(interrupted)  # epoch 0
    for batch in interrupted:  # two batches into epoch 1, then "crash"
        seen.append(batch)
        if len(seen) == 7:
            break
    state = interrupted.state_dict()
    assert (state["epoch"], state["position"]) == (1, 2)

    resumed = synthetic_val_loader(batch_size=3, shuffle=True, drop_last=True, seed=11)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # the training loop's usual call keeps the position
    assert resumed.remaining == 3
    seen.extend(resumed)
    assert_same_batches(seen, reference)


def test_break_after_an_epochs_last_batch_starts_the_next_epoch():
    loader = DataLoader(IndexDataset(6), batch_size=3, shuffle=True, seed=0)
    reference = DataLoader(IndexDataset(6), batch_size=3, shuffle=True, seed=0)
    expected = [indices(b) for _ in range(2) for b in reference]
    got = []
    for batch in loader:
        got.append(indices(batch))
        if len(got) == 2:
            break
    got.extend(indices(b) for b in loader)
    assert got == expected


def test_state_from_a_differently_configured_loader_is_refused():
    state = DataLoader(IndexDataset(6), batch_size=3, seed=0).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(IndexDataset(6), batch_size=2, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        DataLoader(IndexDataset(6), batch_size=3, seed=1).load_state_dict(state)


def test_set_epoch_jumps_to_the_start_of_another_epoch():
    loader = DataLoader(IndexDataset(6), batch_size=2, shuffle=True, seed=5)
    next(iter(loader))
    loader.set_epoch(4)
    assert (loader.epoch, loader.position) == (4, 0)
    fresh = DataLoader(IndexDataset(6), batch_size=2, shuffle=True, seed=5)
    for _ in range(4):
        list(fresh)
    assert [indices(b) for b in loader] == [indices(b) for b in fresh]


def test_unavailable_items_are_left_out_of_their_batch():
    loader = DataLoader(IndexDataset(7, unavailable={1, 4, 5}), batch_size=3)
    assert [indices(b) for b in loader] == [[0, 2], [3], [6]]
    everything_missing = DataLoader(IndexDataset(4, unavailable={0, 1}), batch_size=2)
    assert [indices(b) for b in everything_missing] == [[2, 3]]


def test_collate_stacks_images_and_keeps_targets():
    samples = [(np.full((3, 4, 5), i, dtype=np.float32), {"i": i}) for i in range(3)]
    images, targets = collate_detection(samples)
    assert images.shape == (3, 3, 4, 5) and images.dtype == np.float32
    assert images[2].min() == 2 and [t["i"] for t in targets] == [0, 1, 2]
    with pytest.raises(ValueError, match="different shapes"):
        collate_detection([(np.zeros((3, 4, 5), np.float32), {}), (np.zeros((3, 5, 4), np.float32), {})])


def test_batch_rng_is_per_batch_and_survives_resume():
    loader = DataLoader(IndexDataset(8), batch_size=2, shuffle=True, seed=9)
    draws = []
    for _ in loader:
        draws.append(loader.batch_rng().random())
    assert len(set(draws)) == 4
    resumed = DataLoader(IndexDataset(8), batch_size=2, shuffle=True, seed=9)
    resumed.load_state_dict({"epoch": 0, "position": 2})
    assert [resumed.batch_rng().random() for _ in resumed] == draws[2:]
    with pytest.raises(RuntimeError):
        DataLoader(IndexDataset(8), batch_size=2).batch_rng()
