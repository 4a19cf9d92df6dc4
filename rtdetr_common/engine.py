"""The training and inference state behind the train/eval/infer loops, written once
for both frameworks over a backend (``reference_pytorch.backend``, ``rtdetr_jittor.backend``).

The framework-neutral loops in ``rtdetr_common.loops`` drive an ``Engine`` and never
touch a tensor: batches go in as NumPy, numbers and NumPy arrays come out. Training
randomness (denoising noise, multi-scale size) comes from one NumPy generator saved in
checkpoints, so both frameworks draw the same noise and a resumed run, in either
framework, continues the same stream. Each twin's ``engine.Engine`` is this class with
its backend.

Data-parallel (``self.world`` from the backend's ``init_world``, more than one rank
under the framework's launcher): ``setup_training`` synchronises BatchNorm and
broadcasts rank 0's weights, ``train_step`` averages gradients over the ranks and
reports the loss averaged over them, and each rank's noise stream is its own
(``rtdetr_common.distributed.rank_generator``); with one rank nothing changes.
"""
import random

import numpy as np

from .distributed import mean_over_ranks, rank_generator
from .lr_schedule import build_lr_schedule
from .noise import NumpyDenoisingNoise, NumpySizeSampler
from .training import TrainingSettings
from .validation import check_finite_loss, check_finite_outputs, validate_images, validate_targets


def build_training(backend, cfg, model, with_ema=None):
    """The official recipe's optimizer (AdamW over the config's regex groups), EMA (when
    the config asks, or ``with_ema``) and LR schedule for ``model``."""
    settings = TrainingSettings.from_config(cfg)
    optimizer = backend.build_optimizer(cfg["optimizer"], model)
    use_ema = settings.use_ema if with_ema is None else with_ema
    ema = backend.ModelEMA(model, **settings.ema) if use_ema else None
    return optimizer, ema, build_lr_schedule(cfg, optimizer)


class Engine:
    backend = None  # the twin's backend module, and
    framework = None  # its name ("pytorch" or "jittor"), both set by each twin's Engine

    def __init__(self, config_path, overrides=None, seed=None):
        """``seed``: seed everything before the model is built, so its initial weights
        follow it too (seeding after construction leaves them to the RNG's earlier state)."""
        self.world = self.backend.init_world()
        if seed is not None:
            self.seed_everything(seed)
        built = self.backend.build(config_path, overrides)
        self.cfg = built.cfg
        self.model, self.criterion, self.postprocessor = built.model, built.criterion, built.postprocessor
        if seed is not None:
            self.backend.materialize(self.model)
        self.optimizer = self.ema = self.lr_schedule = None
        self.clip_max_norm = TrainingSettings.from_config(self.cfg).clip_max_norm

    def seed_everything(self, seed):
        """Seed the global RNGs, and the training noise stream shared by both frameworks."""
        np.random.seed(seed)
        random.seed(seed)
        self.backend.manual_seed(seed)
        self.training_rng = rank_generator(seed, self.world.rank)

    def setup_training(self):
        self.backend.set_mode(self.model, True)
        if self.world.size > 1:
            self.backend.sync_batch_norm(self.model)
            self.backend.broadcast_state(self.model)
        self.optimizer, self.ema, self.lr_schedule = build_training(self.backend, self.cfg, self.model)
        rng = getattr(self, "training_rng", None) or np.random.default_rng(0)
        self.training_rng = rng
        self.model.decoder.denoising_noise = NumpyDenoisingNoise(rng)
        self.model.size_sampler = NumpySizeSampler(rng)

    def to_targets(self, targets):
        return self.backend.targets_from_numpy(
            [{"labels": np.asarray(t["labels"], np.int64), "boxes": np.asarray(t["boxes"], np.float32)}
             for t in targets])

    def train_step(self, images, targets):
        """One optimizer step on a NumPy batch; returns plain numbers. Non-finite images raise
        ``InputError``, invalid targets ``TargetError``, non-finite outputs, loss or gradients
        ``NonFiniteLossError``, all before the weights change."""
        backend = self.backend
        validate_images(images)
        validate_targets(targets, self.cfg["num_classes"])
        backend.set_mode(self.model, True)
        backend.set_mode(self.criterion, True)
        self.lr_schedule.step_iteration()
        outputs = self.model(backend.from_numpy(np.ascontiguousarray(images)), self.to_targets(targets))
        check_finite_outputs(outputs)
        loss_dict = self.criterion(outputs, self.to_targets(targets))
        loss = sum(loss_dict.values())
        loss_value = float(backend.to_numpy(loss))
        losses = {k: float(backend.to_numpy(v)) for k, v in loss_dict.items()}
        loss_value, losses = mean_over_ranks(loss_value, losses, self.world, backend.all_reduce_sum)
        check_finite_loss(loss_value, losses)
        grad_norm = backend.optimizer_update(loss, self.optimizer, self.clip_max_norm,
                                             before_step=lambda norm: check_finite_loss(loss_value, losses, norm),
                                             reduce_gradients=backend.average_gradients if self.world.size > 1 else None)
        if self.ema is not None:
            self.ema.update(self.model)
        backend.sync()
        return {"loss": loss_value, "losses": losses, "grad_norm": grad_norm, "lr": self.lr_schedule.current_lrs()[0]}

    def all_reduce_sum(self, array):
        """A NumPy array summed over the data-parallel ranks (itself with one rank)."""
        return self.backend.all_reduce_sum(array)

    def end_epoch(self):
        self.lr_schedule.step_epoch()
        self.backend.release_memory()

    def eval_model(self, use_ema=True):
        return self.ema.module if (use_ema and self.ema is not None) else self.model

    def predict(self, images, orig_sizes, use_ema=True):
        """Post-processed detections per image: NumPy labels, boxes (xyxy pixels), scores."""
        backend = self.backend
        model = backend.set_mode(self.eval_model(use_ema), False)
        with backend.no_grad():
            outputs = model(backend.from_numpy(np.ascontiguousarray(images)))
            results = self.postprocessor(outputs, backend.from_numpy(np.asarray(orig_sizes, np.float32)))
            results = [{k: backend.to_numpy(v) for k, v in r.items()} for r in results]
        if model is self.model:
            backend.set_mode(self.model, True)
        return results

    def model_state(self, use_ema=False):
        return self.backend.model_state_numpy(self.eval_model(use_ema))

    def load_weights(self, path_or_state, strict=True):
        backend = self.backend
        state = backend.read_weights(path_or_state) if isinstance(path_or_state, str) else path_or_state
        backend.load_model_state(self.model, state, strict=strict)
        if self.ema is not None:
            backend.load_model_state(self.ema.module, state, strict=strict)

    def save_checkpoint(self, path, epoch, step, extra=None):
        extra = {**(extra or {}), "training_rng": self.training_rng.bit_generator.state}
        self.backend.save_training_checkpoint(path, self.model, self.optimizer, self.ema, self.lr_schedule,
                                              epoch, step, extra)

    def resume(self, path):
        ckpt = self.backend.load_training_checkpoint(path, self.model, self.optimizer, self.ema, self.lr_schedule)
        if "training_rng" in ckpt["extra"]:
            self.training_rng.bit_generator.state = ckpt["extra"]["training_rng"]
        return ckpt
