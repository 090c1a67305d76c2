"""The ad generator: diffusers' ControlNet-inpainting pipeline around a prepared product (docs/method.md §2).

We compose `StableDiffusionControlNetInpaintPipeline`, we do not fork it: the generator prepares the
pipeline's inputs (product canvas, inpainting mask, Canny control, per-image seeds, weighted prompt
embeddings) and pastes the exact product pixels back over the result.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from reliable_ad.generation.config import ModelConfig, SamplingConfig, SpeedConfig
from reliable_ad.generation.models import load_pipeline, set_scheduler
from reliable_ad.data.product import PreparedProduct, paste_back
from reliable_ad.generation.seeds import torch_generator
from reliable_ad.generation.speed import apply_speed
from reliable_ad.generation.weighting import encode_prompt_pair, needs_custom_encoding


@dataclass
class GenerationJob:
    prepared: PreparedProduct
    prompt: str
    negative_prompt: str
    seed: int


@dataclass
class GeneratedImage:
    image: np.ndarray  # (S, S, 3) uint8, the product pasted back pixel-exact
    raw: np.ndarray  # (S, S, 3) float32 in [0, 1]: the pipeline's output before paste-back
    seed: int
    nsfw: bool | None  # None where no safety checker ran
    seconds: float  # this image's share of its batch's wall time


class AdGenerator:
    """Batched generation with one explicit seed per image; batches equal single calls.

    ``speed`` (generation.speed) sets the speed options on ``pipe`` (see generation/speed.py); they are
    the pipeline's from then on, also for other users of the same pipeline object."""

    def __init__(self, pipe, sampling: SamplingConfig | None = None, info: dict | None = None,
                 speed: SpeedConfig | None = None):
        self.pipe = pipe
        self.sampling = sampling or SamplingConfig()
        self.speed = speed or SpeedConfig()
        self.info = dict(info or {})
        set_scheduler(pipe, self.sampling.scheduler)
        self._control_cache = apply_speed(pipe, self.speed)

    @classmethod
    def from_config(cls, model: ModelConfig, sampling: SamplingConfig | None = None, *, cache_dir=None,
                    speed: SpeedConfig | None = None) -> "AdGenerator":
        pipe, info = load_pipeline(model, cache_dir=cache_dir)
        return cls(pipe, sampling, info, speed)

    @property
    def size(self) -> int:
        return self.sampling.size or int(self.info.get("native_size", 512))

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def generate(self, jobs: list[GenerationJob], batch_size: int | None = None) -> list[GeneratedImage]:
        bs = batch_size or self.sampling.batch_size
        if self._seeded_sde:
            bs = 1  # its Brownian noise has one seed per call: one image per call keeps seeds per image
        results: list[GeneratedImage] = []
        for start in range(0, len(jobs), bs):
            results.extend(self._generate_batch(jobs[start : start + bs]))
        return results

    @property
    def _seeded_sde(self) -> bool:
        return hasattr(self.pipe.scheduler, "noise_sampler_seed")

    def _prompt_kwargs(self, jobs: list[GenerationJob]) -> dict:
        prompts = [j.prompt for j in jobs]
        negatives = [j.negative_prompt for j in jobs]
        skip = self.sampling.diffusers_clip_skip
        if skip is None and not needs_custom_encoding(prompts + negatives):
            # plain prompts without clip skip go to diffusers untouched: exactly its tokenisation.
            # With clip skip we encode ourselves: diffusers 0.42's clip-skip path reads
            # `text_encoder.text_model`, which transformers 5 no longer has.
            return dict(prompt=prompts, negative_prompt=negatives)
        te = self.pipe.text_encoder
        pos, neg = encode_prompt_pair(
            self.pipe.tokenizer, te, prompts, negatives, clip_skip=skip, device=self.device, dtype=te.dtype
        )
        return dict(prompt_embeds=pos, negative_prompt_embeds=neg)

    @torch.no_grad()
    def _generate_batch(self, jobs: list[GenerationJob]) -> list[GeneratedImage]:
        for j in jobs:
            if j.prepared.image.shape[0] != self.size:
                raise ValueError(
                    f"product prepared at {j.prepared.image.shape[0]} px but the generator makes {self.size} px; "
                    "prepare products with size=generator.size"
                )
        if self._seeded_sde:
            self.pipe.scheduler.noise_sampler_seed = jobs[0].seed
        t0 = time.perf_counter()
        reuse = self._control_cache.active() if self._control_cache else contextlib.nullcontext()
        with reuse, guidance_rescaled(self.pipe, self.sampling.guidance_rescale):
            out = self._call_pipe(jobs)
        seconds = (time.perf_counter() - t0) / len(jobs)
        return self._results(jobs, out, seconds)

    def _call_pipe(self, jobs: list[GenerationJob]):
        return self.pipe(
            image=[Image.fromarray(j.prepared.image) for j in jobs],
            mask_image=[Image.fromarray(j.prepared.mask) for j in jobs],
            control_image=[Image.fromarray(j.prepared.control) for j in jobs],
            height=self.size,
            width=self.size,
            num_inference_steps=self.sampling.num_inference_steps,
            guidance_scale=self.sampling.guidance_scale,
            eta=self.sampling.eta,
            controlnet_conditioning_scale=self.sampling.controlnet_conditioning_scale,
            generator=[torch_generator(j.seed) for j in jobs],
            output_type="np",
            **self._prompt_kwargs(jobs),
        )

    def _results(self, jobs: list[GenerationJob], out, seconds: float) -> list[GeneratedImage]:
        flags = out.nsfw_content_detected
        results = []
        for i, j in enumerate(jobs):
            raw = np.asarray(out.images[i], dtype=np.float32)
            generated = np.clip(np.round(raw * 255.0), 0, 255).astype(np.uint8)
            results.append(
                GeneratedImage(
                    image=paste_back(generated, j.prepared),
                    raw=raw,
                    seed=j.seed,
                    nsfw=None if flags is None else bool(flags[i]),
                    seconds=seconds,
                )
            )
        return results


@contextlib.contextmanager
def guidance_rescaled(pipe, guidance_rescale: float):
    """Within: ``pipe``'s classifier-free-guided noise prediction is rescaled towards its text half's std
    before each scheduler step (diffusers' ``rescale_noise_cfg``; Lin et al. 2023, §3.4), as diffusers'
    text-to-image pipeline does with ``guidance_rescale=``.

    ``StableDiffusionControlNetInpaintPipeline`` (diffusers 0.42) takes no ``guidance_rescale``, and we do
    not fork its ``__call__``: a forward hook keeps the UNet's last output, whose second half is the text
    prediction, and an instance ``step`` on the scheduler (with the class method's signature, which the
    pipeline inspects for ``eta`` and ``generator``) rescales the guided prediction it is given. Both are
    removed on exit. 0 changes nothing; without CFG (guidance_scale <= 1) there is nothing to rescale."""
    if not guidance_rescale:
        yield
        return
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    last = {}
    scheduler = pipe.scheduler
    own_step = vars(scheduler).get("step")  # someone else's instance step, restored on exit
    step = scheduler.step

    def keep_output(module, args, output):
        last["unet"] = output[0]

    @functools.wraps(step)
    def rescaled_step(model_output, *args, **kwargs):
        if pipe.do_classifier_free_guidance:
            text = last["unet"].chunk(2)[1]  # the pipeline batches (negative, prompt)
            model_output = rescale_noise_cfg(model_output, text, guidance_rescale=guidance_rescale)
        return step(model_output, *args, **kwargs)

    hook = pipe.unet.register_forward_hook(keep_output)
    scheduler.step = rescaled_step
    try:
        yield
    finally:
        hook.remove()
        if own_step is None:
            del scheduler.step
        else:
            scheduler.step = own_step
