"""Convert RT-DETR weights between PyTorch and Jittor: ``python -m rtdetr_jittor.convert``.

    python -m rtdetr_jittor.convert SRC DST [--to jittor|torch] [-c CONFIG] [--set JSON]
                                    [--verify] [--size 640] [--seed 0] [--threshold 1e-4]

SRC may be an official ``.pth`` (weights under ``['ema']['module']``, preferred, or
``['model']``, or a bare state_dict), a Jittor file (``jt.save``) or one of this
project's framework-neutral checkpoints. ``--to jittor`` (default) writes a Jittor
file (``jt.save`` of ``{'model': state}``, NumPy arrays, ``num_batches_tracked`` of
shape [1]); ``--to torch`` writes a ``.pth`` of ``{'model': state}`` that
``torch.load(weights_only=True)`` reads and ``reference_pytorch`` loads with
``strict=True`` (``num_batches_tracked`` int64, 0-d, as torch stores it).

``-c CONFIG`` builds the target model and loads the weights into it strictly:
missing, unexpected or mis-shaped keys stop the conversion with a message naming
them, and nothing is written. ``--verify`` (needs ``-c``) loads SRC into its
framework's model and the written DST into the other, runs one eval forward on the
same seeded input of ``--size`` pixels and prints the largest absolute difference of
``pred_logits``, ``pred_boxes`` and the encoder's class scores over all anchors. The
Jittor model is given the reference's top-k query selection: with near-tied encoder
scores the two frameworks may rank queries differently, which permutes output rows
(measured: 2 of 3 random r18vd models at 640 px differed by 0.17 in logits that way)
and says nothing about the weights; the encoder scores that decide the ranking are
compared instead. The default threshold, 1e-4, is 15x the largest difference
measured with realistic random weights (r18vd, 640 px, 3 seeds: logits 4.5e-6,
encoder scores 4.1e-6, boxes 9.5e-7; 64 px: 2.9e-6; r50vd, 640 px: logits 6.6e-6):
rounding differences pass, a wrongly converted tensor does not. If the input is too small to offer
``num_queries`` anchors, the verify models use fewer queries (the weights do not
depend on that number).

Exit status: 0 done (and verified), 1 verification above the threshold, 2 the
source cannot be read or does not fit the model (nothing written).

This is the one Jittor-side module that imports the reference (lazily, for ``--to
torch -c`` and ``--verify`` only): comparing the two is its job.
"""
import argparse
import json
import math
import os
import sys
import tempfile

import numpy as np

from rtdetr_jittor._env import jt
from rtdetr_common.checkpoint_io import CheckpointError
from rtdetr_jittor.compat import StateDictError

EXIT_OK, EXIT_VERIFY_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_THRESHOLD = 1e-4
NO_PRETRAINED = {"PResNet": {"pretrained": False}}


# --- values and conventions ---------------------------------------------------------

def as_numpy(value):
    """A torch tensor, Jittor Var or array-like as a NumPy array."""
    if isinstance(value, jt.Var):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _is_counter(name):
    return name.rsplit(".", 1)[-1] == "num_batches_tracked"


def torch_conventions(state):
    """NumPy state with ``num_batches_tracked`` as torch stores it: int64, 0-d."""
    return {k: (np.asarray(as_numpy(v), dtype=np.int64).reshape(()) if _is_counter(k) else as_numpy(v))
            for k, v in state.items()}


def jittor_conventions(state):
    """NumPy state with ``num_batches_tracked`` as the Jittor twin stores it: shape [1], int64."""
    return {k: (np.asarray(as_numpy(v), dtype=np.int64).reshape(1) if _is_counter(k) else as_numpy(v))
            for k, v in state.items()}


# --- reading, checking, writing ------------------------------------------------------

def read_source(path):
    """The model state_dict in ``path`` (any supported layout), as NumPy arrays."""
    from rtdetr_jittor.checkpoint import read_weights
    return {k: as_numpy(v) for k, v in read_weights(path).items()}


def build_model(framework, config, overrides=None):
    """The model of ``config`` in ``framework`` ('jittor' or 'torch')."""
    from rtdetr_common.config import deep_merge
    overrides = deep_merge(NO_PRETRAINED, overrides or {})
    if framework == "jittor":
        import rtdetr_jittor
        return rtdetr_jittor.build(config, overrides).model
    import reference_pytorch
    return reference_pytorch.build(config, overrides).model


def fit_to_model(state, framework, config, overrides=None):
    """Load ``state`` strictly into the target model of ``config``; return the model's
    own state (NumPy, that framework's conventions). Raises ``StateDictError`` naming keys."""
    model = build_model(framework, config, overrides)
    if framework == "jittor":
        from rtdetr_jittor.checkpoint import load_model_state
        load_model_state(model, state, strict=True)
        return {k: v.numpy() for k, v in model.state_dict().items()}
    from reference_pytorch.checkpoint import StateDictError as TorchStateDictError
    from reference_pytorch.checkpoint import load_model_state, model_state_numpy
    try:
        load_model_state(model, state, strict=True)
    except TorchStateDictError as e:
        raise StateDictError(str(e)) from e
    return model_state_numpy(model)


def _write_atomic(path, write):
    """Call ``write(tmp_path)`` and move the file onto ``path`` only once it is complete."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=os.path.dirname(path))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_jittor_name(path):
    """``jt.save`` writes torch's zip format for these suffixes, not a Jittor file."""
    if path.endswith((".pth", ".pt", ".bin")):
        raise ValueError(f"{path}: jt.save writes torch's format for .pth/.pt/.bin names; "
                         "give the Jittor file another suffix (e.g. .pkl)")


def write_jittor(state, path):
    """``jt.save({'model': state})`` (a checksummed pickle of NumPy arrays)."""
    check_jittor_name(path)
    _write_atomic(path, lambda tmp: jt.save({"model": jittor_conventions(state)}, tmp))


def write_torch(state, path):
    """``torch.save({'model': state})`` with tensors only (``weights_only=True`` loads it)."""
    import torch
    # np.array, not np.ascontiguousarray: the latter turns 0-d counters into shape [1]
    tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in torch_conventions(state).items()}
    _write_atomic(path, lambda tmp: torch.save({"model": tensors}, tmp))


def convert(src, dst, to="jittor", config=None, overrides=None):
    """Read ``src``, check it against ``config``'s model if given, write ``dst``; return
    the written state (NumPy)."""
    if to == "jittor":
        check_jittor_name(dst)
    state = read_source(src)
    if config:
        state = fit_to_model(state, to, config, overrides)
    if to == "jittor":
        write_jittor(state, dst)
        return jittor_conventions(state)
    write_torch(state, dst)
    return torch_conventions(state)


# --- verification -------------------------------------------------------------------

def anchor_count(size, strides):
    """Anchors (feature-map cells over all levels) for a square ``size`` input."""
    return sum(math.ceil(size / s) ** 2 for s in strides)


def verify_overrides(config, size, overrides=None):
    """``overrides`` plus fewer queries when ``size`` offers fewer anchors than queries."""
    from rtdetr_common.config import deep_merge, load_config
    overrides = overrides or {}
    decoder = load_config(config, overrides).get("RTDETRTransformer", {})
    anchors = anchor_count(size, decoder.get("feat_strides", [8, 16, 32]))
    if decoder.get("num_queries", 300) > anchors:
        print(f"note: a {size}px input has {anchors} anchors; verifying with num_queries={anchors}")
        overrides = deep_merge(overrides, {"RTDETRTransformer": {"num_queries": anchors}})
    return overrides


OUTPUTS = ("pred_logits", "pred_boxes")
ENCODER_SCORES = "decoder.enc_outputs_class"
SELECTION = "decoder.topk_ind"


def _numpy_records(records):
    return {name: as_numpy(value) for name, value in records}


def compare_outputs(config, torch_state, jittor_state, size=640, seed=0, overrides=None, impose_selection=True):
    """Eval forward of the reference (``torch_state``) and the Jittor model
    (``jittor_state``) on one seeded input. The Jittor model is given the reference's
    top-k query selection (``probes.forcing``): near-tied encoder scores may otherwise
    pick different queries, which says nothing about the weights. The encoder scores
    that drive the selection are compared too, so a wrong encoder head still shows.
    ``impose_selection=False`` lets each framework rank its own queries.
    Returns ``({name: max |diff|}, ranked positions Jittor's scores would change)``."""
    import torch
    from rtdetr_common import probes
    overrides = verify_overrides(config, size, overrides)
    image = np.random.default_rng(seed).uniform(0, 1, (1, 3, size, size)).astype(np.float32)
    ref = build_model("torch", config, overrides)
    from reference_pytorch.checkpoint import load_model_state as load_torch
    load_torch(ref, torch_state, strict=True)
    ref.eval()
    with torch.no_grad(), probes.recording() as records:
        out_t = {k: v.numpy() for k, v in ref(torch.from_numpy(image)).items() if k in OUTPUTS}
    rec_t = _numpy_records(records)
    del ref
    jtm = build_model("jittor", config, overrides)
    from rtdetr_jittor.checkpoint import load_model_state as load_jittor
    load_jittor(jtm, jittor_state, strict=True)
    jtm.eval()
    forced = {SELECTION: rec_t[SELECTION]} if impose_selection else {}
    with jt.no_grad(), probes.recording() as records, probes.forcing(forced):
        out_j = {k: v.numpy() for k, v in jtm(jt.array(image)).items() if k in OUTPUTS}
    rec_j = _numpy_records(records)
    pairs = {**{k: (out_t[k], out_j[k]) for k in OUTPUTS}, ENCODER_SCORES: (rec_t[ENCODER_SCORES], rec_j[ENCODER_SCORES])}
    diffs = {k: float(np.abs(a.astype(np.float64) - b).max()) for k, (a, b) in pairs.items()}
    return diffs, _selection_changes(rec_j[ENCODER_SCORES], rec_t[SELECTION])


def _selection_changes(scores, chosen):
    """At how many of the reference's ranked query positions a top-k over the Jittor
    encoder's ``scores`` would put another query (swapped near-ties count)."""
    own = np.argsort(-scores.max(-1), axis=1, kind="stable")[:, :chosen.shape[1]]
    return int((own != chosen).sum())


def verify(src, dst, to, config, size=640, seed=0, overrides=None):
    """Source into its framework's model, the written file into the other's; compare outputs."""
    from reference_pytorch.checkpoint import read_weights as read_torch
    from rtdetr_jittor.checkpoint import read_weights as read_jittor
    if to == "jittor":
        torch_state, jittor_state = read_torch(src), read_jittor(dst)
    else:
        torch_state, jittor_state = read_torch(dst), read_jittor(src)
    return compare_outputs(config, torch_state, jittor_state, size, seed, overrides)


# --- command line -------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m rtdetr_jittor.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="source weights: official .pth, Jittor file or our checkpoint")
    p.add_argument("dst", help="file to write")
    p.add_argument("--to", choices=("jittor", "torch"), default="jittor", help="target framework (default jittor)")
    p.add_argument("-c", "--config", default=None, help="build this config's model and load strictly")
    p.add_argument("--set", dest="overrides", default=None, help="JSON object merged over the config")
    p.add_argument("--verify", action="store_true", help="compare both models' eval outputs (needs -c)")
    p.add_argument("--size", type=int, default=640, help="verify input size in pixels (default 640)")
    p.add_argument("--seed", type=int, default=0, help="verify input seed (default 0)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"largest allowed output difference for --verify (default {DEFAULT_THRESHOLD:g})")
    args = p.parse_args(argv)
    if args.verify and not args.config:
        p.error("--verify needs -c CONFIG")
    args.overrides = json.loads(args.overrides) if args.overrides else None
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        state = convert(args.src, args.dst, args.to, args.config, args.overrides)
    except (CheckpointError, StateDictError, ValueError) as e:
        print(f"error: cannot convert {args.src}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    checked = f"checked against {args.config}" if args.config else "keys not checked (no -c)"
    print(f"wrote {args.dst} ({args.to}, {len(state)} entries, {checked})")
    if not args.verify:
        return EXIT_OK
    diffs, changed = verify(args.src, args.dst, args.to, args.config, args.size, args.seed, args.overrides)
    for key, value in diffs.items():
        print(f"{key}: max |torch - jittor| = {value:.3e}")
    print(f"top-k query selection: the reference's, imposed; Jittor's scores would rank {changed} "
          "position(s) differently (near ties)")
    worst = max(diffs.values())
    ok = worst <= args.threshold
    print(f"verify {'passed' if ok else 'FAILED'}: largest difference {worst:.3e} "
          f"{'<=' if ok else '>'} threshold {args.threshold:g} ({args.size}px, seed {args.seed})")
    return EXIT_OK if ok else EXIT_VERIFY_FAILED


if __name__ == "__main__":
    sys.exit(main())
