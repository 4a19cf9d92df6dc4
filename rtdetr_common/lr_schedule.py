"""Learning-rate schedule shared by both twins: linear warm-up and MultiStepLR.

Both act on ``optimizer.param_groups`` (a list of dicts with ``lr``), which the
torch optimizer and the Jittor twin's AdamW both expose, so the same object drives
either framework. ``MultiStepLR`` steps once per epoch (official), ``LinearWarmup``
once per iteration; the LR of a group is ``initial_lr * multistep_factor * warmup_factor``.
"""
import bisect


class MultiStepLR:
    """Multiply every group's LR by ``gamma`` at each milestone epoch."""

    def __init__(self, optimizer, milestones, gamma=0.1):
        self.optimizer = optimizer
        self.milestones = sorted(milestones)
        self.gamma = gamma
        self.last_epoch = 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def factor(self):
        return self.gamma ** bisect.bisect_right(self.milestones, self.last_epoch)

    def step(self):
        self.last_epoch += 1

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "milestones": self.milestones, "gamma": self.gamma}

    def load_state_dict(self, state):
        self.last_epoch = state["last_epoch"]


class LinearWarmup:
    """Scale LRs by ``min(1, (step + 1) / warmup_duration)`` during the first steps."""

    def __init__(self, warmup_duration):
        self.warmup_duration = warmup_duration
        self.last_step = -1

    def factor(self):
        if self.warmup_duration <= 0:
            return 1.0
        return min(1.0, (self.last_step + 1) / self.warmup_duration)

    def step(self):
        self.last_step += 1

    def state_dict(self):
        return {"last_step": self.last_step, "warmup_duration": self.warmup_duration}

    def load_state_dict(self, state):
        self.last_step = state["last_step"]


class LRSchedule:
    """Combine MultiStepLR (per epoch) and optional warm-up (per iteration)."""

    def __init__(self, optimizer, milestones, gamma=0.1, warmup_duration=0):
        self.optimizer = optimizer
        self.multistep = MultiStepLR(optimizer, milestones, gamma)
        self.warmup = LinearWarmup(warmup_duration) if warmup_duration else None
        self.apply()

    def apply(self):
        factor = self.multistep.factor() * (self.warmup.factor() if self.warmup else 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def step_iteration(self):
        """Call before each optimizer step."""
        if self.warmup:
            self.warmup.step()
        self.apply()

    def step_epoch(self):
        """Call after each epoch."""
        self.multistep.step()
        self.apply()

    def current_lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        return {"multistep": self.multistep.state_dict(),
                "warmup": self.warmup.state_dict() if self.warmup else None}

    def load_state_dict(self, state):
        self.multistep.load_state_dict(state["multistep"])
        if self.warmup and state.get("warmup"):
            self.warmup.load_state_dict(state["warmup"])
        self.apply()


def build_lr_schedule(cfg, optimizer):
    """From the config's ``lr_scheduler`` (MultiStepLR) and ``lr_warmup_scheduler`` sections."""
    sched = cfg.get("lr_scheduler") or {}
    if sched and sched.get("type", "MultiStepLR") != "MultiStepLR":
        raise ValueError(f"unsupported lr_scheduler type {sched.get('type')!r} (MultiStepLR only)")
    warm = cfg.get("lr_warmup_scheduler") or {}
    if warm and warm.get("type", "LinearWarmup") != "LinearWarmup":
        raise ValueError(f"unsupported lr_warmup_scheduler type {warm.get('type')!r} (LinearWarmup only)")
    return LRSchedule(optimizer, sched.get("milestones", []), sched.get("gamma", 0.1),
                      warm.get("warmup_duration", 0))
