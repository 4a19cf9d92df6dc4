"""The Jittor twin's training and inference state behind one small interface.

The framework-neutral loops in ``rtdetr_common.loops`` (train, eval, infer) drive an
``Engine`` and never touch a tensor: batches go in as NumPy, numbers and NumPy
arrays come out. Training randomness (denoising noise, multi-scale size) comes
from one NumPy generator saved in checkpoints, so both frameworks draw the same
noise and a resumed run, in either framework, continues the same stream. ``reference_pytorch.engine.Engine`` is its twin.
"""
import random

import numpy as np

from rtdetr_jittor._env import jt
from rtdetr_common.lr_schedule import build_lr_schedule
from rtdetr_common.noise import NumpyDenoisingNoise, NumpySizeSampler
from rtdetr_common.validation import check_finite_loss, check_finite_outputs, validate_images, validate_targets

from . import build
from .checkpoint import (load_model_state, load_training_checkpoint, model_state_numpy,
                         read_weights, save_training_checkpoint)
from .optim.ema import ModelEMA
from .optim.optim import build_optimizer, optimizer_update


class Engine:
    framework = "jittor"

    def __init__(self, config_path, overrides=None, seed=None):
        """``seed``: seed everything before the model is built, so its initial weights
        follow it too (seeding after construction leaves them to the RNG's earlier state)."""
        if seed is not None:
            self.seed_everything(seed)
        built = build(config_path, overrides)
        self.cfg = built.cfg
        self.model, self.criterion, self.postprocessor = built.model, built.criterion, built.postprocessor
        if seed is not None:  # Jittor draws initial weights when they are computed: do it under the seed
            jt.sync(list(self.model.state_dict().values()))
        self.optimizer = self.ema = self.lr_schedule = None
        self.clip_max_norm = float(self.cfg.get("clip_max_norm", 0.0) or 0.0)

    def seed_everything(self, seed):
        """Seed the global RNGs, and the training noise stream shared by both frameworks."""
        np.random.seed(seed)
        random.seed(seed)
        jt.set_global_seed(seed)
        self.training_rng = np.random.default_rng(seed)

    def setup_training(self):
        self.model.train()
        self.optimizer = build_optimizer(self.cfg["optimizer"], self.model)
        if self.cfg.get("use_ema"):
            ema_cfg = {k: v for k, v in (self.cfg.get("ema") or {}).items() if k != "type"}
            self.ema = ModelEMA(self.model, **ema_cfg)
        self.lr_schedule = build_lr_schedule(self.cfg, self.optimizer)
        rng = getattr(self, "training_rng", None) or np.random.default_rng(0)
        self.training_rng = rng
        self.model.decoder.denoising_noise = NumpyDenoisingNoise(rng)
        self.model.size_sampler = NumpySizeSampler(rng)

    @staticmethod
    def to_targets(targets):
        return [{"labels": jt.array(np.asarray(t["labels"], dtype=np.int64)),
                 "boxes": jt.array(np.asarray(t["boxes"], dtype=np.float32))} for t in targets]

    def train_step(self, images, targets):
        """One optimizer step on a NumPy batch; returns plain numbers. Non-finite images raise
        ``InputError``, invalid targets ``TargetError``, non-finite outputs, loss or gradients
        ``NonFiniteLossError``, all before the weights change."""
        validate_images(images)
        validate_targets(targets, self.cfg["num_classes"])
        self.model.train()
        self.criterion.train()
        self.lr_schedule.step_iteration()
        outputs = self.model(jt.array(np.ascontiguousarray(images)), self.to_targets(targets))
        check_finite_outputs(outputs)
        loss_dict = self.criterion(outputs, self.to_targets(targets))
        loss = sum(loss_dict.values())
        loss_value, losses = float(loss.item()), {k: float(v.item()) for k, v in loss_dict.items()}
        check_finite_loss(loss_value, losses)
        grad_norm = optimizer_update(loss, self.optimizer, self.clip_max_norm,
                                     before_step=lambda norm: check_finite_loss(loss_value, losses, norm))
        if self.ema is not None:
            self.ema.update(self.model)
        jt.sync_all()
        return {"loss": loss_value, "losses": losses, "grad_norm": grad_norm, "lr": self.lr_schedule.current_lrs()[0]}

    def end_epoch(self):
        self.lr_schedule.step_epoch()
        jt.gc()

    def eval_model(self, use_ema=True):
        return self.ema.module if (use_ema and self.ema is not None) else self.model

    def predict(self, images, orig_sizes, use_ema=True):
        """Post-processed detections per image: NumPy labels, boxes (xyxy pixels), scores."""
        model = self.eval_model(use_ema)
        model.eval()
        with jt.no_grad():
            outputs = model(jt.array(np.ascontiguousarray(images)))
            results = self.postprocessor(outputs, jt.array(np.asarray(orig_sizes, dtype=np.float32)))
            results = [{k: v.numpy() for k, v in r.items()} for r in results]
        if model is self.model:
            self.model.train()
        return results

    def model_state(self, use_ema=False):
        return model_state_numpy(self.eval_model(use_ema))

    def load_weights(self, path_or_state, strict=True):
        state = read_weights(path_or_state) if isinstance(path_or_state, str) else path_or_state
        load_model_state(self.model, state, strict=strict)
        if self.ema is not None:
            load_model_state(self.ema.module, state, strict=strict)

    def save_checkpoint(self, path, epoch, step, extra=None):
        extra = {**(extra or {}), "training_rng": self.training_rng.bit_generator.state}
        save_training_checkpoint(path, self.model, self.optimizer, self.ema, self.lr_schedule, epoch, step, extra)

    def resume(self, path):
        ckpt = load_training_checkpoint(path, self.model, self.optimizer, self.ema, self.lr_schedule)
        if "training_rng" in ckpt["extra"]:
            self.training_rng.bit_generator.state = ckpt["extra"]["training_rng"]
        return ckpt
