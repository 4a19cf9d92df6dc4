"""Command-line interface of the train/eval/infer tools, shared by both twins.

``python -m reference_pytorch.tools.train`` and ``python -m rtdetr_jittor.tools.train``
(and ``eval``, ``infer``) are the same program over different engines.
"""
import argparse
import json
import sys

from .errors import RtdetrError

ERROR_EXIT_STATUS = 2  # the run failed: one line on stderr says why
SKIPPED_EXIT_STATUS = 3  # the run finished but left some inputs out; its summary line says which and how many


def _common(parser):
    parser.add_argument("-c", "--config", required=True, help="official-format YAML config")
    parser.add_argument("--input-size", type=int, default=None, help="square input size (default: the config's Resize)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--output-dir", default="output")
    parser.add_argument("--set", dest="overrides", default=None,
                        help="JSON object merged over the config, e.g. '{\"num_classes\": 4}'")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _engine(engine_cls, args):
    overrides = json.loads(args.overrides) if args.overrides else None
    return engine_cls(args.config, overrides, seed=getattr(args, "seed", 0))


def train_main(engine_cls, argv=None):
    from .loops import train
    p = argparse.ArgumentParser(description=f"Train RT-DETR ({engine_cls.framework})")
    _common(p)
    p.add_argument("--data", required=True, help="COCO-style root: annotations/instances_{train,val}.json + images")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--resume", default=None, help="checkpoint to resume from (either framework)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--target-ap50", type=float, default=None, help="stop once val AP50 exceeds this")
    args = p.parse_args(argv)
    engine = _engine(engine_cls, args)
    result = train(engine, args)
    if engine.world.main:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return result


def eval_main(engine_cls, argv=None):
    from .loops import run_eval
    p = argparse.ArgumentParser(description=f"Evaluate RT-DETR ({engine_cls.framework}) with COCO AP")
    _common(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    args = p.parse_args(argv)
    return run_eval(_engine(engine_cls, args), args)


def infer_main(engine_cls, argv=None):
    """Returns the exit status: 0, or ``SKIPPED_EXIT_STATUS`` when unreadable images were skipped."""
    from .loops import run_infer
    p = argparse.ArgumentParser(description=f"Detect objects with RT-DETR ({engine_cls.framework})")
    _common(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image", required=True, help="an image file or a folder of images")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--data", default=None, help="COCO-style root whose category names label the output")
    args = p.parse_args(argv)
    engine = _engine(engine_cls, args)
    skipped = []
    run_infer(engine, args, label_names=label_names_for(engine.cfg, args.data), skipped=skipped)
    return SKIPPED_EXIT_STATUS if skipped else 0


def label_names_for(cfg, data_root):
    """Class names for labels: the dataset's categories, else COCO's for 80-class models."""
    if data_root:
        from .loops import make_dataset
        dataset = make_dataset(cfg, data_root, "val", None, cfg["num_classes"])
        return dict(dataset.label_names)
    if cfg.get("num_classes") == 80:
        from .data.coco_categories import mscoco_category2name, mscoco_label2category
        return {label: mscoco_category2name[cat] for label, cat in mscoco_label2category.items()}
    return None


def run_tool(main, engine_cls):
    """Run ``main``; exit with the status it returns (if an int), or 2 and one line for a known failure."""
    try:
        status = main(engine_cls)
    except (RtdetrError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(ERROR_EXIT_STATUS)
    sys.exit(status if isinstance(status, int) else 0)
