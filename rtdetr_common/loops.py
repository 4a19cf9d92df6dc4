"""Train, evaluate and infer, written once for both frameworks.

Each loop drives an ``Engine`` (``reference_pytorch.engine`` or ``rtdetr_jittor.engine``)
that takes NumPy batches and returns numbers and NumPy arrays, so both frameworks
run the same loop on byte-identical batches.

Data-parallel runs (``engine.world`` with more than one rank, see
``rtdetr_common.distributed``): ``--batch-size`` is the global batch, each rank trains
and evaluates on its shard of every batch, evaluation gathers every rank's detections
before COCO scoring, and only rank 0 writes checkpoints, logs and results and shows
progress. A global batch one of whose shards does not load at all is skipped on every
rank (a single process trains on the items that load).
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
from .distributed import (all_ranks_agree, broadcast_object, check_global_batch, gather_objects,
                          rank_stream_state)
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
    """Append-only JSON-lines log: each record is appended and the file closed again, so
    a crash loses nothing and no handle stays open."""

    def __init__(self, path):
        self.path = path

    def write(self, **record):
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def evaluate(engine, dataset, batch_size, use_ema=True, predictions_path=None, progress=True):
    """COCO metrics of ``engine``'s model on ``dataset``; optionally writes predictions JSON.
    With several ranks each predicts its shard of every batch; rank 0 gathers them in
    the single-process order, scores and writes, and every rank returns its metrics."""
    world = engine.world
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, world=world)
    shards = []  # per batch: (predictions, image ids) of this rank's shard
    for batch in tqdm(loader, desc=f"eval[{engine.framework}]", disable=not (progress and world.main),
                      file=sys.stderr):
        if batch is None:
            shards.append(([], []))
            continue
        images, targets = batch
        orig_sizes = np.stack([t["orig_size"] for t in targets]).astype(np.float32)
        shards.append((engine.predict(images, orig_sizes, use_ema=use_ema), [int(t["image_id"]) for t in targets]))
    by_rank = gather_objects(shards, world, engine.all_reduce_sum)
    metrics = None
    if world.main:
        predictions = [p for b in range(len(shards)) for rank in by_rank for p in rank[b][0]]
        image_ids = [i for b in range(len(shards)) for rank in by_rank for i in rank[b][1]]
        detections = detections_from_predictions(predictions, image_ids, dataset.label2category)
        if predictions_path:
            write_detections_json(detections, predictions_path)
        metrics = evaluate_detections(dataset.coco, detections, image_ids)
    return broadcast_object(metrics, world, engine.all_reduce_sum)


def save_checkpoint(engine, path, epoch, step, extra):
    """Write a training checkpoint from rank 0 with every rank's noise-stream state
    (``training_rng_by_rank``); every rank must call it."""
    states = gather_objects(engine.training_rng.bit_generator.state, engine.world, engine.all_reduce_sum)
    if engine.world.main:
        if engine.world.size > 1:
            extra = {**extra, "training_rng_by_rank": states}
        engine.save_checkpoint(path, epoch, step, extra)


def train(engine, args):
    """Train with periodic evaluation, JSONL logs and atomic ``last``/``best`` checkpoints."""
    world = engine.world
    check_global_batch(args.batch_size, world)
    if world.main:
        os.makedirs(args.output_dir, exist_ok=True)
    engine.seed_everything(args.seed)
    num_classes = engine.cfg["num_classes"]
    train_set = make_dataset(engine.cfg, args.data, "train", args.input_size, num_classes)
    val_set = make_dataset(engine.cfg, args.data, "val", args.input_size, num_classes)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
                        world=world)
    engine.setup_training()
    step, best_ap50, start_epoch = 0, -1.0, 0
    if args.resume:
        ckpt = engine.resume(args.resume)
        step, start_epoch = int(ckpt["step"]), int(ckpt["epoch"])
        best_ap50 = float(ckpt["extra"].get("best_ap50", -1.0))
        loader.load_state_dict(ckpt["extra"]["loader"])
        engine.training_rng.bit_generator.state = rank_stream_state(ckpt["extra"], world, args.seed, step)
    log = JsonlLog(os.path.join(args.output_dir, "log.jsonl")) if world.main else None
    progress = args.progress and world.main
    max_steps = args.max_steps or math.inf
    history = []
    epoch = start_epoch
    while epoch < args.epochs and step < max_steps:
        bar = tqdm(total=len(loader), initial=loader.position, desc=f"train[{engine.framework}] epoch {epoch}",
                   disable=not progress, file=sys.stderr)
        t0 = time.time()
        for batch in loader:
            bar.update(1)
            if not all_ranks_agree(batch is not None, world, engine.all_reduce_sum):
                if world.main:
                    print(f"warning: global batch {loader.position - 1} of epoch {loader.epoch} skipped: "
                          f"a rank's shard has no loadable image", file=sys.stderr)
                continue
            step_start = time.time()
            try:
                out = engine.train_step(*batch)
            except NonFiniteLossError as e:
                raise NonFiniteLossError(f"training stopped at step {step + 1} (epoch {epoch}) before its update, "
                                         f"nothing written after it; last good checkpoint: {last_checkpoint(args)}; "
                                         f"{e}", e.losses) from None
            step += 1
            if log:
                log.write(kind="step", epoch=epoch, step=step, seconds=round(time.time() - step_start, 4), **out)
            bar.set_postfix(loss=f"{out['loss']:.3f}", it_s=f"{bar.n / max(time.time() - t0, 1e-9):.2f}")
            if step >= max_steps:
                break
        bar.close()
        epoch_done = loader.position == 0 or loader.position >= len(loader)
        if epoch_done:
            engine.end_epoch()
            epoch += 1
        record = {"kind": "epoch", "epoch": epoch, "step": step, "seconds": time.time() - t0}
        if not args.no_eval and (epoch_done and epoch % args.eval_every == 0 or step >= max_steps):
            metrics = evaluate(engine, val_set, args.batch_size, use_ema=True, progress=progress)
            record.update({k: metrics[k] for k in ("AP", "AP50", "AP75")})
            if metrics["AP50"] > best_ap50:
                best_ap50 = metrics["AP50"]
                save_checkpoint(engine, os.path.join(args.output_dir, "best.ckpt"), epoch, step,
                                {"loader": loader.state_dict(), "best_ap50": best_ap50})
        if log:
            log.write(**record)
        history.append(record)
        save_checkpoint(engine, os.path.join(args.output_dir, "last.ckpt"), epoch, step,
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
    main = engine.world.main
    if main:
        os.makedirs(args.output_dir, exist_ok=True)
    metrics = evaluate(engine, val_set, args.batch_size, use_ema=False,
                       predictions_path=os.path.join(args.output_dir, "predictions.json") if main else None,
                       progress=args.progress)
    if main:
        print(metrics["summary"])
        print(format_per_category_table(metrics["per_category"]))
        write_text_atomic(os.path.join(args.output_dir, "metrics.json"),
                          json.dumps({k: v for k, v in metrics.items() if k != "summary"}, indent=1))
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
    if engine.world.size > 1:
        raise ValueError(f"infer runs in one process, not on {engine.world.size} data-parallel ranks")
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
