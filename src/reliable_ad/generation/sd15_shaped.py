"""Stable Diffusion 1.5's exact shapes with random weights: the full-size path without a download.

UNet 859.5M parameters, ControlNet 361M, VAE (83.7M) and the CLIP ViT-L text encoder (123M), built
from SD1.5's configs with fixed seeds. Speed and memory do not depend on the weights, so the GPU check
(benchmarks/gpu.py) times these and the full-size test (tests/test_fullsize.py) runs them through
`reliable-ad run` at 512 px: shapes, dtypes and memory as with real weights. The tokenizer is the tiny
byte-level one (`generation.tiny`): ids of the same kind and length, no vocabulary download. The images
are noise; this is for checks, not for ads.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SD15_SIZE = 512  # SD1.5's native resolution (64x64 latents)
_DOWN_BLOCKS = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
_UP_BLOCKS = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
_CHANNELS = (320, 640, 1280, 1280)


def build_sd15_shaped_components(seed: int = 0) -> dict:
    """Random-weight components with SD1.5's configs: vae, text_encoder, tokenizer, unet, controlnet, scheduler."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from reliable_ad.generation.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=SD15_SIZE // 8, in_channels=4, out_channels=4, cross_attention_dim=768,
                                block_out_channels=_CHANNELS, layers_per_block=2, attention_head_dim=8,
                                down_block_types=_DOWN_BLOCKS, up_block_types=_UP_BLOCKS)
    torch.manual_seed(seed + 1)
    controlnet = ControlNetModel(in_channels=4, cross_attention_dim=768, block_out_channels=_CHANNELS,
                                 layers_per_block=2, attention_head_dim=8, down_block_types=_DOWN_BLOCKS)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                        sample_size=SD15_SIZE)
    torch.manual_seed(seed + 3)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    # a trained CLIP's final LayerNorm has a non-zero bias, which A1111's emphasis rescale divides by (as in tiny.py)
    with torch.no_grad():
        bias = getattr(text_encoder, "text_model", text_encoder).final_layer_norm.bias  # transformers 5: no text_model
        bias.copy_(torch.randn(bias.shape, generator=torch.Generator().manual_seed(seed + 4)) * 0.5)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",  # SD1.5's
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet,
                scheduler=scheduler)


def sd15_shaped_pipeline(dtype: torch.dtype, device: str, seed: int = 0):
    """The components in diffusers' `StableDiffusionControlNetInpaintPipeline`, on ``device`` in ``dtype``."""
    from diffusers import StableDiffusionControlNetInpaintPipeline

    pipe = StableDiffusionControlNetInpaintPipeline(**build_sd15_shaped_components(seed), safety_checker=None,
                                                    feature_extractor=None, requires_safety_checker=False)
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_sd15_shaped_checkpoint(folder: str | os.PathLike, *, dtype: torch.dtype = torch.float16,
                                 seed: int = 0) -> tuple[Path, Path]:
    """Save the components as a user's checkpoint is laid out: ``folder/base`` (a diffusers base-model
    folder) and ``folder/controlnet``; returns both. fp16 halves the 4.8 GB of fp32 weights on disk;
    the loader casts them to the run's dtype (fp32 on a CPU)."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{str(folder)!r} is not empty; pass a new folder for the SD1.5-shaped checkpoint")
    parts = build_sd15_shaped_components(seed)
    controlnet = parts.pop("controlnet").to(dtype)
    base = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    base.to(dtype=dtype)
    base.save_pretrained(folder / "base")
    controlnet.save_pretrained(folder / "controlnet")
    return folder / "base", folder / "controlnet"
