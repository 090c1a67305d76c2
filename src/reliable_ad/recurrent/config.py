"""Configuration of Recurrent Generation and of the `reliable-ad run` job."""

from __future__ import annotations

from dataclasses import dataclass, field

from reliable_ad.generation.config import GenerateConfig, upgrade_stored_config, validate_generate_config
from reliable_ad.rfnet.config import JudgeConfig

RETRY_POLICIES = ("reseed", "defect_aware")


@dataclass
class RecurrentConfig:
    max_attempts: int = 5  # K: attempts per product before "none available"
    retry_policy: str = "reseed"  # reseed = fresh noise only (the paper); defect_aware = the defect picks what changes
    scale_steps: tuple[float, ...] = (0.85, 1.12, 0.72, 1.25)  # Size Mismatch: image_scale multipliers, tried in turn
    alternate_presets: tuple[str, ...] = ()  # Indistinctiveness: other presets to try when the preset has no slot

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"recurrent.max_attempts={self.max_attempts} must be >= 1")
        if self.retry_policy not in RETRY_POLICIES:
            raise ValueError(f"recurrent.retry_policy={self.retry_policy!r} is not one of {RETRY_POLICIES}")
        if any(s <= 0 for s in self.scale_steps):
            raise ValueError(f"recurrent.scale_steps={self.scale_steps} must all be > 0")


@dataclass
class RunConfig:
    generation: GenerateConfig = field(default_factory=GenerateConfig)
    recurrent: RecurrentConfig = field(default_factory=RecurrentConfig)
    # the reviewer and its acceptance rule; judge.rfnet None = the model preset's own ("tiny" with tiny
    # models), else required
    judge: JudgeConfig = field(default_factory=JudgeConfig)


def validate_run_config(cfg: RunConfig) -> None:
    """`validate_generate_config` for the generation part, and every alternate preset exists; run before
    the job writes anything. Raises ValueError naming the bad value and the fix."""
    from reliable_ad.generation.prompts import get_preset

    validate_generate_config(cfg.generation)
    cfg.recurrent.__post_init__()  # the ranges again: the fields may have changed since the config was built
    cfg.judge.__post_init__()
    for name in cfg.recurrent.alternate_presets:
        try:
            get_preset(name, cfg.generation.presets_file)
        except ValueError as e:
            raise ValueError(f"recurrent.alternate_presets: {e}") from None


def upgrade_stored_run_config(old: dict) -> dict:
    """A `run` config.json written by an older reliable-ad, in today's names (see
    `upgrade_stored_config`): the reviewer settings moved into ``judge``."""
    if isinstance(old.get("generation"), dict):
        upgrade_stored_config(old["generation"])
    judge = old.setdefault("judge", {}) if isinstance(old.get("judge", {}), dict) else None
    if judge is not None:
        for key, new in (("rfnet", "rfnet"), ("depth", "depth"), ("salience", "salience"),
                         ("inspect_batch_size", "batch_size")):
            if key in old:
                judge.setdefault(new, old.pop(key))
        recurrent = old.get("recurrent")
        if isinstance(recurrent, dict):
            for key in ("acceptance", "threshold"):
                if key in recurrent:
                    judge.setdefault(key, recurrent.pop(key))
    return old
