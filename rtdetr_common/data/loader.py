"""Single-process, seeded, resumable batch iteration over a detection dataset.

Everything random is derived from the loader's ``seed``: epoch ``e`` is shuffled
with a generator seeded by ``(seed, ORDER_STREAM, e)``, the item at dataset index
``i`` is transformed with one seeded by ``(seed, SAMPLE_STREAM, e, i)``, and batch
``b`` offers one seeded by ``(seed, BATCH_STREAM, e, b)`` for batch-level choices
of the training loop. The loader's whole state is therefore ``(epoch, position)``;
restoring it resumes on exactly the batch an uninterrupted run would have
produced next.

Data-parallel runs (``world`` of ``rtdetr_common.distributed``): batches are global,
the same for every number of ranks, and each rank loads only its shard of each
(``shard_slice``); the state stays ``(epoch, position)`` in global batches, so it
resumes with any number of ranks. A shard none of whose items loads is yielded as
``None``, so that every rank sees every batch position and the caller can skip the
batch on all ranks together.
"""
import numpy as np

from ..distributed import SINGLE, shard_slice
from .errors import SampleUnavailable

# Distinct first keys keep the three kinds of generators from ever sharing a seed.
ORDER_STREAM, SAMPLE_STREAM, BATCH_STREAM = 0, 1, 2


def derive_rng(seed, *keys):
    """A NumPy generator determined by ``seed`` and the integer ``keys``."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def epoch_order(num_samples, shuffle, seed, epoch):
    """Dataset indices in the order epoch ``epoch`` visits them."""
    if not shuffle:
        return np.arange(num_samples)
    return derive_rng(seed, ORDER_STREAM, epoch).permutation(num_samples)


def collate_detection(samples):
    """``[(image CHW float32, target), ...]`` -> ``(images (B, 3, H, W), [target, ...])``."""
    images = [np.asarray(image) for image, _ in samples]
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"cannot batch images of different shapes {sorted(shapes)}; add a Resize")
    return np.stack(images).astype(np.float32, copy=False), [target for _, target in samples]


class DataLoader:
    """Batches of ``dataset`` items, reshuffled per epoch when ``shuffle``.

    ``len(loader)`` is the number of batches per epoch. Iterating yields the
    batches left in the current epoch, then moves to the next epoch. Items whose
    ``dataset.load`` raises ``SampleUnavailable`` are left out of their batch
    (a batch left empty is skipped; with several ranks it is yielded as ``None``).
    ``world``: this process's rank among data-parallel ranks; ``batch_size`` is global.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=0,
                 collate_fn=collate_detection, world=SINGLE):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.collate_fn = collate_fn
        self.world = world
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out
        self._cached_order = (None, None)  # (epoch, order)

    def __len__(self):
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    @property
    def remaining(self):
        """Batches left in the current epoch (a tqdm ``total`` for a resumed epoch)."""
        return max(len(self) - self.position, 0)

    def set_epoch(self, epoch):
        """Move to ``epoch`` from its start; a no-op if already in ``epoch`` (so a
        resumed mid-epoch position survives the usual per-epoch call)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self.position = 0

    def batch_indices(self, epoch, batch_index):
        cached_epoch, order = self._cached_order
        if cached_epoch != epoch:
            order = epoch_order(len(self.dataset), self.shuffle, self.seed, epoch)
            self._cached_order = (epoch, order)
        return order[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]

    def load_batch(self, epoch, batch_index):
        """This rank's shard of batch ``batch_index`` of ``epoch``, collated, or None if none
        of its items load (the whole batch in a single process)."""
        samples = []
        indices = self.batch_indices(epoch, batch_index)
        for index in indices[shard_slice(len(indices), self.world)]:
            try:
                rng = derive_rng(self.seed, SAMPLE_STREAM, epoch, index)
                samples.append(self.dataset.load(int(index), rng=rng))
            except SampleUnavailable:
                continue
        return self.collate_fn(samples) if samples else None

    def batch_rng(self):
        """A generator for batch-level randomness (e.g. a multi-scale size) of the
        batch most recently yielded; the same on every run and after resuming."""
        if self.position == 0:
            raise RuntimeError("no batch has been yielded in the current epoch")
        return derive_rng(self.seed, BATCH_STREAM, self.epoch, self.position - 1)

    def __iter__(self):
        if self.position >= len(self):
            self.epoch += 1
            self.position = 0
        while self.position < len(self):
            epoch, batch_index = self.epoch, self.position
            self.position += 1
            batch = self.load_batch(epoch, batch_index)
            if batch is not None or self.world.size > 1:
                yield batch
        self.epoch += 1
        self.position = 0

    def state_dict(self):
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "num_samples": len(self.dataset),
        }

    def load_state_dict(self, state):
        """Resume from ``state_dict()``; the loader must be configured the same way."""
        mine = self.state_dict()
        for key in ("seed", "batch_size", "shuffle", "drop_last", "num_samples"):
            if key in state and state[key] != mine[key]:
                raise ValueError(f"loader state has {key}={state[key]!r} but this loader has {mine[key]!r}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
