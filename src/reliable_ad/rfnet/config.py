"""RFNet's configuration: typed nested dataclasses, validated at construction (docs/method.md §3).

Defaults are the paper's RFNet sizes (notes): ResNet-50 image encoders, a Chinese RoBERTa caption
encoder, one FFM block and three fusion layers of width 384 with 8 heads, 384 px inputs; the image
encoders' pretrained weights are named by the presets (presets.py: "rfnet-r50" is the paper's model).
No torch import here, so configs can be read and checked without the model stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reliable_ad.core.config import check, load_config_file
from reliable_ad.core.config import from_dict as _from_dict
from reliable_ad.core.config import to_dict as _to_dict
from reliable_ad.core.labels import SUPPORTED_NUM_CLASSES, accepts, check_acceptance

IMAGE_ENCODER_TYPES = ("resnet", "vit")  # names of the registry in encoders.py
IMAGE_MODALITIES = ("product", "generated", "depth", "salience")
MODALITIES = IMAGE_MODALITIES + ("caption",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)



@dataclass
class ImageEncoderConfig:
    type: str = "resnet"  # registry name: "resnet" (transformers ResNetModel) or "vit" (ViTModel)
    pretrained: str | None = None  # hub id or folder whose weights start the encoder; None = random init
    # transformers config values (ResNetConfig / ViTConfig); used whenever weights do not come from
    # `pretrained` (random init; rebuilding a saved RFNet, whose config.json stores the full arch here).
    # Empty = the type's defaults, which are ResNet-50 and ViT-B/16.
    arch: dict[str, Any] = field(default_factory=dict)
    # the backbone's input normalisation, applied inside the model to images in [0, 1]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        check(
            self.type in IMAGE_ENCODER_TYPES,
            f"image_encoder.type={self.type!r} is unknown; use one of {IMAGE_ENCODER_TYPES}",
        )
        check(
            len(self.mean) == 3 and len(self.std) == 3,
            f"image_encoder.mean={self.mean!r} / std={self.std!r} need 3 values each (R, G, B)",
        )
        check(all(s > 0 for s in self.std), f"image_encoder.std={self.std!r} must be > 0 in every channel")
        check(isinstance(self.arch, dict), f"image_encoder.arch={self.arch!r} must be a mapping of config values")
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)


@dataclass
class TextEncoderConfig:
    # hub id or folder of a transformers AutoModel encoder and its tokenizer;
    # None = a tiny random BERT with an in-memory tokenizer (tests, first runs)
    name_or_path: str | None = "hfl/chinese-roberta-wwm-ext"
    arch: dict[str, Any] = field(default_factory=dict)  # AutoConfig values; same rules as ImageEncoderConfig.arch
    max_length: int = 64  # caption tokens kept (product titles are short)

    def __post_init__(self) -> None:
        check(self.max_length >= 2, f"text_encoder.max_length={self.max_length} must be >= 2 ([CLS] and [SEP])")
        check(isinstance(self.arch, dict), f"text_encoder.arch={self.arch!r} must be a mapping of config values")
        check(
            self.name_or_path is None or bool(self.name_or_path),
            "text_encoder.name_or_path is empty; give a hub id or folder, or null for the tiny random encoder",
        )


@dataclass
class FusionConfig:
    width: int = 384  # token width d of the FFM and the fusion layers (paper: 384)
    num_heads: int = 8  # attention heads in the FFM and the fusion layers (paper: 8)
    num_ffm_blocks: int = 1  # Feature Filter Module blocks (paper: 1)
    num_layers: int = 3  # self-attention layers over the concatenated tokens (paper: 3)
    mlp_ratio: float = 4.0  # feed-forward width / token width in the fusion layers
    dropout: float = 0.1  # in attention and feed-forward of the FFM and the fusion layers

    def __post_init__(self) -> None:
        check(self.num_heads >= 1, f"fusion.num_heads={self.num_heads} must be >= 1")
        check(
            self.width >= 4 and self.width % 4 == 0 and self.width % self.num_heads == 0,
            f"fusion.width={self.width} must be a positive multiple of 4 (2D sin-cos positions) and of "
            f"fusion.num_heads={self.num_heads}; e.g. width 384 with 8 heads",
        )
        check(self.num_ffm_blocks >= 1, f"fusion.num_ffm_blocks={self.num_ffm_blocks} must be >= 1")
        check(self.num_layers >= 1, f"fusion.num_layers={self.num_layers} must be >= 1")
        check(self.mlp_ratio > 0, f"fusion.mlp_ratio={self.mlp_ratio} must be > 0")
        check(0.0 <= self.dropout < 1.0, f"fusion.dropout={self.dropout} must be in [0, 1)")


@dataclass
class ModalityConfig:
    product: bool = True  # I_o, the product image (B, 3, H, W)
    generated: bool = True  # I_g, the generated ad (B, 3, H, W)
    depth: bool = True  # I_d, a depth map of I_g (B, 1, H, W)
    salience: bool = True  # I_s, a salience map of I_g (B, 1, H, W)
    caption: bool = True  # Cap, the product caption (token ids)

    def __post_init__(self) -> None:
        check(
            any(getattr(self, m) for m in IMAGE_MODALITIES),
            f"modalities: every image modality is off ({', '.join(IMAGE_MODALITIES)}); "
            "switch at least one on (the generated image for the baselines)",
        )

    def enabled(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if getattr(self, m))


@dataclass
class RFNetConfig:
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    modalities: ModalityConfig = field(default_factory=ModalityConfig)
    share_image_encoder: bool = False  # one backbone for every image modality instead of one each
    num_classes: int = 5  # 5 (docs/method.md §1), 6 (with Unsuitable) or 2 (binary ablation); see labels.py
    image_size: int = 384  # side the processor resizes images to (paper: 384)
    temperature: float = 1.0  # logits are divided by this in predict_proba (set by calibration)
    seed: int = 0  # seed for every randomly initialised weight, so a preset always builds the same model

    def __post_init__(self) -> None:
        check(
            self.num_classes in SUPPORTED_NUM_CLASSES,
            f"num_classes={self.num_classes} is not supported; use one of {SUPPORTED_NUM_CLASSES} "
            "(5 classes, 6 with Unsuitable, 2 for Available vs Unavailable)",
        )
        check(self.image_size >= 32, f"image_size={self.image_size} must be >= 32 px (ResNet's stride is 32)")
        check(self.temperature > 0, f"temperature={self.temperature} must be > 0 (1.0 = uncalibrated)")
        check(0 <= self.seed < 2**63, f"seed={self.seed} must be in [0, 2**63)")

    # --- plain-data round trip -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RFNetConfig:
        """Build from plain data; unknown keys and bad values raise ``ValueError`` naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"RFNetConfig.from_dict expects a mapping, got {type(data).__name__}")
        return _from_dict(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> RFNetConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_file(cls, path: str | Path) -> RFNetConfig:
        """Read a YAML or JSON file holding an RFNetConfig mapping."""
        return cls.from_dict(load_config_file(path))


# ---------------------------------------------------------------------------------------------
# The judge: which RFNet, with which estimators, accepting by which rule (used by run, inspect, rfft)


@dataclass
class JudgeConfig:
    rfnet: str | None = None  # RFNet: preset, folder or hub id (None: the model preset's own reviewer)
    depth: str | None = None  # depth estimator; None = the one the RFNet was trained with (its modalities.json)
    salience: str | None = None  # salience estimator; None = the one the RFNet was trained with
    acceptance: str = "argmax"  # argmax = RFNet's top class is Available (the paper); threshold = p >= threshold
    threshold: float = 0.5  # p(Available) that accepts, with acceptance = "threshold"
    batch_size: int = 16  # images per RFNet call

    def __post_init__(self) -> None:
        check_acceptance(self.acceptance, self.threshold)
        check(isinstance(self.batch_size, int) and self.batch_size >= 1,
              f"judge.batch_size={self.batch_size!r} must be >= 1 (images per RFNet call, default 16)")

    def accepts(self, label_index: int, p_available: float) -> bool:
        return accepts(label_index, p_available, self.acceptance, self.threshold)
