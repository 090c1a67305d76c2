"""The generator against diffusers itself, on tiny components: parity, seeds, batching, LoRA, safety."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_product_rgba
from reliable_ad.generation.config import ModelConfig, SamplingConfig
from reliable_ad.generation.generator import AdGenerator, GenerationJob
from reliable_ad.generation.models import load_pipeline
from reliable_ad.data.product import prepare_product, product_from_arrays

SIZE = 64
FAST = dict(size=SIZE, num_inference_steps=4, batch_size=4)


def _prepared(seed=0, color=(200, 40, 40)):
    rgba = make_product_rgba(96, color, seed=seed)
    return prepare_product(product_from_arrays(rgba[..., :3], rgba[..., 3]), size=SIZE, image_scale=0.75)


@pytest.fixture(scope="module")
def generator(tiny_checkpoint):
    return AdGenerator.from_config(ModelConfig(model="tiny"), SamplingConfig(**FAST))


@pytest.fixture(scope="module")
def generator9(model_home):
    return AdGenerator.from_config(ModelConfig(model="tiny-inpaint"), SamplingConfig(**FAST))


def _clip_skip_embeds(pipe, text: str, skip: int) -> torch.Tensor:
    """diffusers' clip-skip formula, written out: hidden state `skip` layers from the end, final norm."""
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    te = pipe.text_encoder
    hidden = te(ids, output_hidden_states=True).hidden_states[-(skip + 1)]
    return getattr(te, "text_model", te).final_layer_norm(hidden)


def _direct_call(gen: AdGenerator, job: GenerationJob) -> np.ndarray:
    """A plain diffusers call with the same components, settings and seed."""
    s = gen.sampling
    skip = s.diffusers_clip_skip
    if skip is None:
        text = dict(prompt=job.prompt, negative_prompt=job.negative_prompt)
    else:
        with torch.no_grad():
            text = dict(prompt_embeds=_clip_skip_embeds(gen.pipe, job.prompt, skip),
                        negative_prompt_embeds=_clip_skip_embeds(gen.pipe, job.negative_prompt, skip))
    out = gen.pipe(
        **text,
        image=Image.fromarray(job.prepared.image),
        mask_image=Image.fromarray(job.prepared.mask),
        control_image=Image.fromarray(job.prepared.control),
        height=SIZE,
        width=SIZE,
        num_inference_steps=s.num_inference_steps,
        guidance_scale=s.guidance_scale,
        eta=s.eta,
        controlnet_conditioning_scale=s.controlnet_conditioning_scale,
        generator=torch.Generator().manual_seed(job.seed),
        output_type="np",
    )
    return out.images[0]


@pytest.mark.parametrize("clip_skip", [1, 2])
@pytest.mark.parametrize("which", ["generator", "generator9"])
def test_parity_with_plain_diffusers_call(which, clip_skip, request):
    base = request.getfixturevalue(which)
    gen = AdGenerator(base.pipe, SamplingConfig(**FAST, clip_skip=clip_skip), base.info)
    job = GenerationJob(_prepared(), "a bottle on a wooden table", "blurry, lowres", seed=1234)
    ours = gen.generate([job])[0]
    direct = _direct_call(gen, job)
    assert np.abs(ours.raw - direct).max() <= 1e-5


def test_same_seed_same_image_different_seed_different(generator):
    p = _prepared()
    a = generator.generate([GenerationJob(p, "a bottle", "", 7)])[0]
    b = generator.generate([GenerationJob(p, "a bottle", "", 7)])[0]
    c = generator.generate([GenerationJob(p, "a bottle", "", 8)])[0]
    assert np.array_equal(a.image, b.image) and np.array_equal(a.raw, b.raw)
    assert np.abs(a.raw - c.raw).max() > 1e-3


def test_batch_equals_single_calls(generator):
    jobs = [GenerationJob(_prepared(i, c), f"a bottle {i}", "lowres", 100 + i)
            for i, c in enumerate([(200, 40, 40), (40, 90, 200), (30, 160, 60)])]
    batched = generator.generate(jobs, batch_size=3)
    single = [generator.generate([j], batch_size=1)[0] for j in jobs]
    for b, s in zip(batched, single):
        assert np.abs(b.raw - s.raw).max() <= 1e-4


def test_product_pixels_preserved_exactly(generator):
    p = _prepared()
    img = generator.generate([GenerationJob(p, "a bottle", "", 3)])[0].image
    inside = p.alpha == 255
    assert inside.sum() > 100
    assert np.array_equal(img[inside], p.image[inside])
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8


def test_control_image_and_clip_skip_matter(tiny_checkpoint):
    p = _prepared()
    job = GenerationJob(p, "a bottle", "", 5)
    g2 = AdGenerator.from_config(ModelConfig(model="tiny"), SamplingConfig(**FAST, clip_skip=2))
    g1 = AdGenerator(g2.pipe, SamplingConfig(**FAST, clip_skip=1), g2.info)
    assert np.abs(g2.generate([job])[0].raw - g1.generate([job])[0].raw).max() > 1e-4
    no_ctrl = GenerationJob(dataclasses.replace(p, control=np.zeros_like(p.control)), "a bottle", "", 5)
    assert np.abs(g2.generate([job])[0].raw - g2.generate([no_ctrl])[0].raw).max() > 1e-4


@pytest.mark.parametrize("name", ["ddim", "euler_a", "dpmpp_sde_karras", "dpmpp_2m_karras", "euler", "unipc"])
def test_schedulers_by_name(generator, name):
    gen = AdGenerator(generator.pipe, SamplingConfig(**{**FAST, "num_inference_steps": 3}, scheduler=name), generator.info)
    p = _prepared()
    a = gen.generate([GenerationJob(p, "a bottle", "", 11)])[0]
    b = gen.generate([GenerationJob(p, "a bottle", "", 11)])[0]
    assert np.isfinite(a.raw).all() and np.array_equal(a.image, b.image)
    AdGenerator(generator.pipe, SamplingConfig(**FAST), generator.info)  # restore DDIM for other tests


def test_weighted_prompt_changes_output_and_is_deterministic(generator):
    p = _prepared()
    plain = generator.generate([GenerationJob(p, "a bottle, snow", "", 9)])[0]
    heavy = generator.generate([GenerationJob(p, "a bottle, (snow:1.8)", "", 9)])[0]
    heavy2 = generator.generate([GenerationJob(p, "a bottle, (snow:1.8)", "", 9)])[0]
    assert np.array_equal(heavy.image, heavy2.image)
    assert np.abs(plain.raw - heavy.raw).max() > 1e-5


def test_sdpa_attention(generator):
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs = generator.pipe.unet.attn_processors
    assert procs and all(isinstance(p, AttnProcessor2_0) for p in procs.values())


def _make_lora(pipe, folder):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    cfg = LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"])
    pipe.unet.add_adapter(cfg, adapter_name="made")
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(pipe.unet, adapter_name="made"))
    pipe.unet.delete_adapters("made")


def test_lora_load_fuse_changes_output_and_round_trips(tiny_checkpoint, tmp_path):
    job = GenerationJob(_prepared(), "a bottle", "", 21)
    plain_gen = AdGenerator.from_config(ModelConfig(model="tiny"), SamplingConfig(**FAST))
    plain = plain_gen.generate([job])[0]
    _make_lora(plain_gen.pipe, tmp_path / "lora")
    assert np.array_equal(plain_gen.generate([job])[0].image, plain.image)  # adapter removed again
    lora_file = tmp_path / "lora" / "pytorch_lora_weights.safetensors"
    assert lora_file.is_file()
    by_folder = AdGenerator.from_config(ModelConfig(model="tiny", lora=str(tmp_path / "lora"), lora_scale=0.8), SamplingConfig(**FAST))
    by_file = AdGenerator.from_config(ModelConfig(model="tiny", lora=str(lora_file), lora_scale=0.8), SamplingConfig(**FAST))
    half = AdGenerator.from_config(ModelConfig(model="tiny", lora=str(lora_file), lora_scale=0.4), SamplingConfig(**FAST))
    a, b, c = (g.generate([job])[0] for g in (by_folder, by_file, half))
    assert np.abs(a.raw - plain.raw).max() > 1e-4  # the LoRA changes the output
    assert np.abs(a.raw - b.raw).max() <= 1e-6  # folder and single file load the same weights
    assert np.abs(a.raw - c.raw).max() > 1e-5  # the scale is applied
    assert by_folder.info["hashes"]["lora"][0].startswith("sha256:")
    # fused weights equal the unfused adapter at the same scale
    unfused = AdGenerator.from_config(ModelConfig(model="tiny"), SamplingConfig(**FAST))
    unfused.pipe.load_lora_weights(str(tmp_path / "lora"), adapter_name="x")
    unfused.pipe.set_adapters(["x"], adapter_weights=[0.8])
    assert np.abs(unfused.generate([job])[0].raw - a.raw).max() <= 1e-4


def test_model_source_errors_name_the_value(tmp_path):
    from reliable_ad.generation.models import resolve_model, source_form

    with pytest.raises(ValueError, match=r"unknown model 'not-a-model'.*Registered model names: tiny"):
        resolve_model(ModelConfig(model="not-a-model"))
    with pytest.raises(ValueError, match="controlnet 'not-a-model'"):
        source_form("not-a-model", "controlnet")
    bad = tmp_path / "weights.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match=r"weights.txt' is a file, but .*\.safetensors"):
        source_form(str(bad), "model")
    assert source_form("stable-diffusion-v1-5/stable-diffusion-v1-5", "model") == "hub"
    with pytest.raises(ValueError, match="ControlNet must be given"):
        load_pipeline(ModelConfig(model=str(tmp_path)))


def test_safety_checker_flags_are_recorded(generator):
    """A tiny real safety checker tuned to flag everything: the flag reaches the result."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(cfg).eval()
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every image scores above every threshold
    pipe = generator.pipe
    old = (pipe.safety_checker, pipe.feature_extractor)
    pipe.safety_checker = checker
    pipe.feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    try:
        res = generator.generate([GenerationJob(_prepared(), "a bottle", "", 1)])[0]
    finally:
        pipe.safety_checker, pipe.feature_extractor = old
    assert res.nsfw is True
    assert generator.generate([GenerationJob(_prepared(), "a bottle", "", 1)])[0].nsfw is None
