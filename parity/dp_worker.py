"""One rank of a data-parallel optimizer-step comparison: ``python -m parity.dp_worker``.

Started by ``parity.distributed`` alone (one process) or under the framework's own
launcher (``torchrun`` for ``pytorch``, ``mpirun`` for ``jittor``). It reads the case
file that ``parity.distributed.prepare`` wrote (config, weights, global batches),
builds its framework's twin with those weights through the framework's backend and,
with several ranks, synchronises BatchNorm and broadcasts the weights as the engines
do. Each step it trains (``parity.steps._Trainer``, the official recipe) on its shard
of the global batch, with gradients averaged over the ranks, and records the state
after the step (``_Trainer.snapshot``; the loss is the average over ranks, as the
engines report it). ``--floor-runs`` more copies train on the same batches moved by
one float32 ulp (their drift is the noise floor of this framework's state). With
``--forced`` the float32-built constants of each step are taken from another worker's
output of the same rank (in float64, as ``parity.steps`` forces the reference's). Runs
each of the case's dtypes in turn and writes ``<out>_rank<r>.pkl``: ``{dtype: output}``.
"""
import argparse
import importlib
import pickle
import time

import numpy as np

from rtdetr_common.checkpoint_io import save_atomic
from rtdetr_common.distributed import RANK_STREAM, mean_over_ranks, shard_slice

from .decisions import ForcedSequence, as_tensor_of
from .passes import perturb_one_ulp
from .run import Side
from .steps import _Trainer

BACKENDS = {"pytorch": "reference_pytorch.backend", "jittor": "rtdetr_jittor.backend"}


def _trainer(backend, case, dtype, world):
    built = backend.build(case["config"], case["overrides"])
    if dtype == "float64":
        backend.to_float64(built.model)
    side = Side(backend, built, case["weights"])
    side.load_weights()
    if world.size > 1:
        backend.sync_batch_norm(built.model)
        backend.broadcast_state(built.model)
    noise_seed = case["noise_seed"] if world.rank == 0 else [case["noise_seed"], RANK_STREAM, world.rank]
    return _Trainer(side, noise_seed, case["multi_scale"],
                    reduce_gradients=backend.average_gradients if world.size > 1 else None)


def _shard(images, targets, world, dtype):
    part = shard_slice(len(images), world)
    images = images[part].astype(dtype)
    targets = [{k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in t.items()} for t in targets[part]]
    return images, targets


def run(backend, case, dtype, world, forced=None, floor_runs=0):
    """Train on every global batch of ``case`` (one step each) in ``dtype``, with
    ``floor_runs`` perturbed copies (float32 only); returns this rank's output dict."""
    floor_runs = floor_runs if dtype == "float32" else 0
    trainers = [_trainer(backend, case, dtype, world) for _ in range(1 + floor_runs)]
    out = {"rank": world.rank, "world_size": world.size, "framework": backend.NAME, "dtype": dtype,
           "state": {}, "floor_states": [{} for _ in trainers[1:]], "constants": [], "seconds": []}
    for k, (images, targets) in enumerate(case["batches"], start=1):
        t0 = time.time()
        step_forced = {}
        if forced is not None:
            step_forced = {name: ForcedSequence([as_tensor_of(backend, v) for v in values])
                           for name, values in forced["constants"][k - 1].items()}
        for i, trainer in enumerate(trainers):
            batch = images if i == 0 else perturb_one_ulp(images, seed=1000 * (i - 1) + k)
            loss, grad_norm, constants = trainer.step(*_shard(batch, targets, world, dtype),
                                                      step_forced if i == 0 else None)
            mean_loss, _ = mean_over_ranks(float(np.asarray(loss).reshape(())), {}, world, backend.all_reduce_sum)
            state = trainer.snapshot(k, np.asarray(mean_loss, dtype), grad_norm, constants)
            if i == 0:
                out["state"].update(state)
                out["constants"].append(constants)
                out["seconds"].append(time.time() - t0)
            else:
                out["floor_states"][i - 1].update(state)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("framework", choices=sorted(BACKENDS))
    p.add_argument("case", help="case.pkl written by parity.distributed.prepare")
    p.add_argument("out", help="output prefix: <out>_rank<r>.pkl is written")
    p.add_argument("--forced", default=None, help="prefix of another worker's output whose constants to force")
    p.add_argument("--floor-runs", type=int, default=0, help="copies trained on one-ulp-perturbed batches")
    args = p.parse_args(argv)
    backend = importlib.import_module(BACKENDS[args.framework])
    world = backend.init_world()
    with open(args.case, "rb") as f:
        case = pickle.load(f)
    forced = {}
    if args.forced:
        with open(f"{args.forced}_rank{world.rank}.pkl", "rb") as f:
            forced = pickle.load(f)
    save_atomic({dtype: run(backend, case, dtype, world, forced.get(dtype) if dtype == "float64" else None,
                            args.floor_runs)
                 for dtype in case["dtypes"]}, f"{args.out}_rank{world.rank}.pkl")


if __name__ == "__main__":
    main()
