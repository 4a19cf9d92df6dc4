"""Parity of a data-parallel optimizer step, with real ranks (``torchrun`` for the
reference, ``mpirun`` for the Jittor twin; 2 ranks, the small synthetic config at 64 px,
a global batch of 4, both verdicts). See ``parity.distributed``.

- In each framework, one step on 2 ranks equals one single-process step on the same
  global batch, every rank's state judged tensor by tensor (float64: the logic verdict,
  every tensor judged; float32: against the one-process run's own one-ulp noise floor).
- Across frameworks, rank r of the 2-rank Jittor step equals rank r of the 2-rank
  reference step.

What the official recipe itself makes differ between 2 ranks and one process, so
these comparisons switch it off and use one fixed size: the denoising groups follow
each rank's own largest ground-truth count (and the denoising losses are normalised by
that rank's group count), and each rank draws its own denoising noise and multi-scale
size. ``test_denoising_makes_ranks_differ_from_one_process_but_not_between_frameworks``
shows the difference that remains with denoising on, and that the frameworks still
agree rank by rank there. Reports: reports/parity/<test>__<comparison>__rank<r>__<dtype>/.
"""
import os

import numpy as np
import pytest

from parity.distributed import (DistributedCase, across_frameworks, run_distributed_case, within_framework)

pytestmark = pytest.mark.parity

CONFIG = "configs/synthetic/rtdetr_r18vd_small_synthetic.yml"
CASE = DistributedCase(CONFIG, dtypes=("float64", "float32"), size=64, batch=4, steps=1, ranks=2, seed=11)
# Per image of the global batch: rank 0 holds images 0-1 (largest gt count 2), rank 1
# images 2-3 (largest 5); one process sees 5. With 30 denoising queries that is 15
# groups on rank 0, 6 on rank 1 and 6 in one process.
DN_CASE = DistributedCase(CONFIG, dtypes=("float64",), size=64, batch=4, steps=1, ranks=2, seed=12,
                          denoising=True, gt_counts=[1, 2, 5, 3])


@pytest.fixture(scope="module")
def runs(module_folder):
    return run_distributed_case(CASE, os.path.join(module_folder, "dp_steps"))


@pytest.fixture(scope="module")
def dn_runs(module_folder):
    return run_distributed_case(DN_CASE, os.path.join(module_folder, "dp_dn"),
                                runs=(("pytorch", 1), ("pytorch", 2), ("jittor", 2)))


def assert_verdicts(judged, parity_report, case):
    """Report each comparison; no tensor fails, and float64 judges every tensor."""
    for label, results, figures in judged:
        parity_report(results, case, label=label, **figures)
        failed = [f"{r.name}: {r.note}" for r in results if r.verdict == "fail"]
        assert not failed, (label, figures, failed[:10])
        if label.endswith("float64"):
            assert all(r.verdict == "pass" for r in results), label
        print(label, {k: f"{v:.3g}" for k, v in figures.items() if k != "rank"})


@pytest.mark.parametrize("framework", ["pytorch", "jittor"])
def test_two_ranks_equal_one_process_on_the_same_global_batch(runs, framework, parity_report):
    for dtype in CASE.dtypes:  # averaged gradients: every rank holds the same state, bit for bit,
        rank0, rank1 = (o["state"] for o in runs[(framework, 2)][dtype])  # so rank 0 is judged for both
        differ = [n for n in rank0 if ":probe:" not in n and not np.array_equal(rank0[n], rank1[n])]
        assert not differ, (dtype, differ[:5])
    judged = [c for dtype in CASE.dtypes for c in within_framework(CASE, runs, framework, dtype, ranks=(0,))]
    assert_verdicts(judged, parity_report, CASE)


def test_jittor_equals_the_reference_at_two_ranks_rank_by_rank(runs, parity_report):
    judged = [c for dtype in CASE.dtypes for c in across_frameworks(CASE, runs, dtype)]
    assert_verdicts(judged, parity_report, CASE)


def test_denoising_makes_ranks_differ_from_one_process_but_not_between_frameworks(dn_runs, parity_report):
    within = within_framework(DN_CASE, dn_runs, "pytorch", "float64", judged=False)  # shapes differ: figures only
    for label, _, figures in within:
        # the denoising losses are normalised per rank (15 vs 6 groups): loss and gradient
        # move far beyond float64 noise (measured: loss 5.3e-2 relative, gradient norm 7.3e-2;
        # with denoising off 4.4e-15 and 1.9e-14)
        assert figures["loss"] > 1e-3 and figures["gradient_l2"] > 1e-3, (label, figures)
        print(label, "(denoising on: differs by design)", {k: f"{v:.3g}" for k, v in figures.items() if k != "rank"})
    assert_verdicts(across_frameworks(DN_CASE, dn_runs, "float64"), parity_report, DN_CASE)
