"""sampling.guidance_rescale (Lin et al. 2023, §3.4) through the generator, the CLI and RFFT; the sampler's
parity with the generator under it is in test_rfft_sampler.py."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from conftest import make_product_rgba
from reliable_ad.core.config import to_dict
from reliable_ad.data.product import prepare_product, product_from_arrays
from reliable_ad.generation.config import GenerateConfig, ModelConfig, SamplingConfig, upgrade_stored_config
from reliable_ad.generation.generator import AdGenerator, GenerationJob
import rfft_helpers
from rfft_helpers import config, judge

products = rfft_helpers.products  # a fixture

SIZE = 64
FAST = dict(size=SIZE, num_inference_steps=4, batch_size=2)


@pytest.fixture(scope="module")
def generator(model_home):
    return AdGenerator.from_config(ModelConfig(model="tiny", safety_checker=False), SamplingConfig(**FAST))


def _jobs() -> list[GenerationJob]:
    out = []
    for i, color in enumerate([(200, 40, 40), (40, 90, 200)]):
        rgba = make_product_rgba(96, color, seed=i)
        prepared = prepare_product(product_from_arrays(rgba[..., :3], rgba[..., 3]), size=SIZE, image_scale=0.75)
        out.append(GenerationJob(prepared, "a bottle on a wooden table", "blurry, lowres", 1234 + i))
    return out


def _with_rescale(generator: AdGenerator, rescale: float) -> AdGenerator:
    return AdGenerator(generator.pipe, SamplingConfig(**FAST, guidance_rescale=rescale), generator.info)


def _raw(generator: AdGenerator, jobs) -> np.ndarray:
    return np.stack([r.raw for r in generator.generate(jobs)])


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_guidance_rescale_is_validated(bad):
    with pytest.raises(ValueError, match=rf"sampling\.guidance_rescale={bad} must be in \[0, 1\].*0\.7"):
        SamplingConfig(guidance_rescale=bad)
    assert SamplingConfig().guidance_rescale == 0.0  # off by default: the paper's sampling


def test_rescale_zero_is_the_plain_pipeline_and_leaves_no_trace(generator):
    """0 gives the pipeline's own images bit for bit, also after a rescaled call on the same pipeline."""
    jobs = _jobs()
    plain = generator._call_pipe(jobs).images  # diffusers' pipeline, called as before guidance_rescale existed
    assert np.array_equal(_raw(generator, jobs), plain)
    rescaled = _raw(_with_rescale(generator, 0.7), jobs)
    assert np.abs(rescaled - plain).max() > 1e-3  # 0.7 changes the image
    scheduler = generator.pipe.scheduler
    assert "step" not in vars(scheduler) and not generator.pipe.unet._forward_hooks
    assert np.array_equal(_raw(generator, jobs), plain)


def test_rescale_lowers_the_std_of_the_guided_prediction(generator):
    """The scheduler gets diffusers' rescale of the guided prediction: at the first step (same x_T) it is
    phi * cfg * std(text) / std(cfg) + (1 - phi) * cfg, hand-computed, and its std is lower than cfg's."""
    jobs, phi = _jobs(), 0.7
    gens = {r: _with_rescale(generator, r) for r in (0.0, phi)}  # each sets a fresh scheduler on the pipe
    scheduler, pipe = generator.pipe.scheduler, generator.pipe
    seen: dict[float, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    step = scheduler.step

    @functools.wraps(step)
    def spy(model_output, *args, **kwargs):  # an instance step of our own: the rescale must run before it
        seen[current].append((model_output.clone(), unet_out[-1].chunk(2)[1].clone()))
        return step(model_output, *args, **kwargs)

    unet_out: list[torch.Tensor] = []
    hook = pipe.unet.register_forward_hook(lambda m, a, out: unet_out.append(out[0]))
    scheduler.step = spy
    try:
        for current in (0.0, phi):
            seen[current] = []
            _raw(gens[current], jobs)
    finally:
        hook.remove()
        del scheduler.step
    (cfg, text), (rescaled, text_again) = seen[0.0][0], seen[phi][0]
    assert torch.equal(text, text_again)
    dims = (1, 2, 3)
    expected = phi * cfg * text.std(dim=dims, keepdim=True) / cfg.std(dim=dims, keepdim=True) + (1 - phi) * cfg
    assert torch.allclose(rescaled, expected, atol=1e-6)
    assert (rescaled.std(dim=dims) < cfg.std(dim=dims)).all()
    assert len(seen[phi]) == FAST["num_inference_steps"]


def test_cli_flag_reaches_generate_and_run_configs():
    from reliable_ad.cli.common import build_config
    from reliable_ad.cli.generate import GENERATION_FLAGS
    from reliable_ad.cli.main import build_parser
    from reliable_ad.cli.run import RUN_FLAGS
    from reliable_ad.recurrent.config import RunConfig

    parser = build_parser()
    flag = ["--guidance-rescale", "0.7"]
    args = parser.parse_args(["generate", "x.png", "--out", "o", *flag])
    assert build_config(GenerateConfig, args, GENERATION_FLAGS).sampling.guidance_rescale == 0.7
    args = parser.parse_args(["run", "x.png", "--out", "o", *flag])
    assert build_config(RunConfig, args, RUN_FLAGS).generation.sampling.guidance_rescale == 0.7
    args = parser.parse_args(["generate", "x.png", "--out", "o"])
    assert build_config(GenerateConfig, args, GENERATION_FLAGS).sampling.guidance_rescale == 0.0
    with pytest.raises(ValueError, match=r"guidance_rescale=2\.0 must be in \[0, 1\]"):
        build_config(GenerateConfig, parser.parse_args(["generate", "x.png", "--out", "o", "--guidance-rescale", "2"]),
                     GENERATION_FLAGS)


def test_generate_run_folders_from_before_resume():
    stored = to_dict(GenerateConfig())
    del stored["sampling"]["guidance_rescale"]
    assert upgrade_stored_config(stored)["sampling"]["guidance_rescale"] == 0.0


def test_rfft_trains_with_the_rescale_and_old_run_folders_resume(products, model_home, tmp_path):
    from reliable_ad.rfft.config import LossConfig
    from reliable_ad.rfft.trainer import RFFTTrainer

    sampling = SamplingConfig(size=SIZE, num_inference_steps=4, batch_size=4, guidance_rescale=0.7)
    cfg = config(products, max_steps=1, sampling=sampling, loss=LossConfig(regularizer="kl"))
    trainer = RFFTTrainer.from_config(cfg, tmp_path / "run", judge=judge)
    items, seeds, t_index = trainer._micro_batch(0)
    state = trainer.prepare_items(items, seeds)
    assert state.guidance_rescale == 0.7
    graded = trainer.sampler.rollout(state, t_index)
    plain = graded.eps_uncond + state.guidance_scale * (graded.eps_text - graded.eps_uncond)
    assert not torch.allclose(graded.noise_pred, plain, atol=1e-4)  # the graded step is rescaled too
    metrics = trainer.training_step(0)  # KL against the teacher's equally rescaled prediction
    assert np.isfinite(metrics["kl"]) and np.isfinite(metrics["loss"])
    # a run folder written before guidance_rescale existed resumes at 0 and refuses 0.7, naming it
    stored = to_dict(config(products, max_steps=1, loss=LossConfig(regularizer="kl")))
    del stored["sampling"]["guidance_rescale"]
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "config.json").write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(ValueError, match=r"sampling\.guidance_rescale differ"):
        trainer._resume_or_start()
    trainer.cfg.sampling.guidance_rescale = 0.0
    assert trainer._resume_or_start() is None
