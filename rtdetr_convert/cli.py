"""Convert RT-DETR weights between PyTorch, Jittor and HuggingFace: ``python -m rtdetr_convert``.

    python -m rtdetr_convert SRC DST [--to jittor|torch|hf] [-c CONFIG] [--set JSON]
                             [--verify] [--size 640] [--seed 0] [--threshold 1e-4]

SRC is any file ``rtdetr_convert.read_state_dict`` reads: an official ``.pth``
(``['ema']['module']``, ``['model']`` or a bare state_dict), this project's checkpoint
from either framework, a Jittor ``jt.save`` file or a HuggingFace ``model.safetensors``.
``--to`` picks the written format (``rtdetr_convert.write``): jittor (default), torch,
or hf (DST named ``*.safetensors``; with ``-c``, ``config.json`` is written beside it
so the folder loads with ``RTDetrForObjectDetection.from_pretrained``).

``-c CONFIG`` builds the target model (the reference, the Jittor twin or HuggingFace's)
and loads the weights into it strictly: missing, unexpected or mis-shaped keys stop
the conversion with a message naming them, and nothing is written. The one exception:
from a HuggingFace source, BatchNorm counters (``num_batches_tracked``, absent from
HuggingFace's files) are completed with zeros or dropped to fit, and the count printed.
``--verify`` (needs ``-c``, and a torch or jittor target) runs both twins on the
source and the written file through the parity harness (``rtdetr_convert.verify``).

Exit status: 0 done (and verified), 1 verification above the threshold, 2 the
source cannot be read or does not fit the model (nothing written).
"""
import argparse
import json
import sys

from rtdetr_common.config import deep_merge
from rtdetr_common.errors import RtdetrError

from .fit import NO_PRETRAINED, align_counters, fit_to_model, model_keys
from .hf_config import hf_config as make_hf_config
from .read import read_state_dict
from .verify import DEFAULT_THRESHOLD, verify
from .write import TARGETS, check_name, write_state

EXIT_OK, EXIT_VERIFY_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def convert(src, dst, to="jittor", config=None, overrides=None):
    """Read ``src``, check it against ``config``'s model if given, write ``dst``; return
    the written state (NumPy, official names)."""
    check_name(dst, to)
    state, fmt = read_state_dict(src)
    print(f"read {src}: {fmt}, {len(state)} entries")
    hf_config = None
    if config:
        if fmt == "huggingface":
            state, added, dropped = align_counters(state, model_keys(to, config, overrides))
            if added or dropped:
                print(f"note: {len(added)} BatchNorm counter(s) completed with 0, {len(dropped)} dropped "
                      "(HuggingFace files do not keep them all)")
        state = fit_to_model(state, to, config, overrides)
        if to == "hf":
            hf_config = make_hf_config(config, deep_merge(NO_PRETRAINED, overrides or {}))
    return write_state(state, dst, to, hf_config)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m rtdetr_convert", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="source weights: official .pth, our checkpoint, Jittor file or model.safetensors")
    p.add_argument("dst", help="file to write")
    p.add_argument("--to", choices=TARGETS, default="jittor", help="target format (default jittor)")
    p.add_argument("-c", "--config", default=None, help="build this config's model and load strictly")
    p.add_argument("--set", dest="overrides", default=None, help="JSON object merged over the config")
    p.add_argument("--verify", action="store_true", help="compare both twins' eval outputs (needs -c)")
    p.add_argument("--size", type=int, default=640, help="verify input size in pixels (default 640)")
    p.add_argument("--seed", type=int, default=0, help="verify input seed (default 0)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"largest allowed output difference for --verify (default {DEFAULT_THRESHOLD:g})")
    args = p.parse_args(argv)
    if args.verify and not args.config:
        p.error("--verify needs -c CONFIG")
    if args.verify and args.to == "hf":
        p.error("--verify compares the reference with the Jittor twin: use --to torch or --to jittor")
    try:
        args.overrides = json.loads(args.overrides) if args.overrides else None
    except json.JSONDecodeError as e:
        p.error(f"--set is not JSON: {e}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        state = convert(args.src, args.dst, args.to, args.config, args.overrides)
    except (RtdetrError, ValueError) as e:
        print(f"error: cannot convert {args.src}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    checked = f"checked against {args.config}" if args.config else "keys not checked (no -c)"
    print(f"wrote {args.dst} ({args.to}, {len(state)} entries, {checked})")
    if not args.verify:
        return EXIT_OK
    print(f"verifying: both twins, one eval forward at {args.size}px ...")
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
