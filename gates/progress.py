"""Progress lines for long gates: gate, epoch, step, seconds per step and ETA.

``track`` wraps an engine's ``train_step`` so every gate that trains reports the
same way, whichever loop drives it; lines go to stderr (``make gates`` runs pytest
with ``-s`` so they appear while the gate runs).
"""
import sys
import time


def _clock(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


class StepProgress:
    """Counts steps of one gate and prints a line every ``every`` steps."""

    def __init__(self, label, steps_per_epoch, total_steps=None, every=10):
        self.label, self.steps_per_epoch, self.total_steps, self.every = label, steps_per_epoch, total_steps, every
        self.step, self.start = 0, time.time()

    def line(self, loss):
        per_step = (time.time() - self.start) / self.step
        epoch = (self.step - 1) // self.steps_per_epoch
        left_in_epoch = (epoch + 1) * self.steps_per_epoch - self.step
        if self.total_steps:
            eta = f"ETA {_clock(per_step * (self.total_steps - self.step))}"
            where = f"step {self.step}/{self.total_steps}"
        else:
            eta = f"epoch ends in {_clock(per_step * left_in_epoch)}"
            where = f"step {self.step}"
        return f"[{self.label}] epoch {epoch} {where} loss {loss:.3f} {per_step:.2f} s/step {eta}"

    def tick(self, loss):
        self.step += 1
        if self.step % self.every == 0 or self.step == self.total_steps:
            print(self.line(loss), file=sys.stderr, flush=True)


def track(engine, label, steps_per_epoch, total_steps=None, every=10):
    """Make ``engine.train_step`` report progress; returns the engine."""
    progress = StepProgress(label, steps_per_epoch, total_steps, every)
    train_step = engine.train_step

    def step(images, targets):
        out = train_step(images, targets)
        progress.tick(out["loss"])
        return out

    engine.train_step = step
    return engine
