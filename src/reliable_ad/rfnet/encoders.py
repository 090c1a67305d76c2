"""RFNet's encoders (docs/method.md §3): image backbones chosen by name (the registry's "backbone" kind,
registered in presets.py), the caption encoder.

Image encoders turn images in [0, 1] into tokens of width d: a transformers backbone gives a feature
map (ResNet: (B, C, h, w)) or tokens (ViT: its last hidden state), a linear projection (a 1x1 conv)
maps them to d, and grid features get fixed 2D sin-cos positions, so any image size works.

Building a backbone from weights (`pretrained`, a hub id or folder) is I/O and happens in the
`build_*` functions here, called by presets.build_rfnet; modules built without weights come from
the config's `arch` and touch neither disk nor network.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from reliable_ad.core.registry import get_entry
from reliable_ad.rfnet.config import ImageEncoderConfig, TextEncoderConfig
from reliable_ad.rfnet.vocab import tiny_vocab

# Keys of a transformers config that describe a checkpoint's history, not the architecture.
_NOISE_KEYS = (
    "transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype", "id2label", "label2id",
)


def arch_of(backbone: nn.Module) -> dict[str, Any]:
    """The backbone's architecture as plain data (a transformers config's non-default values)."""
    data = backbone.config.to_diff_dict()
    return {k: v for k, v in data.items() if k not in _NOISE_KEYS}


def _config_from_arch(model_type: str, arch: dict[str, Any]):
    from transformers import CONFIG_MAPPING

    arch = dict(arch)
    found = arch.pop("model_type", model_type)
    if found != model_type:
        raise ValueError(f"arch has model_type={found!r} but the encoder needs {model_type!r}; fix or drop the key")
    return CONFIG_MAPPING[model_type].from_dict(arch)


# --- image backbones --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageBackboneSpec:
    model_type: str  # transformers model_type
    build: Callable[[Any], nn.Module]  # transformers config -> random-weight module
    load: Callable[[str], nn.Module]  # hub id or folder -> pretrained module
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # normalised pixels -> (B, C, h, w) or (B, N, C)
    out_dim: Callable[[Any], int]  # transformers config -> C
    grid: bool  # True: features are a map that needs positions; False: tokens that carry their own


# Module-level functions rather than lambdas, so models stay picklable.
def _resnet_build(config) -> nn.Module:
    from transformers import ResNetModel

    return ResNetModel(config)


def _resnet_load(name_or_path: str) -> nn.Module:
    from transformers import ResNetModel

    return ResNetModel.from_pretrained(name_or_path)


def _resnet_features(backbone: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return backbone(pixel_values=pixels).last_hidden_state  # (B, C, h, w)


def _vit_build(config) -> nn.Module:
    from transformers import ViTModel

    return ViTModel(config, add_pooling_layer=False)


def _vit_load(name_or_path: str) -> nn.Module:
    from transformers import ViTModel

    return ViTModel.from_pretrained(name_or_path, add_pooling_layer=False)


def _vit_features(backbone: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    # (B, 1 + N, C); position embeddings are interpolated when the image is not the checkpoint's size
    return backbone(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state


def resnet_spec() -> ImageBackboneSpec:
    return ImageBackboneSpec("resnet", _resnet_build, _resnet_load, _resnet_features, _last_hidden_size, grid=True)


def vit_spec() -> ImageBackboneSpec:
    return ImageBackboneSpec("vit", _vit_build, _vit_load, _vit_features, _hidden_size, grid=False)


def _last_hidden_size(config) -> int:
    return config.hidden_sizes[-1]


def _hidden_size(config) -> int:
    return config.hidden_size


def image_backbone_spec(name: str) -> ImageBackboneSpec:
    """The spec of the image encoder type ``name`` (registry kind "backbone"); an unknown name is an
    error listing the registered ones."""
    return get_entry("backbone", name).load()()


def fetch_pretrained(field: str, name: str, load: Callable[[str], Any]) -> Any:
    """``load(name)``; a failure names the config field and what a hub id needs offline."""
    try:
        return load(name)
    except OSError as e:
        raise OSError(
            f"{field}={name!r} could not be loaded: {e}\nA hub id needs the network or a copy in the Hugging Face "
            "cache (HF_HUB_OFFLINE=1 uses only the cache); otherwise give a local folder"
        ) from e


def build_image_backbone(cfg: ImageEncoderConfig, *, load_pretrained: bool = False) -> nn.Module:
    """A backbone from ``cfg.pretrained`` (when ``load_pretrained``; I/O) or random from ``cfg.arch``."""
    spec = image_backbone_spec(cfg.type)
    if load_pretrained and cfg.pretrained:
        return fetch_pretrained("image_encoder.pretrained", cfg.pretrained, spec.load)
    return spec.build(_config_from_arch(spec.model_type, cfg.arch))


def sincos_2d(h: int, w: int, dim: int, *, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2D sin-cos positions (h*w, dim): half the channels encode the row, half the column."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        angles = coord[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).to(dtype=dtype or torch.float32)


class ImageEncoder(nn.Module):
    """Backbone + projection: images (B, 3, H, W) in [0, 1] -> tokens (B, N, width) with positions."""

    def __init__(self, backbone: nn.Module, cfg: ImageEncoderConfig, width: int):
        super().__init__()
        self.spec = image_backbone_spec(cfg.type)
        self.backbone = backbone
        self.proj = nn.Linear(self.spec.out_dim(backbone.config), width)  # a 1x1 conv over the map
        self.norm = nn.LayerNorm(width)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        feats = self.spec.features(self.backbone, x)
        if self.spec.grid:
            _, _, h, w = feats.shape
            tokens = self.norm(self.proj(feats.flatten(2).transpose(1, 2)))
            return tokens + sincos_2d(h, w, tokens.shape[-1], device=tokens.device, dtype=tokens.dtype)
        return self.norm(self.proj(feats))


# --- caption encoder --------------------------------------------------------------------------

TINY_TEXT_ARCH: dict[str, Any] = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


def text_arch(cfg: TextEncoderConfig) -> dict[str, Any]:
    """The caption encoder's arch without I/O: ``cfg.arch``, or the tiny BERT's when no model is named."""
    if cfg.arch:
        return dict(cfg.arch)
    if cfg.name_or_path is None:
        return {**TINY_TEXT_ARCH, "vocab_size": len(tiny_vocab()), "pad_token_id": 0}
    raise ValueError(
        f"text_encoder.arch is empty, so the architecture of {cfg.name_or_path!r} is only known from its "
        "files; build through reliable_ad.rfnet.build_rfnet (which reads them), or fill text_encoder.arch"
    )


def text_backbone_from_arch(cfg: TextEncoderConfig) -> nn.Module:
    """A random-weight caption encoder from the config alone (no I/O)."""
    from transformers import AutoConfig, AutoModel

    arch = text_arch(cfg)
    if "model_type" not in arch:
        raise ValueError(f"text_encoder.arch needs a 'model_type' (e.g. 'bert'), got keys {sorted(arch)}")
    return AutoModel.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch))


def build_text_backbone(cfg: TextEncoderConfig, *, load_pretrained: bool = False) -> nn.Module:
    """A caption encoder from ``cfg.name_or_path`` (I/O) or random from its arch."""
    from transformers import AutoConfig, AutoModel

    if load_pretrained and cfg.name_or_path:
        return fetch_pretrained("text_encoder.name_or_path", cfg.name_or_path, AutoModel.from_pretrained)
    if not cfg.arch and cfg.name_or_path:  # the architecture only: reads the config file
        config = fetch_pretrained("text_encoder.name_or_path", cfg.name_or_path, AutoConfig.from_pretrained)
        return AutoModel.from_config(config)
    return text_backbone_from_arch(cfg)


def _can_drop_pooler(backbone: nn.Module) -> bool:
    """True for models built to run without a pooler (BERT, RoBERTa and kin take add_pooling_layer)."""
    return "add_pooling_layer" in inspect.signature(type(backbone).__init__).parameters


class TextEncoder(nn.Module):
    """Caption encoder + projection: token ids (B, L) -> token features (B, L, width)."""

    def __init__(self, backbone: nn.Module, width: int):
        super().__init__()
        if getattr(backbone, "pooler", None) is not None and _can_drop_pooler(backbone):
            backbone.pooler = None  # RFNet reads token features only; an unused pooler trips DDP
        self.backbone = backbone
        self.proj = nn.Linear(backbone.config.hidden_size, width)
        self.norm = nn.LayerNorm(width)
        self.vocab_size = int(backbone.config.vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.norm(self.proj(hidden))


def init_weights_(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal init for RFNet's own linear layers (not the backbones')."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
