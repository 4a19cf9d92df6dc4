"""Compile the Jittor kernels the shipped configs need, so a user's first run does not.

``make setup`` runs this after Jittor's core compile: for each model below, one eval
forward (batch 1) and one training step (batch 2) at 640 px through the same engine
the tools use. Jittor keeps the compiled kernels in its cache (``~/.cache/jittor``,
keyed by the path of the Jittor installation), so later processes only load them.
r34vd and r101vd are built from the same blocks as r18vd and r50vd. Progress and the
seconds of each stage are printed; a stage that fails stops set-up with its error.

    python scripts/warm_jittor_kernels.py [--models r18vd r50vd] [--size 640]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.worker import JittorRunner  # noqa: E402

PHASES = (("eval", 1), ("train", 2))


def warm(models, size):
    for model in models:
        for phase, batch in PHASES:
            t0 = time.perf_counter()
            print(f"  {model} {phase} (batch {batch}, {size} px) ...", end="", flush=True)
            runner = JittorRunner({"framework": "jittor", "model": model, "size": size, "phase": phase,
                                   "batch": batch, "threads": int(os.environ.get("OMP_NUM_THREADS", "2"))})
            runner.step()
            print(f" {time.perf_counter() - t0:.0f} s", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["r18vd", "r50vd"])
    p.add_argument("--size", type=int, default=640)
    args = p.parse_args(argv)
    warm(args.models, args.size)


if __name__ == "__main__":
    main()
