"""Which depth and salience estimators an RFNet was trained with, saved beside its weights.

RFNet judges an image together with its depth map I_d and salience map I_s (docs/method.md §3); a model only
means what it says when inference makes those maps with the estimators used in training. A saved
RFNet folder therefore carries ``modalities.json``: ``{"depth": ..., "salience": ..., "size": ...}``
(estimator names as `reliable_ad.modalities.build_depth` / `build_salience` take them, and the side
of the maps). Folders without it get the paper's estimators (DPT hybrid, U2-Net-p).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reliable_ad.rfnet.config import RFNetConfig
from reliable_ad.core.io import atomic_write_json

logger = logging.getLogger(__name__)

MODALITIES_FILE = "modalities.json"
PAPER_ESTIMATORS = ("dpt-hybrid", "u2netp")  # the paper's DPT; U2-Net-p stands in for U2-Net
TINY_ESTIMATORS = ("tiny", "fine-grained")  # offline and fast: for the tiny preset, tests, first runs
TINY_PRESET = "tiny"


@dataclass(frozen=True)
class ModalitySpec:
    depth: str | None  # depth estimator name; None when the model has depth off
    salience: str | None  # salience estimator name; None when the model has salience off
    size: int  # side of the maps the estimators output (resized to the model's image_size after)

    def __post_init__(self) -> None:
        for kind in ("depth", "salience"):
            value = getattr(self, kind)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"modalities {kind}={value!r} must be an estimator name (e.g. 'tiny') or null")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"modalities size={self.size!r} must be a positive int (map side in px, e.g. 384)")

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "salience": self.salience, "size": self.size}

    @classmethod
    def from_dict(cls, data: Any, where: str = MODALITIES_FILE) -> ModalitySpec:
        if not isinstance(data, dict) or set(data) - {"depth", "salience", "size"} or "size" not in data:
            raise ValueError(
                f"{where}: expected {{'depth': name|null, 'salience': name|null, 'size': int}}, got {data!r:.200}"
            )
        return cls(depth=data.get("depth"), salience=data.get("salience"), size=data["size"])

    def for_config(self, config: RFNetConfig) -> ModalitySpec:
        """This spec with the estimators the model does not use set to None."""
        mods = config.modalities
        return replace(self, depth=self.depth if mods.depth else None,
                       salience=self.salience if mods.salience else None)


def default_modality_spec(config: RFNetConfig, *, tiny: bool = False) -> ModalitySpec:
    """The paper's estimators (tiny ones for the tiny preset), maps at the model's image size."""
    depth, salience = TINY_ESTIMATORS if tiny else PAPER_ESTIMATORS
    return ModalitySpec(depth, salience, config.image_size).for_config(config)


def read_modality_spec(folder: str | os.PathLike) -> ModalitySpec | None:
    """The spec saved in an RFNet folder, or None when it has none."""
    path = Path(folder) / MODALITIES_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); rewrite it or delete it for the defaults") from e
    return ModalitySpec.from_dict(data, where=str(path))


def write_modality_spec(folder: str | os.PathLike, spec: ModalitySpec) -> Path:
    """Write ``modalities.json`` into a saved RFNet folder (atomically)."""
    return atomic_write_json(Path(folder) / MODALITIES_FILE, spec.to_dict())


def resolve_modality_spec(
    source: str | os.PathLike,
    config: RFNetConfig,
    *,
    depth: str | None = None,
    salience: str | None = None,
    size: int | None = None,
) -> ModalitySpec:
    """The estimators to use with the RFNet that ``source`` names (preset, config file or folder).

    Order: explicit ``depth``/``salience``/``size``, then the folder's ``modalities.json``, then the
    defaults (tiny estimators for the tiny preset, the paper's otherwise).
    """
    saved = read_modality_spec(source) if Path(source).is_dir() else None
    if saved is None:
        if Path(source).is_dir():
            logger.warning(
                "%s has no %s; using the paper's estimators %s. If the model was trained with others, pass "
                "depth=/salience= (--depth/--salience) or write the file", source, MODALITIES_FILE, PAPER_ESTIMATORS
            )
        saved = default_modality_spec(config, tiny=str(source) == TINY_PRESET)
    spec = ModalitySpec(depth or saved.depth or PAPER_ESTIMATORS[0], salience or saved.salience or PAPER_ESTIMATORS[1],
                        size or saved.size)
    return spec.for_config(config)


def save_rfnet(model, folder: str | os.PathLike, spec: ModalitySpec, processor=None, *,
               extra_files: dict[str, str] | None = None) -> Path:
    """Save ``model`` (and its tokenizer) with ``modalities.json`` (and ``extra_files``), in one atomic save."""
    from reliable_ad.rfnet.io import save_pretrained

    text = json.dumps(spec.for_config(model.config).to_dict(), indent=2) + "\n"
    extra = {MODALITIES_FILE: text, **(extra_files or {})}
    return save_pretrained(model, folder, processor=processor, extra_files=extra)
