"""Train, evaluate and infer, written once for both frameworks.

Each loop drives an ``Engine`` (``reference_pytorch.engine`` or ``rtdetr_jittor.engine``)
that takes NumPy batches and returns numbers and NumPy arrays, so both frameworks
run the same loop on byte-identical batches.
"""
import json
import math
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from .coco_eval import detections_from_predictions, evaluate_detections, format_per_category_table, write_detections_json
from .data import CocoDetection, DataLoader
from .data.coco_api import load_coco
from .data.images import read_image
from .draw import save_detections_png
from .files import write_text_atomic
from .errors import ImageError, NonFiniteLossError

SPLIT_NAMES = {"train": ("train", "train2017"), "val": ("val", "val2017")}


def resolve_split(root, split):
    """``(img_folder, ann_file)`` of ``split`` under a COCO-style ``root``."""
    for name in SPLIT_NAMES[split]:
        ann = os.path.join(root, "annotations", f"instances_{name}.json")
        if os.path.isfile(ann) and os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name), ann
    raise FileNotFoundError(f"no {split} split under {root}: expected annotations/instances_{{{'|'.join(SPLIT_NAMES[split])}}}.json "
                            f"and the matching image folder")


def _transform_ops(cfg, loader_key, input_size):
    """The loader's transform ops with Resize set to ``input_size``: an int (square) or
    ``(height, width)``; None keeps the config's."""
    ops = [dict(op) for op in cfg[loader_key]["dataset"]["transforms"]["ops"]]
    for op in ops:
        if op["type"] == "Resize" and input_size:
            op["size"] = list(input_size) if isinstance(input_size, (list, tuple)) else [input_size, input_size]
    return ops


def eval_transforms(cfg, input_size=None):
    """The config's evaluation transforms (``val_dataloader``), resized to ``input_size``."""
    from .data.transforms import build_transforms
    return build_transforms(_transform_ops(cfg, "val_dataloader", input_size))


def make_dataset(cfg, root, split, input_size, num_classes):
    img_folder, ann_file = resolve_split(root, split)
    key = "train_dataloader" if split == "train" else "val_dataloader"
    coco = load_coco(ann_file)
    is_mscoco = len(coco.getCatIds()) == 80 and bool(cfg.get("remap_mscoco_category"))
    dataset = CocoDetection(img_folder, ann_file, transforms=_transform_ops(cfg, key, input_size),
                            remap_mscoco_category=is_mscoco, contiguous_labels=not is_mscoco)
    if dataset.num_classes > num_classes:
        raise ValueError(f"dataset {ann_file} has {dataset.num_classes} categories but the model has "
                         f"num_classes={num_classes}; set num_classes in the config")
    return dataset


class JsonlLog:
    """Append-only JSON-lines log, flushed per record so a crash loses nothing."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "a")

    def write(self, **record):
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()


def evaluate(engine, dataset, batch_size, use_ema=True, predictions_path=None, progress=True):
    """COCO metrics of ``engine``'s model on ``dataset``; optionally writes predictions JSON."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False)
    predictions, image_ids = [], []
    for images, targets in tqdm(loader, desc=f"eval[{engine.framework}]", disable=not progress, file=sys.stderr):
        orig_sizes = np.stack([t["orig_size"] for t in targets]).astype(np.float32)
        predictions.extend(engine.predict(images, orig_sizes, use_ema=use_ema))
        image_ids.extend(int(t["image_id"]) for t in targets)
    detections = detections_from_predictions(predictions, image_ids, dataset.label2category)
    if predictions_path:
        write_detections_json(detections, predictions_path)
    metrics = evaluate_detections(dataset.coco, detections, image_ids)
    return metrics


def train(engine, args):
    """Train with periodic evaluation, JSONL logs and atomic ``last``/``best`` checkpoints."""
    os.makedirs(args.output_dir, exist_ok=True)
    engine.seed_everything(args.seed)
    num_classes = engine.cfg["num_classes"]
    train_set = make_dataset(engine.cfg, args.data, "train", args.input_size, num_classes)
    val_set = make_dataset(engine.cfg, args.data, "val", args.input_size, num_classes)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed)
    engine.setup_training()
    step, best_ap50, start_epoch = 0, -1.0, 0
    if args.resume:
        ckpt = engine.resume(args.resume)
        step, start_epoch = int(ckpt["step"]), int(ckpt["epoch"])
        best_ap50 = float(ckpt["extra"].get("best_ap50", -1.0))
        loader.load_state_dict(ckpt["extra"]["loader"])
    log = JsonlLog(os.path.join(args.output_dir, "log.jsonl"))
    max_steps = args.max_steps or math.inf
    history = []
    epoch = start_epoch
    while epoch < args.epochs and step < max_steps:
        bar = tqdm(total=len(loader), initial=loader.position, desc=f"train[{engine.framework}] epoch {epoch}",
                   disable=not args.progress, file=sys.stderr)
        t0 = time.time()
        for images, targets in loader:
            try:
                out = engine.train_step(images, targets)
            except NonFiniteLossError as e:
                raise NonFiniteLossError(f"training stopped at step {step + 1} (epoch {epoch}) before its update, "
                                         f"nothing written after it; last good checkpoint: {last_checkpoint(args)}; "
                                         f"{e}", e.losses) from None
            step += 1
            log.write(kind="step", epoch=epoch, step=step, **out)
            bar.set_postfix(loss=f"{out['loss']:.3f}", it_s=f"{bar.n / max(time.time() - t0, 1e-9):.2f}")
            bar.update(1)
            if step >= max_steps:
                break
        bar.close()
        epoch_done = loader.position == 0 or loader.position >= len(loader)
        if epoch_done:
            engine.end_epoch()
            epoch += 1
        record = {"kind": "epoch", "epoch": epoch, "step": step, "seconds": time.time() - t0}
        if not args.no_eval and (epoch_done and epoch % args.eval_every == 0 or step >= max_steps):
            metrics = evaluate(engine, val_set, args.batch_size, use_ema=True, progress=args.progress)
            record.update({k: metrics[k] for k in ("AP", "AP50", "AP75")})
            if metrics["AP50"] > best_ap50:
                best_ap50 = metrics["AP50"]
                engine.save_checkpoint(os.path.join(args.output_dir, "best.ckpt"), epoch, step,
                                       {"loader": loader.state_dict(), "best_ap50": best_ap50})
        log.write(**record)
        history.append(record)
        engine.save_checkpoint(os.path.join(args.output_dir, "last.ckpt"), epoch, step,
                               {"loader": loader.state_dict(), "best_ap50": best_ap50})
        if args.target_ap50 is not None and record.get("AP50", -1) > args.target_ap50:
            break
    return {"steps": step, "epochs": epoch, "best_ap50": best_ap50, "history": history}


def last_checkpoint(args):
    """The newest complete checkpoint of a training run, or a note that there is none."""
    path = os.path.join(args.output_dir, "last.ckpt")
    return path if os.path.isfile(path) else (args.resume or "none written yet")


def run_eval(engine, args):
    """Evaluate a checkpoint on the val split; print AP table, write predictions and metrics."""
    engine.load_weights(args.checkpoint)
    val_set = make_dataset(engine.cfg, args.data, "val", args.input_size, engine.cfg["num_classes"])
    os.makedirs(args.output_dir, exist_ok=True)
    metrics = evaluate(engine, val_set, args.batch_size, use_ema=False,
                       predictions_path=os.path.join(args.output_dir, "predictions.json"), progress=args.progress)
    print(metrics["summary"])
    print(format_per_category_table(metrics["per_category"]))
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump({k: v for k, v in metrics.items() if k != "summary"}, f, indent=1)
    return metrics


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def infer_inputs(image):
    """``(paths to read, count of other files ignored)`` for an image file or a folder."""
    if not os.path.isdir(image):
        return [image], 0
    names = sorted(os.listdir(image))
    paths = [os.path.join(image, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return paths, len(names) - len(paths)


def run_infer(engine, args, label_names=None, skipped=None):
    """Detect on an image or a folder; write detections JSON and a PNG per image.

    An unreadable image is reported once on stderr (file and reason), left out and
    appended to the list ``skipped`` when one is given; a summary line follows. Raises
    ``ImageError`` when no image could be read."""
    engine.load_weights(args.checkpoint)
    paths, ignored = infer_inputs(args.image)
    if not paths:
        raise FileNotFoundError(f"no images found at {args.image} ({ignored} file(s) without an image extension)")
    resize = eval_transforms(engine.cfg, args.input_size)
    os.makedirs(args.output_dir, exist_ok=True)
    results, unreadable = {}, []
    names = label_names or {}
    for path in paths:
        try:
            image = read_image(path)
        except ImageError as e:
            print(f"warning: skipping unreadable image {e}", file=sys.stderr)
            unreadable.append(str(e))
            continue
        tensor, _ = resize(image, None)
        pred = engine.predict(tensor[None], np.array([image.size], np.float32), use_ema=False)[0]
        keep = pred["scores"] >= args.score_threshold
        width, height = image.size
        boxes = np.clip(pred["boxes"][keep], 0, [width, height, width, height])  # the model's may overhang
        results[os.path.basename(path)] = [
            {"label": int(l), "name": names.get(int(l), str(int(l))), "score": float(s), "box_xyxy": [float(v) for v in b]}
            for l, s, b in zip(pred["labels"][keep], pred["scores"][keep], boxes)]
        save_detections_png(os.path.join(args.output_dir, os.path.splitext(os.path.basename(path))[0] + ".png"),
                            image, boxes, pred["labels"][keep], pred["scores"][keep], names)
    if skipped is not None:
        skipped.extend(unreadable)
    if not results:
        raise ImageError(f"no usable image at {args.image}: all {len(paths)} unreadable (first: {unreadable[0]})")
    write_text_atomic(os.path.join(args.output_dir, "detections.json"), json.dumps(results, indent=1))
    print(f"infer: {len(results)} of {len(paths)} image(s) done, {len(unreadable)} skipped as unreadable"
          + (f", {ignored} file(s) without an image extension ignored" if ignored else "")
          + f"; detections in {os.path.join(args.output_dir, 'detections.json')}", file=sys.stderr)
    return results
