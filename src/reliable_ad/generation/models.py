"""Load the generation models: base SD checkpoint + ControlNet (canny) + optional LoRAs.

Each can be a hub id, a local diffusers folder or a single `.safetensors`/`.ckpt` file
(`core.registry.resolve_source` tells which). Named presets (`tiny`, `sd15`, `reliable`, ...) fill in
sensible pairs and are the registry's "model" kind (`reliable-ad models --kind model`); `tiny` is built
locally from configs and then loaded from its folder through exactly the same code as a user's
checkpoint; `synthad` loads from the packaged weights (`core.registry.packaged_folder("generator")`).

torch and diffusers are imported inside the functions that load models, not at import time: this
module registers the "model" presets, and listing the registry must not import them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reliable_ad.core.registry import FILE, FOLDER, HUB, NAME, list_names, packaged_folder, register, resolve_source
from reliable_ad.generation.config import LoraSpec, ModelConfig, normalize_loras

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


@dataclass(frozen=True)
class ModelPreset:
    name: str
    base: str | None  # None: built locally (tiny)
    controlnet: str | None
    native_size: int
    description: str
    inpaint_unet: bool = False
    prompt_preset: str | None = None  # the prompt preset the model was made for (None: any)
    rfnet: str | None = None  # the RFNet that judges this model's images by default (None: must be given)
    packaged: str | None = None  # base/controlnet are subfolders of this packaged weights folder (core.registry)


MODEL_PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset("tiny", None, None, 128, "random-weight SD-shaped toy (offline; for tests and a first run)",
                    rfnet="tiny"),
        ModelPreset("tiny-inpaint", None, None, 128, "tiny with a 9-channel inpainting UNet", inpaint_unet=True,
                    rfnet="tiny"),
        ModelPreset(
            "synthad",
            "base",
            "controlnet",
            64,
            "SD-shaped toy trained on SynthAd scenes, shipped in the package (offline; makes SynthAd ads; "
            "judge them with --rfnet synthad)",
            prompt_preset="synthad",
            rfnet="synthad",
            packaged="generator",
        ),
        ModelPreset(
            "sd15",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "lllyasviel/control_v11p_sd15_canny",
            512,
            "Stable Diffusion 1.5 + ControlNet v1.1 canny (4-channel UNet, as the paper)",
        ),
        ModelPreset(
            "sd15-inpaint",
            "stable-diffusion-v1-5/stable-diffusion-inpainting",
            "lllyasviel/control_v11p_sd15_canny",
            512,
            "SD 1.5 inpainting (9-channel UNet) + ControlNet v1.1 canny",
            inpaint_unet=True,
        ),
        ModelPreset(
            "reliable",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "ZhenbangDu/reliable_controlnet",
            512,
            "the authors' RFFT-tuned ControlNet on SD1.5 (the paper used majicMIX realistic v7 as base: "
            "pass --model BASE --controlnet ZhenbangDu/reliable_controlnet to use it)",
        ),
    ]
}
for _preset in MODEL_PRESETS.values():
    register("model", _preset.name, f"{_preset.description} [{_preset.native_size} px]", _preset,
             packaged=_preset.packaged)
del _preset


@dataclass(frozen=True)
class ResolvedModel:
    preset: str | None
    base: str
    controlnet: str
    native_size: int


def resolve_model(cfg: ModelConfig, *, cache_dir: str | os.PathLike | None = None) -> ResolvedModel:
    """Turn a preset name or a path/hub id into concrete base and ControlNet sources."""
    source = resolve_source(cfg.model, "model", suffixes=SINGLE_FILE_SUFFIXES)
    if source.form == NAME:
        preset: ModelPreset = source.entry.load()
        if preset.base is None:
            from reliable_ad.generation.tiny import ensure_tiny_checkpoint

            base, controlnet = ensure_tiny_checkpoint(cache_dir, inpaint_unet=preset.inpaint_unet)
            return ResolvedModel(preset.name, str(base), cfg.controlnet or str(controlnet), preset.native_size)
        base, controlnet = preset.base, preset.controlnet
        if preset.packaged:  # FileNotFoundError naming the fix when the packaged weights are absent
            folder = packaged_folder(preset.packaged)
            base, controlnet = str(folder / base), str(folder / controlnet)
        return ResolvedModel(preset.name, base, cfg.controlnet or controlnet, preset.native_size)
    if not cfg.controlnet:
        raise ValueError(
            f"model={cfg.model!r} is not a preset ({list_names('model')}), so a ControlNet must be given: "
            "--controlnet HUB_ID|FOLDER|FILE (e.g. lllyasviel/control_v11p_sd15_canny)"
        )
    return ResolvedModel(None, cfg.model, cfg.controlnet, 512)


def source_form(src: str, what: str) -> str:
    """"file", "folder" or "hub" for a checkpoint ``src`` (no preset names); errors name the value."""
    return resolve_source(src, "model", accept=(FOLDER, HUB, FILE), suffixes=SINGLE_FILE_SUFFIXES, what=what).form


def select_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    import torch

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    if dtype == "auto":
        return dev, (torch.float16 if dev.type == "cuda" else torch.float32)
    return dev, {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


@functools.cache
def _dtype_key() -> str:
    # diffusers 0.42 renamed from_pretrained's `torch_dtype` to `dtype` (the old name warns); older ones know only `torch_dtype`
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def dtype_kwarg(dtype) -> dict:
    """``{"dtype": dtype}`` for diffusers' loaders, under the name the installed diffusers wants."""
    return {_dtype_key(): dtype}


def load_controlnet(src: str, *, dtype: torch.dtype | None = None, config: str | None = None):
    """A ControlNet from a hub id, folder or single file (``dtype`` default float32)."""
    import torch
    from diffusers import ControlNetModel

    dtype = dtype or torch.float32
    if source_form(src, "controlnet") == FILE:
        return _from_single_file(ControlNetModel, str(src), config, "--controlnet-config", **dtype_kwarg(dtype))
    return ControlNetModel.from_pretrained(str(src), **dtype_kwarg(dtype))


def _from_single_file(cls, src: str, config: str | None, flag: str, **kwargs):
    """``cls.from_single_file``; without ``config`` diffusers fetches the configs from the hub, and offline
    that fails with a message that does not name our flag, so the error says which flag gives them."""
    try:
        return cls.from_single_file(src, config=config, **kwargs)
    except OSError as e:
        if config:
            raise
        raise OSError(
            f"{src}: the single-file checkpoint's configs could not be fetched ({e}); offline, give "
            f"{flag} FOLDER, a diffusers folder with the configs (weights not needed)"
        ) from e


def _config_safety_checker(src: str, config: str | None, dtype) -> dict:
    """The safety checker and its feature extractor for a single-file base model, from the ``--base-config``
    folder or hub id (SD1.5's has them in ``safety_checker/`` and ``feature_extractor/``): diffusers'
    ``from_single_file`` loads none by itself. Without them the model runs unchecked, with a warning
    (the run's ``model.safety_checker`` records false)."""
    if config:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        try:
            return dict(
                safety_checker=StableDiffusionSafetyChecker.from_pretrained(config, subfolder="safety_checker",
                                                                            torch_dtype=dtype),
                feature_extractor=CLIPImageProcessor.from_pretrained(config, subfolder="feature_extractor"),
            )
        except (OSError, ValueError) as e:
            reason = f"{config} has no loadable safety_checker/ and feature_extractor/ ({str(e).splitlines()[0][:200]})"
    else:
        reason = "no --base-config was given"
    logger.warning("%s: a single-file base model runs WITHOUT the NSFW safety checker: %s; give --base-config "
                   "a folder that has them (SD1.5's) or pass --no-safety-checker to silence this", src, reason)
    return dict(safety_checker=None, requires_safety_checker=False)


def load_pipeline(cfg: ModelConfig, *, cache_dir: str | os.PathLike | None = None):
    """Build the diffusers ControlNet-inpainting pipeline described by ``cfg``; returns (pipe, info)."""
    from diffusers import StableDiffusionControlNetInpaintPipeline as Pipeline

    resolved = resolve_model(cfg, cache_dir=cache_dir)
    device, dtype = select_device_dtype(cfg.device, cfg.dtype)
    controlnet = load_controlnet(resolved.controlnet, dtype=dtype, config=cfg.controlnet_config)
    kwargs: dict = dict(controlnet=controlnet, **dtype_kwarg(dtype))
    if not cfg.safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if source_form(resolved.base, "model") == FILE:
        if cfg.safety_checker:  # diffusers loads none from a single file: take the config folder's
            kwargs.update(_config_safety_checker(resolved.base, cfg.base_config, dtype))
        pipe = _from_single_file(Pipeline, resolved.base, cfg.base_config, "--base-config", **kwargs)
    else:
        pipe = Pipeline.from_pretrained(resolved.base, **kwargs)
    if pipe.safety_checker is None:
        pipe.register_to_config(requires_safety_checker=False)
    loras = normalize_loras(cfg.lora, cfg.lora_scale)
    if loras:
        apply_loras(pipe, loras)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    info = {
        "preset": resolved.preset,
        "base": resolved.base,
        "controlnet": resolved.controlnet,
        # every fused LoRA, in order, with its scale and weights hash (None: no LoRA)
        "lora": [{"path": s.path, "scale": s.scale, "hash": weights_fingerprint(s.path)} for s in loras] or None,
        "native_size": resolved.native_size,
        "unet_in_channels": pipe.unet.config.in_channels,
        "safety_checker": pipe.safety_checker is not None,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "hashes": {
            "base": weights_fingerprint(resolved.base),
            "controlnet": weights_fingerprint(resolved.controlnet),
            **({"lora": [weights_fingerprint(s.path) for s in loras]} if loras else {}),
        },
    }
    return pipe, info


LORA_FIX = ("give a LoRA for this base model's architecture (SD1.x UNet/CLIP text encoder), as a .safetensors "
            "file in kohya/A1111 (lora_unet_*/lora_te_*) or diffusers/peft (unet.*/text_encoder.*) format")


def apply_loras(pipe, loras: list[LoraSpec]) -> None:
    """Load each LoRA (hub id, folder or single file; kohya/A1111 or diffusers/peft keys, which diffusers
    converts) as its own adapter, weight them by their scales and fuse them all at once into the UNet and
    text encoder; the adapter layers are removed afterwards, the fused weights stay."""
    names = []
    for i, spec in enumerate(loras):
        name = f"lora{i}"
        _load_lora(pipe, spec.path, name)
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[spec.scale for spec in loras])
    pipe.fuse_lora(lora_scale=1.0, adapter_names=names)  # the per-adapter scales are set above
    pipe.unload_lora_weights()


def apply_lora(pipe, src: str, scale: float) -> None:
    """One LoRA at ``scale`` (see ``apply_loras``)."""
    apply_loras(pipe, [LoraSpec(src, scale)])


def _load_lora(pipe, src: str, name: str) -> None:
    """``load_lora_weights`` with errors that name the file and the fix; a file that matches no layer of
    the model (which diffusers would only warn about) is an error too."""
    form = source_form(src, "lora")  # a missing path or a wrong suffix: its own error, naming the value
    try:
        if form == FILE:
            p = Path(src)
            pipe.load_lora_weights(str(p.parent), weight_name=p.name, adapter_name=name)
        else:
            pipe.load_lora_weights(src, adapter_name=name)
    except (ValueError, RuntimeError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"LoRA {src}: could not be loaded into the model ({_short_cause(e)}); {LORA_FIX}") from e
    loaded = {component for component, adapters in pipe.get_list_adapters().items() if name in adapters}
    if not loaded:
        raise ValueError(f"LoRA {src}: none of its weights match a UNet or text-encoder layer (is it a LoRA for "
                         f"this model?); {LORA_FIX}")


def _short_cause(e: Exception) -> str:
    """torch lists every mismatched layer; one example and the count are enough."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    mismatches = [line for line in lines if line.startswith("size mismatch")]
    if mismatches:
        return f"{len(mismatches)} layer(s) have shapes other than the model's, e.g. {mismatches[0]}"
    first = lines[0] if lines else type(e).__name__
    return f"{type(e).__name__}: {first[:300]}"


def set_scheduler(pipe, name: str) -> None:
    """Swap the sampler by name, keeping the model's training schedule (betas, offsets)."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        DPMSolverSDEScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    base = dict(pipe.scheduler.config)
    factories = {
        "ddim": lambda: DDIMScheduler.from_config(base),
        "euler_a": lambda: EulerAncestralDiscreteScheduler.from_config(base),
        "euler": lambda: EulerDiscreteScheduler.from_config(base),
        "dpmpp_sde_karras": lambda: DPMSolverSDEScheduler.from_config(base, use_karras_sigmas=True),
        "dpmpp_2m_karras": lambda: DPMSolverMultistepScheduler.from_config(base, use_karras_sigmas=True),
        "unipc": lambda: UniPCMultistepScheduler.from_config(base),
    }
    if name not in factories:
        raise ValueError(f"scheduler {name!r} is not one of {sorted(factories)}")
    if name == "dpmpp_sde_karras":
        try:
            import torchsde  # noqa: F401
        except ImportError as e:
            raise ImportError("the dpmpp_sde_karras scheduler needs torchsde: pip install torchsde") from e
    pipe.scheduler = factories[name]()


@functools.lru_cache(maxsize=64)
def weights_fingerprint(src: str | None) -> str | None:
    """sha256 over the weight files of a local file/folder ('sha256:...'); hub ids give 'hub:<id>@<commit>'."""
    if not src:
        return None
    p = Path(src).expanduser()
    if p.is_file():
        return "sha256:" + _hash_files([p], p.parent)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SINGLE_FILE_SUFFIXES)
        return "sha256:" + _hash_files(files, p) if files else None
    try:
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(src, local_files_only=True))
        return f"hub:{src}@{local.name}"
    except Exception:  # noqa: BLE001 - a hub id we cannot resolve offline is still recorded by name
        return f"hub:{src}"


def _hash_files(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()
