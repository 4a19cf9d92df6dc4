"""Ranks, shards and object exchange of data-parallel training, written once for both frameworks.

A data-parallel run is ``World(rank, size)``: ``size`` processes started by the
framework's launcher (``torchrun`` for the reference, ``mpirun`` for the Jittor twin;
each twin's ``distributed.py`` learns its place from it and holds the framework's
collectives). Every rank trains on its own shard of the *same global batch*: the
loader (``rtdetr_common.data.loader``) hands out global batches exactly as a
single-process loader of that batch size does, and ``shard_slice`` cuts each into
``size`` contiguous shards, rank 0's first. The loader's state therefore does not
depend on the number of ranks, so a checkpoint resumes with any number of them.

Objects that are not tensors (detections for COCO scoring, generator states for
checkpoints, loss terms, metrics) travel as pickled bytes through integer all-reduces
(``gather_objects``): all-reduce and broadcast are what both frameworks offer alike
(Jittor's MPI has no gather).

Training randomness (denoising noise, multi-scale sizes) comes from one generator
per rank, as the official recipe seeds each rank with its own seed: rank 0's is the
single-process stream (``rank_generator``), so a one-rank run is unchanged.
"""
import pickle
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class World:
    """This process's ``rank`` among ``size`` data-parallel processes."""
    rank: int = 0
    size: int = 1

    def __post_init__(self):
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise ValueError(f"invalid data-parallel world: rank {self.rank} of {self.size}")

    @property
    def main(self):
        """Rank 0: the one process that writes checkpoints, logs and results."""
        return self.rank == 0


SINGLE = World(0, 1)

# A rank's generator key, apart from seeds a loader derives (``loader.derive_rng`` keys 0-2).
RANK_STREAM = 3


def shard_slice(count, world):
    """The slice of a global batch of ``count`` items that ``world.rank`` takes: contiguous
    shards in rank order, the first ``count % size`` of them one item longer."""
    per, extra = divmod(int(count), world.size)
    start = world.rank * per + min(world.rank, extra)
    return slice(start, start + per + (world.rank < extra))


def check_global_batch(batch_size, world):
    """Training splits every global batch evenly; refuse a batch size that does not split."""
    if batch_size % world.size:
        raise ValueError(f"--batch-size is the global batch size and must be a multiple of the number of "
                         f"ranks: {batch_size} images do not split evenly over {world.size} ranks")
    return batch_size // world.size


def rank_generator(seed, rank):
    """The training-noise generator of ``rank``: the single-process one for rank 0."""
    return np.random.default_rng(seed if rank == 0 else [int(seed), RANK_STREAM, int(rank)])


def rank_stream_state(extra, world, seed, step):
    """The generator state ``world.rank`` resumes from a checkpoint's ``extra``: its own if
    the run that wrote it had this rank (``training_rng_by_rank``); for rank 0 the
    single-process stream (``training_rng``, else a fresh one of ``seed``); for a rank
    the writing run did not have, a fresh stream keyed by the step."""
    by_rank = extra.get("training_rng_by_rank") or []
    if world.rank < len(by_rank):
        return by_rank[world.rank]
    if world.rank == 0:
        return extra.get("training_rng") or rank_generator(seed, 0).bit_generator.state
    return np.random.default_rng([int(seed), RANK_STREAM, world.rank, int(step)]).bit_generator.state


def gather_objects(obj, world, all_reduce_sum):
    """Every rank's ``obj`` (picklable), in rank order, on every rank. ``all_reduce_sum``
    sums a NumPy array (float64 or int32) over the ranks and returns the sum."""
    if world.size == 1:
        return [obj]
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    lengths = np.zeros(world.size, np.float64)
    lengths[world.rank] = len(payload)
    lengths = all_reduce_sum(lengths).astype(np.int64)
    words = -(-int(lengths.max()) // 4)
    table = np.zeros((world.size, words), np.int32)  # one row per rank, zeros elsewhere: the sum is exact
    table[world.rank] = np.frombuffer(payload.ljust(4 * words, b"\0"), np.int32)
    table = all_reduce_sum(table)
    return [pickle.loads(table[r].tobytes()[:lengths[r]]) for r in range(world.size)]


def broadcast_object(obj, world, all_reduce_sum, root=0):
    """``obj`` of rank ``root`` on every rank (the others' ``obj`` is ignored)."""
    return gather_objects(obj if world.rank == root else None, world, all_reduce_sum)[root]


def mean_over_ranks(loss_value, losses, world, all_reduce_sum):
    """The loss and its terms averaged over ranks (official ``reduce_dict``); a term some
    rank lacks (no denoising group there) counts 0 on that rank."""
    if world.size == 1:
        return loss_value, losses
    parts = gather_objects((loss_value, losses), world, all_reduce_sum)
    keys = list(dict.fromkeys(k for _, terms in parts for k in terms))
    return (sum(v for v, _ in parts) / world.size,
            {k: sum(terms.get(k, 0.0) for _, terms in parts) / world.size for k in keys})


def all_ranks_agree(flag, world, all_reduce_sum):
    """Whether ``flag`` holds on every rank (e.g. every shard of a batch loaded)."""
    if world.size == 1:
        return bool(flag)
    return int(all_reduce_sum(np.array([int(bool(flag))], np.int32))[0]) == world.size
