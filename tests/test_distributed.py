"""Data-parallel building blocks in one process: shards, the sharded loader, object
exchange over a sum, per-rank noise streams, loss averaging, and each twin's
``SyncBatchNorm2d`` (whose collectives are identities with one rank) against the
plain BatchNorm. Runs with several real ranks are in ``test_distributed_steps.py``
(optimizer-step parity) and ``test_distributed_train.py`` (the train and eval tools)."""
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtdetr_common.data import DataLoader
from rtdetr_common.distributed import (SINGLE, World, all_ranks_agree, broadcast_object, check_global_batch,
                                       gather_objects, mean_over_ranks, rank_generator, rank_stream_state,
                                       shard_slice)
from tests.test_data_loader import IndexDataset, indices


@given(st.integers(0, 40), st.integers(1, 8))
def test_shards_cover_the_batch_in_order_and_differ_by_at_most_one(count, size):
    parts = [list(range(count))[shard_slice(count, World(rank, size))] for rank in range(size)]
    assert sum(parts, []) == list(range(count))
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_world_and_global_batch_are_checked():
    with pytest.raises(ValueError, match="rank 2 of 2"):
        World(2, 2)
    with pytest.raises(ValueError, match="6 images do not split evenly over 4 ranks"):
        check_global_batch(6, World(0, 4))
    assert check_global_batch(8, World(1, 4)) == 2


def test_sharded_loader_yields_the_single_process_batches_split_by_rank():
    dataset = IndexDataset(11)
    single = DataLoader(dataset, batch_size=4, shuffle=True, seed=3)
    ranks = [DataLoader(dataset, batch_size=4, shuffle=True, seed=3, world=World(r, 2)) for r in range(2)]
    for _ in range(2):  # two epochs
        expected = [(indices(b), b[1]) for b in single]
        got = list(zip(*[list(loader) for loader in ranks]))
        assert len(got) == len(expected) == 3
        for (want, targets), shards in zip(expected, got):
            assert [i for shard in shards for i in indices(shard)] == want
            # per-item randomness follows the item, not the rank
            assert [t["draw"] for shard in shards for t in shard[1]] == [t["draw"] for t in targets]
    assert all(loader.state_dict() == single.state_dict() for loader in ranks)


def test_a_rank_whose_shard_does_not_load_gets_none_so_the_ranks_stay_in_step():
    dataset = IndexDataset(4, unavailable={2, 3})
    ranks = [list(DataLoader(dataset, batch_size=4, world=World(r, 2))) for r in range(2)]
    assert indices(ranks[0][0]) == [0, 1] and ranks[1] == [None]
    assert list(DataLoader(dataset, batch_size=2)) and len(list(DataLoader(dataset, batch_size=2))) == 1


class FakeRanks:
    """``size`` threads standing for ranks: ``all_reduce_sum`` sums each call's arrays over them."""

    def __init__(self, size):
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots = [None] * size
        self.calls = 0

    def reducer(self, rank):
        def all_reduce_sum(array):
            self.slots[rank] = np.array(array, copy=True)
            self.barrier.wait()
            total = sum(self.slots[1:], self.slots[0].copy())
            self.barrier.wait()
            self.calls += rank == 0
            return total.astype(np.asarray(array).dtype)
        return all_reduce_sum

    def run(self, fn):
        """``[fn(world, all_reduce_sum) for every rank]``, the ranks running concurrently."""
        results = [None] * self.size

        def target(rank):
            results[rank] = fn(World(rank, self.size), self.reducer(rank))
        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return results


def test_objects_of_every_size_travel_through_a_sum():
    payloads = [{"rank": 0, "dets": np.arange(7.0)}, None, "x" * 1001]  # unequal, odd lengths
    got = FakeRanks(3).run(lambda world, reduce: gather_objects(payloads[world.rank], world, reduce))
    for per_rank in got:
        assert per_rank[1] is None and per_rank[2] == "x" * 1001
        assert np.array_equal(per_rank[0]["dets"], np.arange(7.0))
    root = FakeRanks(2).run(lambda world, reduce: broadcast_object(f"from {world.rank}", world, reduce))
    assert root == ["from 0", "from 0"]
    assert gather_objects("alone", SINGLE, None) == ["alone"]


def test_losses_are_averaged_over_ranks_and_a_missing_term_counts_zero():
    losses = [(3.0, {"a": 1.0, "dn": 2.0}), (5.0, {"a": 3.0})]
    got = FakeRanks(2).run(lambda world, reduce: mean_over_ranks(*losses[world.rank], world, reduce))
    assert got[0] == got[1] == (4.0, {"a": 2.0, "dn": 1.0})
    agree = FakeRanks(2).run(lambda world, reduce: all_ranks_agree(world.rank == 0, world, reduce))
    assert agree == [False, False]


def test_rank_zero_keeps_the_single_process_stream_and_other_ranks_their_own():
    assert rank_generator(5, 0).random() == np.random.default_rng(5).random()
    draws = {rank_generator(5, r).random() for r in range(4)}
    assert len(draws) == 4
    saved = [rank_generator(9, r).bit_generator.state for r in range(2)]
    extra = {"training_rng": saved[0], "training_rng_by_rank": saved}
    assert rank_stream_state(extra, World(1, 2), 0, 10) == saved[1]
    assert rank_stream_state(extra, SINGLE, 0, 10) == saved[0]
    fresh = rank_stream_state({"training_rng": saved[0]}, World(1, 2), 0, 10)
    assert fresh != saved[0] and fresh == rank_stream_state({}, World(1, 2), 0, 10)


def _batch(seed, dtype):
    rng = np.random.default_rng(seed)
    return (rng.normal(1.0, 2.0, (3, 4, 5, 6)).astype(dtype), rng.normal(0.0, 1.0, (3, 4, 5, 6)).astype(dtype))


def test_torch_sync_batch_norm_on_one_rank_is_batch_norm():
    import torch
    import torch.distributed as dist
    from reference_pytorch.distributed import SyncBatchNorm2d, sync_batch_norm
    x, dy = _batch(0, np.float64)
    plain = torch.nn.Sequential(torch.nn.BatchNorm2d(4)).double()
    synced = sync_batch_norm(torch.nn.Sequential(torch.nn.BatchNorm2d(4)).double())
    assert isinstance(synced[0], SyncBatchNorm2d)
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        outs = []
        for model in (plain, synced):
            xt = torch.tensor(x, requires_grad=True)
            y = model(xt)
            y.backward(torch.tensor(dy))
            outs.append((y.detach().numpy(), xt.grad.numpy(), model[0].weight.grad.numpy(),
                         model[0].running_mean.numpy(), model[0].running_var.numpy(),
                         int(model[0].num_batches_tracked)))
    finally:
        dist.destroy_process_group()
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)  # float64: measured 5.2e-16 of the scale


def test_jittor_sync_batch_norm_on_one_rank_is_batch_norm():
    from rtdetr_jittor._env import jt
    from rtdetr_jittor.compat import BatchNorm2d
    from rtdetr_jittor.distributed import SyncBatchNorm2d, sync_batch_norm
    x, dy = _batch(1, np.float32)
    plain = jt.nn.Sequential(BatchNorm2d(4))
    synced = sync_batch_norm(jt.nn.Sequential(BatchNorm2d(4)))
    assert isinstance(synced[0], SyncBatchNorm2d)
    outs = []
    for model in (plain, synced):
        model.train()
        xv = jt.array(x)
        y = model(xv)
        gx, gw = jt.grad((y * jt.array(dy)).sum(), [xv, model[0].weight])
        outs.append((y.numpy(), gx.numpy(), gw.numpy(), model[0].running_mean.numpy(), model[0].running_var.numpy(),
                     int(model[0].num_batches_tracked.numpy().reshape(()))))
    for a, b in zip(*outs):
        # float32, fused kernel vs composed ops with the all-reduce: measured 1.0e-7 of the scale (weight gradient)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_infer_refuses_to_run_on_several_ranks():
    from types import SimpleNamespace
    from rtdetr_common.loops import run_infer
    engine = SimpleNamespace(world=World(1, 2))
    with pytest.raises(ValueError, match="infer runs in one process, not on 2 data-parallel ranks"):
        run_infer(engine, SimpleNamespace())


def test_each_twin_refuses_the_other_frameworks_launcher(monkeypatch):
    from reference_pytorch.distributed import init_world as reference_world
    from rtdetr_jittor.distributed import init_world as jittor_world
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="started by mpirun: the reference runs data-parallel under torchrun"):
        reference_world()
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="started by torchrun: the Jittor twin runs data-parallel under mpirun"):
        jittor_world()
    monkeypatch.delenv("WORLD_SIZE")
    assert reference_world() == jittor_world() == SINGLE
