"""Configuration of Recurrent Generation and of the `reliable-ad run` job."""

from __future__ import annotations

from dataclasses import dataclass, field

from reliable_ad.generation.config import GenerateConfig, validate_generate_config

ACCEPTANCE = ("argmax", "threshold")
RETRY_POLICIES = ("reseed", "defect_aware")


@dataclass
class RecurrentConfig:
    max_attempts: int = 5  # K: attempts per product before "none available"
    acceptance: str = "argmax"  # argmax = RFNet's top class is Available (the paper); threshold = p(Available) >= threshold
    threshold: float = 0.5  # used when acceptance == "threshold"
    retry_policy: str = "reseed"  # reseed = fresh noise only (the paper); defect_aware = the defect picks what changes
    scale_steps: tuple[float, ...] = (0.85, 1.12, 0.72, 1.25)  # Size Mismatch: image_scale multipliers, tried in turn
    alternate_presets: tuple[str, ...] = ()  # Indistinctiveness: other presets to try when the preset has no slot

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"recurrent.max_attempts={self.max_attempts} must be >= 1")
        if self.acceptance not in ACCEPTANCE:
            raise ValueError(f"recurrent.acceptance={self.acceptance!r} is not one of {ACCEPTANCE}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"recurrent.threshold={self.threshold} must be in (0, 1]")
        if self.retry_policy not in RETRY_POLICIES:
            raise ValueError(f"recurrent.retry_policy={self.retry_policy!r} is not one of {RETRY_POLICIES}")
        if any(s <= 0 for s in self.scale_steps):
            raise ValueError(f"recurrent.scale_steps={self.scale_steps} must all be > 0")


@dataclass
class RunConfig:
    generation: GenerateConfig = field(default_factory=GenerateConfig)
    recurrent: RecurrentConfig = field(default_factory=RecurrentConfig)
    rfnet: str | None = None  # RFNet: preset name, folder or hub id; None = "tiny" with tiny models, else required
    depth: str | None = None  # depth estimator override (default: the one saved with the RFNet)
    salience: str | None = None  # salience estimator override
    inspect_batch_size: int = 16


def validate_run_config(cfg: RunConfig) -> None:
    """`validate_generate_config` for the generation part, and every alternate preset exists; run before
    the job writes anything. Raises ValueError naming the bad value and the fix."""
    from reliable_ad.generation.prompts import get_preset

    validate_generate_config(cfg.generation)
    cfg.recurrent.__post_init__()  # the ranges again: the fields may have changed since the config was built
    if cfg.inspect_batch_size < 1:
        raise ValueError(f"inspect_batch_size={cfg.inspect_batch_size} must be >= 1 (images per RFNet call, default 16)")
    for name in cfg.recurrent.alternate_presets:
        try:
            get_preset(name, cfg.generation.presets_file)
        except ValueError as e:
            raise ValueError(f"recurrent.alternate_presets: {e}") from None
