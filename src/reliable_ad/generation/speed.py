"""Speed options of the generator: attention kernel, channels-last memory format, torch.compile of the UNet
and ControlNet, and the ControlNet's conditioning embedding computed once per call (docs/benchmarks.md).

They change how diffusers' pipeline computes, never what: we set processors, memory formats and compiled
wrappers on its components and leave its `__call__` alone. What diffusers already does is not redone:
classifier-free guidance runs the unconditional and conditional halves in one UNet (and one ControlNet)
call per step, and the VAE decodes the whole batch in one call.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from reliable_ad.generation.config import SpeedConfig

logger = logging.getLogger(__name__)


def apply_speed(pipe, speed: SpeedConfig) -> ControlEmbeddingCache | None:
    """Set ``speed``'s options on ``pipe`` (idempotent); returns the ControlNet embedding cache, if on.

    The order matters: attention processors and memory formats are set on the plain modules, the cache is
    installed on the ControlNet's embedding, and only then are the UNet and ControlNet compiled."""
    speed.__post_init__()
    set_attention(pipe, speed.attention)
    if speed.channels_last:
        for module in _denoisers(pipe) + [pipe.vae]:
            module.to(memory_format=torch.channels_last)
    cache = ControlEmbeddingCache.install(_plain(pipe.controlnet)) if speed.reuse_control_embedding else None
    if speed.compile:
        for name in ("unet", "controlnet"):
            module = getattr(pipe, name)
            if not _is_compiled(module):
                setattr(pipe, name, torch.compile(module, mode=speed.compile_mode))
    return cache


def set_attention(pipe, attention: str) -> None:
    """``sdpa``: diffusers' AttnProcessor2_0 (torch's scaled_dot_product_attention, flash / memory-efficient
    kernels on a GPU), which diffusers already picks under torch 2; a plain AttnProcessor left by a model is
    swapped for it, any other processor (added KV, adapters) is kept. ``default``: diffusers' plain
    AttnProcessor (matmul + softmax) everywhere, via its set_default_attn_processor."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if attention not in ("sdpa", "default"):
        raise ValueError(f"speed.attention={attention!r}: expected 'sdpa' or 'default'")
    for module in _denoisers(pipe) + [pipe.vae]:
        module = _plain(module)
        if attention == "default":
            module.set_default_attn_processor()
            continue
        procs = module.attn_processors
        if any(type(p) is AttnProcessor for p in procs.values()):
            module.set_attn_processor({k: AttnProcessor2_0() if type(p) is AttnProcessor else p
                                       for k, p in procs.items()})


def _denoisers(pipe) -> list:
    return [pipe.unet, pipe.controlnet]


def _is_compiled(module) -> bool:
    return hasattr(module, "_orig_mod")


def _plain(module):
    """The module under a torch.compile wrapper (the module itself when not compiled)."""
    return getattr(module, "_orig_mod", module)


class ControlEmbeddingCache:
    """The ControlNet's conditioning embedding (a conv stack over the full-size Canny image) computed once per
    pipeline call instead of at every denoising step: diffusers passes the same control tensor to the
    ControlNet at each step, so the embedding is the same too and reusing it is bit-identical.

    Installed as an instance ``forward`` on the embedding module, so the class, the state dict and saved
    weights are untouched. It caches only inside ``active()`` (one generator call; the cache holds the
    input tensor, so its identity cannot be taken by another) and never while gradients are on (RFFT)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self._forward = type(module).forward
        self._active = False
        self._input: torch.Tensor | None = None
        self._version = -1
        self._output: torch.Tensor | None = None
        self.computed = 0  # embeddings computed while active (a test counts them)

    @classmethod
    def install(cls, controlnet) -> ControlEmbeddingCache:
        module = controlnet.controlnet_cond_embedding
        existing = getattr(module.forward, "__self__", None)
        if isinstance(existing, cls):  # a second generator on the same pipeline shares it
            return existing
        cache = cls(module)
        module.forward = cache.forward
        return cache

    @torch.compiler.disable
    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        if not self._active or torch.is_grad_enabled():
            return self._forward(self.module, conditioning)
        if conditioning is not self._input or conditioning._version != self._version:
            self._output = self._forward(self.module, conditioning)
            self._input, self._version = conditioning, conditioning._version
            self.computed += 1
        return self._output

    @contextlib.contextmanager
    def active(self):
        self._active = True
        try:
            yield self
        finally:
            self._active = False
            self._input = self._output = None
            self._version = -1
