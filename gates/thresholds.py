"""Every gate threshold, each with the reason for its value and the figure measured
on this machine behind it. Checks in ``run_gates`` and ``official`` read them from here."""
from collections import namedtuple

Threshold = namedtuple("Threshold", "value reason")

TRAIN_LOSS_DROP = Threshold(
    0.10, "quick form, 8 steps on one batch of 4 with fixed noise: loss fell 17.1% in both frameworks "
          "(PyTorch 30.02 -> 24.88, Jittor 30.41 -> 25.20); a learning rate of 0 leaves it exactly unchanged")
EVAL_AP_DIFF_POINTS = Threshold(
    0.1, "same weights, same images: AP equal to all printed digits in both forms (difference 0.0 points)")
EVAL_BOX_PX = Threshold(
    1e-3, "same weights: boxes differ by at most 3.8e-5 px at 64 px (quick) and 8.0e-5 px at 128 px (full), "
          "float32 rounding of coordinates; 1e-3 px is still 1/1000 of a pixel")
EVAL_SCORE = Threshold(
    1e-5, "same weights: scores differ by at most 1.0e-7 (quick) and 1.7e-6 (full), float32 rounding of "
          "a sigmoid")
INFER_MIN_DETECTIONS = Threshold(
    1, "content checks of an empty detection list would pass vacuously; on the 3 photographs and 2 synthetic "
       "images the full form keeps 53 (PyTorch) and 63 (Jittor) detections at score 0.3, the quick form "
       "150 (PyTorch) and 75 (Jittor) at 0.05 (its scores after 8 steps: 0.05-0.08)")
RESUME_MAX_DIFF = Threshold(
    0.0, "same framework, same batches and noise, deterministic CPU kernels: measured 0.0 in both frameworks")
CROSS_RESUME_FLOOR_RATIO = Threshold(
    3.0, "L2 weight distance of the cross-framework continuation over its float32 floor: measured 1.00 "
         "both ways (quick, 2 steps), 1.42 and 0.75 (full, 5 steps); resuming one step early gives 500x")

DISTRIBUTED_RESUME_FLOOR_RATIO = Threshold(
    3.0, "L2 weight distance of a 2-rank checkpoint continued in one process from its 2-rank continuation, "
         "over the float32 floor of the one-process continuation (5 + 5 steps, denoising off): measured 0.20 "
         "(PyTorch) and 0.61 (Jittor); 0.94 and 1.15 with two-pass BatchNorm statistics; the cross-framework "
         "resume measures 1.42 and 0.75")

OFFICIAL = {
    "loss_drop": Threshold(
        0.05, "first batch re-measured after 30 steps (same noise): loss fell 11.2% in both frameworks "
              "(25.69 -> 22.82 / 22.83)"),
    "band": Threshold(
        0.01, "same initial weights, batches and noise: the two curves differ by at most 0.36% relative "
              "over 30 steps (float32 rounding grown by training)"),
    "late_kernels": Threshold(
        4, "Jittor kernels first loaded after step 2: measured 1 (at step 20, the batch with the most "
           "boxes); run alone, steps 1-2 load 245 (after gates 1-5 in one process, none)"),
}
