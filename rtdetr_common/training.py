"""The training settings of a config, read in one place: what the engines and the
harness's optimizer-step comparison build the official recipe from."""
from dataclasses import dataclass, field


@dataclass
class TrainingSettings:
    use_ema: bool = False
    ema: dict = field(default_factory=dict)  # ModelEMA keyword arguments: the config's ``ema`` without ``type``
    clip_max_norm: float = 0.0  # 0: no clipping

    @classmethod
    def from_config(cls, cfg):
        return cls(use_ema=bool(cfg.get("use_ema")),
                   ema={k: v for k, v in (cfg.get("ema") or {}).items() if k != "type"},
                   clip_max_norm=float(cfg.get("clip_max_norm", 0.0) or 0.0))
