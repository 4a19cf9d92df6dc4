"""``--verify``: one eval forward of the reference and the Jittor twin on converted weights,
run by the parity harness (``parity.run``), not by a second copy of it.

The reference holds one state, the Jittor twin the other (``Pair.jittor_weight_edits``);
both get the same seeded input of ``size`` pixels. The Jittor twin is given the
reference's top-k query selection (the harness's forced decision): with near-tied
encoder scores the two frameworks may rank queries differently, which permutes output
rows (measured: 2 of 3 random r18vd models at 640 px differed by 0.17 in logits that
way) and says nothing about the weights. The encoder scores that decide the ranking
are compared instead, and the Jittor twin's own selection is still recorded
(``probes.decide``), so the positions it would rank differently are counted.

``DEFAULT_THRESHOLD``, 1e-4, is 15x the largest difference measured with realistic
random weights (r18vd, 640 px, 3 seeds: logits 4.5e-6, encoder scores 4.1e-6, boxes
9.5e-7; 64 px: 2.9e-6; r50vd, 640 px: logits 6.6e-6): rounding differences pass, a
wrongly converted tensor does not. An input too small to offer ``num_queries``
anchors is verified with fewer queries (the weights do not depend on that number).
"""
import math

import numpy as np

from rtdetr_common.config import deep_merge, load_config

from .fit import NO_PRETRAINED
from .read import read_state_dict

DEFAULT_THRESHOLD = 1e-4
OUTPUTS = {"pred_logits": "probe:output.pred_logits", "pred_boxes": "probe:output.pred_boxes",
           "decoder.enc_outputs_class": "probe:decoder.enc_outputs_class"}
SELECTION = "probe:decoder.topk_ind"


def anchor_count(size, strides):
    """Anchors (feature-map cells over all levels) for a square ``size`` input."""
    return sum(math.ceil(size / s) ** 2 for s in strides)


def verify_overrides(config, size, overrides=None):
    """``overrides`` plus fewer queries when ``size`` offers fewer anchors than queries."""
    overrides = deep_merge(NO_PRETRAINED, overrides or {})
    decoder = load_config(config, overrides).get("RTDETRTransformer", {})
    anchors = anchor_count(size, decoder.get("feat_strides", [8, 16, 32]))
    if decoder.get("num_queries", 300) > anchors:
        print(f"note: a {size}px input has {anchors} anchors; verifying with num_queries={anchors}")
        overrides = deep_merge(overrides, {"RTDETRTransformer": {"num_queries": anchors}})
    return overrides


def compare_outputs(config, torch_state, jittor_state, size=640, seed=0, overrides=None, impose_selection=True):
    """Eval forward of the reference holding ``torch_state`` and the Jittor twin holding
    ``jittor_state`` (NumPy, official names) on one seeded input, through the harness.
    ``impose_selection=False`` lets each framework rank its own queries.
    Returns ``({output: max |torch - jittor|}, ranked positions Jittor's own top-k changes)``."""
    import tempfile

    from parity import store
    from parity.run import build_pair, make_batch, run_passes
    overrides = verify_overrides(config, size, overrides)
    pair = build_pair(config, overrides, random_weights=False)
    pair.weights = dict(torch_state)
    pair.jittor_weight_edits = dict(jittor_state)
    images, _ = make_batch(seed, 1, size, pair.ref.cfg["num_classes"])
    with tempfile.TemporaryDirectory(prefix="verify-captures-") as directory:
        run_passes(pair, "eval", images, None, directory, force_topk=impose_selection)
        ref = store.load_capture(directory, "reference").by_name()
        jtw = store.load_capture(directory, "jittor").by_name()
        diffs = {name: float(np.abs(ref[key].value.astype(np.float64) - jtw[key].value).max())
                 for name, key in OUTPUTS.items()}
        changed = int((np.asarray(ref[SELECTION].value) != np.asarray(jtw[SELECTION].value)).sum())
    return diffs, changed


def verify(src, dst, to, config, size=640, seed=0, overrides=None):
    """The source into its framework's model, the written file into the other's; compare."""
    source, written = read_state_dict(src)[0], read_state_dict(dst)[0]
    torch_state, jittor_state = (source, written) if to == "jittor" else (written, source)
    return compare_outputs(config, torch_state, jittor_state, size, seed, overrides)
