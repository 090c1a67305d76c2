"""A differentiable sampler for the ControlNet-inpainting path (docs/method.md §5, the ReFL-style RFFT step).

It composes the generator's `StableDiffusionControlNetInpaintPipeline`: the same components and the
pipeline's own helpers (`prepare_latents`, `prepare_mask_latents`, `prepare_control_image`, image
processors) prepare a batch, and the denoising loop below is that of `pipeline.__call__`, split into
steps so that RFFT can run steps 0..t-1 without gradient and step t with gradient. Without gradients
it reproduces the pipeline's images (same seeds, per-image CPU generators) to float precision, with
`sampling.guidance_rescale` too, which the generator hooks into the pipeline (`guidance_rescaled`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

ImageLike = Image.Image | np.ndarray


def _as_pil(items: Sequence[ImageLike], what: str) -> list[Image.Image]:
    if isinstance(items, (Image.Image, np.ndarray)):
        raise TypeError(f"{what} must be a list with one image per batch item, got a single {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8:
                raise TypeError(f"{what}[{i}] is a {item.dtype} array; give uint8 (H, W[, 3]) arrays or PIL images")
            item = Image.fromarray(item)
        if not isinstance(item, Image.Image):
            raise TypeError(f"{what}[{i}] is a {type(item).__name__}; give uint8 arrays or PIL images")
        out.append(item)
    return out


@dataclass
class SamplingState:
    """Everything a denoising loop needs for one batch of B images, prepared once.

    Latent tensors are (B, 4, h, w) with h = H / vae_scale_factor; nothing here carries gradient.
    """

    latents: torch.Tensor  # x_T, the initial noise (scaled by init_noise_sigma)
    noise: torch.Tensor  # the raw initial noise; the 4-channel path re-noises the known region with it
    image_latents: torch.Tensor | None  # 4-channel UNet: latents of the product canvas (known region)
    mask: torch.Tensor  # (B, 1, h, w), 1 = generate; the 9-channel UNet's extra input and the 4-channel blend
    masked_image_latents: torch.Tensor  # (B, 4, h, w), the 9-channel UNet's extra input
    control_image: torch.Tensor  # (B, 3, H, W) in [0, 1], the ControlNet condition
    prompt_embeds: torch.Tensor  # (B, L, D)
    negative_prompt_embeds: torch.Tensor  # (B, L, D); the unconditional half of CFG
    scheduler: object  # this batch's own scheduler (set to its timesteps); states never share one
    timesteps: torch.Tensor  # (num_inference_steps,)
    guidance_scale: float
    controlnet_conditioning_scale: float
    extra_step_kwargs: dict
    height: int
    width: int
    guidance_rescale: float = 0.0  # sampling.guidance_rescale: 0 = plain CFG

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    def guide(self, uncond: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance as inference applies it (generation.generator): uncond + g (text - uncond),
        then, where guidance_rescale > 0, diffusers' `rescale_noise_cfg` towards the text prediction's std
        (Lin et al. 2023, §3.4). It acts on the model output as is (eps or v, the scheduler's
        prediction_type), before the scheduler converts it, as diffusers does; differentiable."""
        guided = uncond + self.guidance_scale * (text - uncond)
        if not self.guidance_rescale:
            return guided
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

        return rescale_noise_cfg(guided, text, guidance_rescale=self.guidance_rescale)


@dataclass
class GradedStep:
    """The output of one denoising step taken with gradient (RFFT's graded step at index t)."""

    latents: torch.Tensor  # x_t, the input of the step (no gradient)
    noise_pred: torch.Tensor  # guided eps (B, 4, h, w); CFG (and its rescale) applied where guidance_scale > 1
    eps_text: torch.Tensor  # eps(x_t, prompt, control)
    eps_uncond: torch.Tensor | None  # eps(x_t, negative prompt, control); None without CFG
    eps_extra: list[torch.Tensor]  # eps for each of `extra_embeds`, in order (e.g. the empty prompt for L_CC)
    pred_x0: torch.Tensor  # the x0 prediction from x_t (known region restored on 4-channel UNets)
    prev_latents: torch.Tensor  # x_{t-1} as the scheduler steps it (with gradient)
    index: int
    timestep: torch.Tensor


class ControlNetInpaintSampler:
    """Denoising loop of `StableDiffusionControlNetInpaintPipeline`, open for training.

    Shares `pipe`'s components (no copies): `unet`, `vae`, `controlnet` (the default ControlNet; any
    other one, e.g. a frozen teacher, can be passed per call) and the pipeline's preparation helpers.
    Each prepared batch gets its own scheduler of the pipe's class and config, so sampling never
    disturbs the pipe's scheduler and batches with different step counts can interleave. Guess mode,
    IP-Adapters, strength < 1 and multi-ControlNets are not supported.
    """

    def __init__(self, pipe, *, controlnet=None):
        from diffusers import ControlNetModel

        self.pipe = pipe
        self.controlnet = controlnet if controlnet is not None else pipe.controlnet
        if not isinstance(self.controlnet, ControlNetModel):
            raise TypeError(f"need a single ControlNetModel, got {type(self.controlnet).__name__}")
        if self.controlnet.config.global_pool_conditions:
            raise ValueError("ControlNets with global_pool_conditions (guess mode) are not supported by RFFT")

    @property
    def unet(self):
        return self.pipe.unet

    @property
    def vae(self):
        return self.pipe.vae

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def unet_in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    # --- 1. preparation (the pipeline's steps 4-7) ---------------------------------------------------

    @torch.no_grad()
    def prepare(
        self,
        image: Sequence[ImageLike],
        mask_image: Sequence[ImageLike],
        control_image: Sequence[ImageLike],
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor,
        *,
        height: int,
        width: int,
        num_inference_steps: int = 40,
        guidance_scale: float = 7.5,
        guidance_rescale: float = 0.0,
        eta: float = 0.0,
        controlnet_conditioning_scale: float = 1.0,
        generator: list[torch.Generator] | torch.Generator | None = None,
    ) -> SamplingState:
        """Prepare a batch exactly as the pipeline's `__call__` does (same helpers, same RNG order).

        `image`: product canvases (uint8 (H, W, 3) arrays or PIL), `mask_image`: 255 = generate,
        `control_image`: Canny images; one per batch item. `prompt_embeds`, `negative_prompt_embeds`:
        (B, L, D) from `encode_prompt_pair`. `generator`: one CPU generator per image, as the generator
        uses, so a batch equals single calls. `guidance_rescale`: as `sampling.guidance_rescale` (0 = off).
        """
        if not 0 <= guidance_rescale <= 1:
            raise ValueError(f"guidance_rescale={guidance_rescale!r} must be in [0, 1]; pass 0 (off) or "
                             "sampling.guidance_rescale (0.7 is Lin et al.'s value for zero-terminal-SNR models)")
        pipe = self.pipe
        images = _as_pil(image, "image")
        masks = _as_pil(mask_image, "mask_image")
        controls = _as_pil(control_image, "control_image")
        batch = prompt_embeds.shape[0]
        if not (len(images) == len(masks) == len(controls) == batch == negative_prompt_embeds.shape[0]):
            raise ValueError(
                f"batch sizes differ: {len(images)} images, {len(masks)} masks, {len(controls)} control images, "
                f"{batch} prompt_embeds, {negative_prompt_embeds.shape[0]} negative_prompt_embeds; "
                "give one of each per image"
            )
        if prompt_embeds.shape != negative_prompt_embeds.shape:
            raise ValueError(
                f"prompt_embeds {tuple(prompt_embeds.shape)} and negative_prompt_embeds "
                f"{tuple(negative_prompt_embeds.shape)} differ; encode both with encode_prompt_pair"
            )
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} images; give one per image")
        device = self.device

        control = pipe.prepare_control_image(
            image=controls, width=width, height=height, batch_size=batch, num_images_per_prompt=1,
            device=device, dtype=self.controlnet.dtype, crops_coords=None, resize_mode="default",
            do_classifier_free_guidance=False,
        )
        init_image = pipe.image_processor.preprocess(images, height=height, width=width, resize_mode="default")
        init_image = init_image.to(dtype=torch.float32)
        mask = pipe.mask_processor.preprocess(masks, height=height, width=width, resize_mode="default")
        masked_image = init_image * (mask < 0.5)
        height, width = init_image.shape[-2:]

        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)

        four_channel = self.unet_in_channels == 4
        outputs = pipe.prepare_latents(
            batch, pipe.vae.config.latent_channels, height, width, prompt_embeds.dtype, device, generator,
            None, image=init_image, timestep=timesteps[:1].repeat(batch), is_strength_max=True,
            return_noise=True, return_image_latents=four_channel,
        )
        latents, noise, image_latents = outputs if four_channel else (*outputs, None)
        # prepare_latents scales by pipe.scheduler.init_noise_sigma, which for sigma schedulers depends on
        # set_timesteps; the pipeline has set it on the scheduler it steps with, which here is ours
        latents = noise * scheduler.init_noise_sigma
        mask, masked_image_latents = pipe.prepare_mask_latents(
            mask, masked_image, batch, height, width, prompt_embeds.dtype, device, generator, False
        )
        # as pipe.prepare_extra_step_kwargs, but for this batch's scheduler rather than pipe.scheduler
        accepts = set(inspect.signature(scheduler.step).parameters)
        extra = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in accepts}
        return SamplingState(
            latents=latents, noise=noise, image_latents=image_latents, mask=mask,
            masked_image_latents=masked_image_latents, control_image=control,
            prompt_embeds=prompt_embeds.to(device), negative_prompt_embeds=negative_prompt_embeds.to(device),
            scheduler=scheduler, timesteps=timesteps, guidance_scale=float(guidance_scale),
            controlnet_conditioning_scale=float(controlnet_conditioning_scale), extra_step_kwargs=extra,
            height=int(height), width=int(width), guidance_rescale=float(guidance_rescale),
        )

    # --- 2. one model evaluation ---------------------------------------------------------------------

    def predict_noise(
        self,
        state: SamplingState,
        timestep: torch.Tensor | int,
        latents: torch.Tensor,
        embeds: Sequence[torch.Tensor],
        *,
        controlnet=None,
    ) -> list[torch.Tensor]:
        """eps(x_t, c, control) at `timestep` (e.g. `state.timesteps[i]`) for each prompt-embedding set c
        in `embeds` (each (B, L, D)), in one batched call.

        The ControlNet runs on every set (the pipeline's "ControlNet on both halves"); `controlnet`
        overrides the sampler's (e.g. a frozen teacher). Gradients follow the ambient mode.
        """
        controlnet = controlnet if controlnet is not None else self.controlnet
        t = timestep
        k = len(embeds)
        model_input = torch.cat([latents] * k) if k > 1 else latents
        model_input = state.scheduler.scale_model_input(model_input, t)
        hidden = torch.cat(list(embeds)) if k > 1 else embeds[0]
        control = torch.cat([state.control_image] * k) if k > 1 else state.control_image
        down, mid = controlnet(
            model_input.to(controlnet.dtype), t, encoder_hidden_states=hidden.to(controlnet.dtype),
            controlnet_cond=control.to(controlnet.dtype), conditioning_scale=state.controlnet_conditioning_scale,
            guess_mode=False, return_dict=False,
        )
        unet = self.unet
        if self.unet_in_channels == 9:
            mask = torch.cat([state.mask] * k) if k > 1 else state.mask
            masked = torch.cat([state.masked_image_latents] * k) if k > 1 else state.masked_image_latents
            model_input = torch.cat([model_input, mask, masked], dim=1)
        noise_pred = unet(
            model_input.to(unet.dtype), t, encoder_hidden_states=hidden.to(unet.dtype),
            down_block_additional_residuals=[d.to(unet.dtype) for d in down],
            mid_block_additional_residual=mid.to(unet.dtype), return_dict=False,
        )[0]
        return list(noise_pred.chunk(k)) if k > 1 else [noise_pred]

    def guided_noise(
        self, state: SamplingState, index: int, latents: torch.Tensor, *, controlnet=None
    ) -> torch.Tensor:
        """The generator's noise prediction: CFG over (negative, prompt) where guidance_scale > 1 (rescaled
        where guidance_rescale > 0, `SamplingState.guide`)."""
        t = state.timesteps[index]
        if not state.do_classifier_free_guidance:
            return self.predict_noise(state, t, latents, [state.prompt_embeds], controlnet=controlnet)[0]
        uncond, text = self.predict_noise(
            state, t, latents, [state.negative_prompt_embeds, state.prompt_embeds], controlnet=controlnet
        )
        return state.guide(uncond, text)

    # --- 3. stepping ---------------------------------------------------------------------------------

    def step(
        self, state: SamplingState, index: int, latents: torch.Tensor, noise_pred: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_{t-1}, x0 prediction) from x_t and eps, as the pipeline steps (with its 4-channel blend).

        On 4-channel UNets the known (product) region is put back into the latents after each step,
        re-noised to the next timestep; in the x0 prediction it is put back clean.
        """
        t = state.timesteps[index]
        out = state.scheduler.step(noise_pred, t, latents, **state.extra_step_kwargs, return_dict=True)
        prev = out.prev_sample
        x0 = getattr(out, "pred_original_sample", None)
        if x0 is None:
            x0 = self.predict_x0(state, index, latents, noise_pred)
        if self.unet_in_channels == 4:
            known = state.image_latents
            if index < state.num_steps - 1:
                known = state.scheduler.add_noise(known, state.noise, torch.tensor([state.timesteps[index + 1]]))
            prev = (1 - state.mask) * known + state.mask * prev
            x0 = (1 - state.mask) * state.image_latents + state.mask * x0
        return prev, x0

    def predict_x0(
        self, state: SamplingState, index: int, latents: torch.Tensor, noise_pred: torch.Tensor
    ) -> torch.Tensor:
        """x0 from x_t and the model output under the scheduler's training schedule (DDPM-family)."""
        t = int(state.timesteps[index])
        alpha_bar = state.scheduler.alphas_cumprod.to(latents.device, torch.float32)[t].to(latents.dtype)
        kind = state.scheduler.config.prediction_type
        if kind == "epsilon":
            return (latents - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()
        if kind == "v_prediction":
            return alpha_bar.sqrt() * latents - (1 - alpha_bar).sqrt() * noise_pred
        if kind == "sample":
            return noise_pred
        raise ValueError(f"scheduler prediction_type={kind!r} is not supported")

    @torch.no_grad()
    def denoise(self, state: SamplingState, *, stop: int | None = None, controlnet=None) -> torch.Tensor:
        """Run steps [0, stop) without gradient from x_T; returns the latents entering step `stop`.

        `stop=None` runs the whole loop and returns the final latents (what the pipeline decodes).
        """
        stop = state.num_steps if stop is None else int(stop)
        if not 0 <= stop <= state.num_steps:
            raise ValueError(f"stop={stop} must be in [0, {state.num_steps}]")
        latents = state.latents
        for i in range(stop):
            noise_pred = self.guided_noise(state, i, latents, controlnet=controlnet)
            latents, _ = self.step(state, i, latents, noise_pred)
        return latents

    def graded_step(
        self,
        state: SamplingState,
        index: int,
        latents: torch.Tensor,
        *,
        extra_embeds: Sequence[torch.Tensor] = (),
        controlnet=None,
    ) -> GradedStep:
        """Step `index` from x_t = `latents` with gradient (under the ambient grad mode), CFG included.

        `extra_embeds` are further prompt-embedding sets evaluated in the same batched call (L_CC's
        empty prompt), so the UNet runs once for all of them.
        """
        latents = latents.detach()
        cfg = state.do_classifier_free_guidance
        sets = ([state.negative_prompt_embeds] if cfg else []) + [state.prompt_embeds] + list(extra_embeds)
        eps = self.predict_noise(state, state.timesteps[index], latents, sets, controlnet=controlnet)
        uncond, text = (eps[0], eps[1]) if cfg else (None, eps[0])
        extra = eps[2:] if cfg else eps[1:]
        noise_pred = state.guide(uncond, text) if cfg else text
        prev, x0 = self.step(state, index, latents, noise_pred)
        return GradedStep(
            latents=latents, noise_pred=noise_pred, eps_text=text, eps_uncond=uncond, eps_extra=list(extra),
            pred_x0=x0, prev_latents=prev, index=int(index), timestep=state.timesteps[index],
        )

    def rollout(
        self, state: SamplingState, index: int, *, extra_embeds: Sequence[torch.Tensor] = (), controlnet=None
    ) -> GradedStep:
        """ReFL/RFFT: steps 0..index-1 without gradient, then step `index` with gradient."""
        if not 0 <= index < state.num_steps:
            raise ValueError(f"index={index} must be in [0, {state.num_steps}) (the steps of this schedule)")
        latents = self.denoise(state, stop=index, controlnet=controlnet)
        return self.graded_step(state, index, latents, extra_embeds=extra_embeds, controlnet=controlnet)

    # --- 4. decoding ---------------------------------------------------------------------------------

    def decode(self, latents: torch.Tensor, *, generator=None) -> torch.Tensor:
        """VAE decode: images (B, 3, H, W) in [-1, 1] (unclamped), differentiable."""
        vae = self.vae
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False, generator=generator)[0]

    @staticmethod
    def to_unit_range(images_pm1: torch.Tensor) -> torch.Tensor:
        """[-1, 1] decode -> [0, 1], clamped as the pipeline's postprocess does."""
        return (images_pm1 / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def sample(self, state: SamplingState, *, controlnet=None, generator=None) -> torch.Tensor:
        """The whole loop and decode without gradient: images (B, 3, H, W) float32 in [0, 1].

        Matches `pipe(..., output_type="np")` (before paste-back) for the same inputs and seeds.
        """
        latents = self.denoise(state, controlnet=controlnet)
        return self.to_unit_range(self.decode(latents, generator=generator)).float()
