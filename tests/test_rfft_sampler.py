"""The RFFT sampler against the generator (diffusers' pipeline): parity, batching, the graded step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_product_rgba
from reliable_ad.generation.config import ModelConfig, SamplingConfig
from reliable_ad.generation.generator import AdGenerator, GenerationJob
from reliable_ad.data.product import prepare_product, product_from_arrays
from reliable_ad.generation.seeds import torch_generator
from reliable_ad.generation.weighting import encode_prompt_pair
from reliable_ad.rfft.sampler import ControlNetInpaintSampler

SIZE = 64
FAST = dict(size=SIZE, num_inference_steps=4, batch_size=4)
PROMPTS = ["a bottle on a wooden table, (snow:1.2)", "a bottle in a kitchen"]
NEGATIVES = ["blurry, lowres", ""]


def _prepared(seed=0, color=(200, 40, 40)):
    rgba = make_product_rgba(96, color, seed=seed)
    return prepare_product(product_from_arrays(rgba[..., :3], rgba[..., 3]), size=SIZE, image_scale=0.75)


@pytest.fixture(scope="module", params=["tiny", "tiny-inpaint"])
def generator(request, model_home):
    return AdGenerator.from_config(ModelConfig(model=request.param), SamplingConfig(**FAST))


def _state(gen: AdGenerator, sampler: ControlNetInpaintSampler, prepared, prompts, negatives, seeds, **kw):
    te = gen.pipe.text_encoder
    pos, neg = encode_prompt_pair(gen.pipe.tokenizer, te, prompts, negatives,
                                  clip_skip=gen.sampling.diffusers_clip_skip, device=gen.device, dtype=te.dtype)
    s = gen.sampling
    settings = dict(height=SIZE, width=SIZE, num_inference_steps=s.num_inference_steps,
                    guidance_scale=s.guidance_scale, guidance_rescale=s.guidance_rescale, eta=s.eta,
                    controlnet_conditioning_scale=s.controlnet_conditioning_scale)
    settings.update(kw)
    return sampler.prepare([p.image for p in prepared], [p.mask for p in prepared], [p.control for p in prepared],
                           pos, neg, generator=[torch_generator(x) for x in seeds], **settings)


@pytest.mark.parametrize("guidance_rescale", [0.0, 0.7])
def test_sampler_reproduces_the_pipeline(generator, guidance_rescale):
    """RFFT samples as inference does, also with guidance rescale (the generator hooks it into diffusers'
    pipeline, the sampler applies it in its own loop)."""
    generator = AdGenerator(generator.pipe, SamplingConfig(**FAST, guidance_rescale=guidance_rescale), generator.info)
    prepared = [_prepared(0), _prepared(1, (40, 90, 200))]
    seeds = [1234, 99]
    jobs = [GenerationJob(p, pr, n, s) for p, pr, n, s in zip(prepared, PROMPTS, NEGATIVES, seeds)]
    expected = np.stack([r.raw for r in generator.generate(jobs)])  # (B, S, S, 3) in [0, 1], before paste-back

    sampler = ControlNetInpaintSampler(generator.pipe)
    state = _state(generator, sampler, prepared, PROMPTS, NEGATIVES, seeds)
    images = sampler.sample(state, generator=[torch_generator(s) for s in seeds])
    ours = images.permute(0, 2, 3, 1).cpu().numpy()
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1e-5
    # the pipe's own scheduler is left alone: the generator still gives the same images afterwards
    again = np.stack([r.raw for r in generator.generate(jobs)])
    assert np.array_equal(again, expected)


def test_graded_step_continues_the_no_grad_loop(generator):
    """Stopping at step t and taking step t with gradient gives the loop's own x_{t-1}; x0 is sane."""
    sampler = ControlNetInpaintSampler(generator.pipe)
    prepared = [_prepared(0)]
    state = _state(generator, sampler, prepared, PROMPTS[:1], NEGATIVES[:1], [7])
    t = state.num_steps - 2
    reference = sampler.denoise(state, stop=t + 1)
    graded = sampler.rollout(state, t)
    assert graded.prev_latents.requires_grad  # the ControlNet and UNet have trainable weights
    assert torch.allclose(graded.prev_latents.detach(), reference, atol=1e-5)
    assert graded.eps_uncond is not None and graded.pred_x0.shape == reference.shape
    # the guided prediction is CFG over the two halves
    g = state.guidance_scale
    assert torch.allclose(graded.noise_pred, graded.eps_uncond + g * (graded.eps_text - graded.eps_uncond))
    if sampler.unet_in_channels == 4:  # known region: exactly the product's latents in x0
        keep = state.mask == 0
        assert torch.equal(graded.pred_x0.detach().masked_select(keep),
                           state.image_latents.expand_as(graded.pred_x0).masked_select(keep))


def test_extra_embeds_and_teacher_controlnet(generator):
    """Extra prompt sets are evaluated in the same call; another ControlNet can be swapped in per call."""
    import copy

    sampler = ControlNetInpaintSampler(generator.pipe)
    state = _state(generator, sampler, [_prepared(0)], PROMPTS[:1], NEGATIVES[:1], [3])
    with torch.no_grad():
        graded = sampler.rollout(state, 1, extra_embeds=[state.negative_prompt_embeds])
        assert torch.allclose(graded.eps_extra[0], graded.eps_uncond, atol=1e-5)
        teacher = copy.deepcopy(sampler.controlnet)
        t, text = state.timesteps[1], [state.prompt_embeds]
        same = sampler.predict_noise(state, t, graded.latents, text, controlnet=teacher)[0]
        assert torch.allclose(same, graded.eps_text, atol=1e-5)
        for p in teacher.parameters():
            p.add_(0.05)
        other = sampler.predict_noise(state, t, graded.latents, text, controlnet=teacher)[0]
        assert not torch.allclose(other, graded.eps_text, atol=1e-3)


def test_prepare_rejects_mismatched_batches(generator):
    sampler = ControlNetInpaintSampler(generator.pipe)
    p = _prepared(0)
    pos = torch.zeros(2, 77, 32)
    with pytest.raises(ValueError, match="batch sizes differ"):
        sampler.prepare([p.image], [p.mask], [p.control], pos, pos, height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match=r"guidance_rescale=1\.5 must be in \[0, 1\]"):
        sampler.prepare([p.image], [p.mask], [p.control], pos[:1], pos[:1], height=SIZE, width=SIZE,
                        guidance_rescale=1.5)
    with pytest.raises(ValueError, match=r"index=9 must be in \[0, 4\)"):
        state = _state(generator, sampler, [p], PROMPTS[:1], NEGATIVES[:1], [1])
        sampler.rollout(state, 9)
