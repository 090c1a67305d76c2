"""RFNet (docs/method.md §3): a multimodal classifier that reviews a generated ad like a human annotator.

Image encoders turn the product image (e_o), the generated image (e_g), its depth map (e_d) and its
salience map (e_s) into tokens; the caption encoder gives e_c; the Feature Filter Module lets e_o
attend to e_c (e_f); the tokens of e_f, e_g, e_d, e_s and a learned CLS token pass self-attention
layers; a linear head on CLS gives the logits. Modalities switch off by config (the paper's ablation).
Deviation: with the product off but the caption on, the caption tokens join the fusion directly
(the FFM needs e_o), so the "without I_o" ablation keeps the caption.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from reliable_ad.rfnet.config import IMAGE_MODALITIES, RFNetConfig
from reliable_ad.rfnet.encoders import (
    ImageEncoder,
    TextEncoder,
    arch_of,
    build_image_backbone,
    init_weights_,
    text_backbone_from_arch,
)
from reliable_ad.rfnet import io
from reliable_ad.rfnet.ffm import FeatureFilterModule
from reliable_ad.rfnet.processor import RFNetProcessor
from reliable_ad.core.labels import class_names

_CHANNELS = {"product": 3, "generated": 3, "depth": 1, "salience": 1}
SHARED = "shared"  # key of the one image encoder when config.share_image_encoder


class RFNet(nn.Module):
    """RFNet. Build by name with ``build_rfnet("tiny")``; load with ``RFNet.from_pretrained(folder)``.

    ``image_backbones`` (keyed by modality, or ``"shared"``) and ``text_backbone`` take transformers
    modules already loaded with weights; those not given are built with random weights from the
    config's ``arch`` (no I/O). ``self.config`` is the config with the built architectures filled in.
    """

    def __init__(
        self,
        config: RFNetConfig,
        *,
        image_backbones: Mapping[str, nn.Module] | None = None,
        text_backbone: nn.Module | None = None,
    ):
        super().__init__()
        mods, width = config.modalities, config.fusion.width
        self.image_modalities = tuple(m for m in IMAGE_MODALITIES if getattr(mods, m))
        keys = (SHARED,) if config.share_image_encoder else self.image_modalities
        given = dict(image_backbones or {})
        if set(given) - set(keys):
            raise ValueError(f"image_backbones has keys {sorted(given)}; this config's image encoders are {list(keys)}")
        self.image_encoders = nn.ModuleDict(
            {
                k: ImageEncoder(
                    given[k] if k in given else build_image_backbone(config.image_encoder), config.image_encoder, width
                )
                for k in keys
            }
        )
        archs = [arch_of(enc.backbone) for enc in self.image_encoders.values()]
        if any(a != archs[0] for a in archs):
            raise ValueError("image_backbones differ in architecture; RFNet has one image_encoder config for all")
        config = replace(config, image_encoder=replace(config.image_encoder, arch=archs[0]))

        self.text_encoder: TextEncoder | None = None
        self.ffm = nn.ModuleList()
        if mods.caption:
            if text_backbone is None:
                text_backbone = text_backbone_from_arch(config.text_encoder)
            self.text_encoder = TextEncoder(text_backbone, width)
            config = replace(config, text_encoder=replace(config.text_encoder, arch=arch_of(text_backbone)))
            if mods.product:
                self.ffm = nn.ModuleList(
                    FeatureFilterModule(width, config.fusion.num_heads, config.fusion.dropout)
                    for _ in range(config.fusion.num_ffm_blocks)
                )
        self.config = config

        # tokens that enter the fusion, in this order after CLS
        self.fused = self.image_modalities + (("caption",) if mods.caption and not mods.product else ())
        self.modality_embed = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, width)) for m in self.fused})
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        layer = nn.TransformerEncoderLayer(
            width,
            config.fusion.num_heads,
            dim_feedforward=int(width * config.fusion.mlp_ratio),
            dropout=config.fusion.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.fusion = nn.TransformerEncoder(
            layer, config.fusion.num_layers, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )
        self.head = nn.Linear(width, config.num_classes)
        self._init_own_weights()

    def _init_own_weights(self) -> None:
        own = [self.ffm, self.fusion, self.head, *(e.proj for e in self.image_encoders.values())]
        own += [*(e.norm for e in self.image_encoders.values())]
        if self.text_encoder is not None:
            own += [self.text_encoder.proj, self.text_encoder.norm]
        for module in own:
            module.apply(init_weights_)
        for p in [self.cls_token, *self.modality_embed.values()]:
            nn.init.trunc_normal_(p, std=0.02)

    @property
    def class_names(self) -> tuple[str, ...]:
        return class_names(self.config.num_classes)

    # --- forward -----------------------------------------------------------------------------------

    def _check_inputs(self, images: dict, input_ids, attention_mask) -> None:
        batch_sizes = {}
        for m in self.image_modalities:
            x = images[m]
            if x is None:
                raise ValueError(
                    f"modalities.{m} is on but {m}=None; pass {m} images (B, {_CHANNELS[m]}, H, W) in [0, 1] "
                    f"or build RFNet with modalities.{m} off"
                )
            if x.ndim != 4 or x.shape[1] != _CHANNELS[m]:
                raise ValueError(f"{m} has shape {tuple(x.shape)}; expected (B, {_CHANNELS[m]}, H, W) in [0, 1]")
            batch_sizes[m] = x.shape[0]
        if self.text_encoder is not None:
            if input_ids is None:
                raise ValueError(
                    "modalities.caption is on but input_ids=None; tokenise the captions with RFNetProcessor "
                    "or build RFNet with modalities.caption off"
                )
            if input_ids.ndim != 2:
                raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected (B, L)")
            if attention_mask is not None and attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}; "
                    "they must match"
                )
            if input_ids.numel() and int(input_ids.max()) >= self.text_encoder.vocab_size:
                raise ValueError(
                    f"input_ids has id {int(input_ids.max())} >= the caption encoder's vocab_size "
                    f"{self.text_encoder.vocab_size}; use the tokenizer saved with this model (RFNetProcessor)"
                )
            batch_sizes["input_ids"] = input_ids.shape[0]
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"inputs disagree on the batch size: {batch_sizes}")

    def forward(
        self,
        product: torch.Tensor | None = None,
        generated: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
        salience: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, num_classes), in the order of ``self.class_names``.

        product, generated: (B, 3, H, W) float in [0, 1] (not ImageNet-normalised; the model does it).
        depth, salience: (B, 1, H, W) float in [0, 1], repeated to 3 channels for the image backbone
            (and normalised like RGB), so pretrained RGB backbones take them unchanged.
        input_ids, attention_mask: (B, L) from RFNetProcessor; attention_mask None = no padding.
        Inputs of switched-off modalities may be None and are ignored when given. Any H, W works; the
        paper used 384 (``config.image_size``, which RFNetProcessor resizes to).
        """
        images = {"product": product, "generated": generated, "depth": depth, "salience": salience}
        self._check_inputs(images, input_ids, attention_mask)

        # 1. image tokens, each (B, N_m, d)
        tokens: dict[str, torch.Tensor] = {}
        for m in self.image_modalities:
            x = images[m] if _CHANNELS[m] == 3 else images[m].expand(-1, 3, -1, -1)
            tokens[m] = self.image_encoders[SHARED if SHARED in self.image_encoders else m](x)

        # 2. caption tokens; the FFM filters the product's tokens with them
        padding = None
        if self.text_encoder is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            caption = self.text_encoder(input_ids, attention_mask)
            padding = attention_mask == 0
            if "product" in tokens:
                for block in self.ffm:
                    tokens["product"] = block(tokens["product"], caption, padding)
            else:
                tokens["caption"] = caption

        # 3. CLS + all tokens through the fusion layers; the head reads CLS
        batch = next(iter(tokens.values())).shape[0]
        seq = [self.cls_token.expand(batch, -1, -1)] + [tokens[m] + self.modality_embed[m] for m in self.fused]
        key_padding = None
        if "caption" in tokens:
            pads = [torch.zeros(batch, s.shape[1], dtype=torch.bool, device=s.device) for s in seq[:-1]]
            key_padding = torch.cat(pads + [padding], dim=1)
        fused = self.fusion(torch.cat(seq, dim=1), src_key_padding_mask=key_padding)
        return self.head(fused[:, 0])

    def predict_log_proba(self, *args, **kwargs) -> torch.Tensor:
        """Temperature-scaled log-probabilities (B, num_classes); differentiable (RFFT needs that)."""
        return torch.log_softmax(self(*args, **kwargs) / self.config.temperature, dim=-1)

    def predict_proba(self, *args, **kwargs) -> torch.Tensor:
        """Temperature-scaled class probabilities (B, num_classes); wrap in torch.no_grad() to infer."""
        return torch.softmax(self(*args, **kwargs) / self.config.temperature, dim=-1)

    def set_temperature(self, temperature: float) -> None:
        """Set the calibration temperature used by predict_proba (saved with the model)."""
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0 (1.0 = uncalibrated)")
        self.config = replace(self.config, temperature=float(temperature))

    # --- persistence (the I/O lives in io.py) -------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, map_location: str | torch.device = "cpu") -> RFNet:
        """Load a saved RFNet from a folder or a hub id (``config.json`` + ``model.safetensors``), in eval
        mode, on ``map_location``."""
        folder = io.resolve_folder(name_or_path)
        config = io.read_config(folder)
        state = io.read_weights(folder)
        with torch.random.fork_rng(devices=[]):  # the throw-away random init leaves the caller's RNG alone
            model = cls(config)
        io.check_state(model, state, folder)
        model.load_state_dict(state, strict=True)
        return model.to(map_location).eval()

    def save_pretrained(self, folder: str | Path, processor=None) -> Path:
        """Write this model (and its tokenizer) to ``folder`` atomically; see io.save_pretrained."""
        return io.save_pretrained(self, folder, processor=processor)

    def default_processor(self) -> RFNetProcessor:
        """The processor this model's config describes (its tokenizer is saved with the model)."""
        return RFNetProcessor.from_config(self.config)
