"""Configuration of Recurrent Generation and of the `reliable-ad run` job."""

from __future__ import annotations

from dataclasses import dataclass, field

from reliable_ad.generation.config import GenerateConfig

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
