"""RFFT's loss terms: hand-computed values on fixed tensors, and L_CC's gradient on real tiny models."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import make_product_rgba
from reliable_ad.generation.config import ModelConfig
from reliable_ad.generation.models import load_pipeline
from reliable_ad.data.product import prepare_product, product_from_arrays
from reliable_ad.generation.seeds import torch_generator
from reliable_ad.generation.weighting import encode_prompt_pair
from reliable_ad.rfft.losses import (
    WeightedReward,
    available_log_prob,
    consistent_condition_loss,
    denoising_loss,
    feedback_loss,
    guidance_direction,
    kl_penalty,
    reward_terms,
    total_loss,
)
from reliable_ad.rfft.sampler import ControlNetInpaintSampler


def test_feedback_loss_is_mean_negative_log_p_available():
    # p(Available) = 0.5 and 0.25 in column 0 of a 5-class output
    probs = torch.tensor([[0.5, 0.2, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.125, 0.125]])
    log_p = available_log_prob(probs.log())
    assert torch.allclose(log_p, torch.tensor([math.log(0.5), math.log(0.25)]))
    assert feedback_loss(log_p).item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    with pytest.raises(ValueError, match="expected \\(B,\\)"):
        feedback_loss(probs.log())
    with pytest.raises(ValueError, match="column 7"):
        available_log_prob(probs.log(), index=7)


def test_consistent_condition_loss_hand_computed():
    text_s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    uncond_s = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # d_s = [[1, 1], [2, 3]]
    text_t = torch.tensor([[2.0, 2.0], [2.0, 2.0]])
    uncond_t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # d_t = [[1, 2], [1, 2]]
    d_s, d_t = guidance_direction(text_s, uncond_s), guidance_direction(text_t, uncond_t)
    # differences [[0, -1], [1, 1]] -> squares 0, 1, 1, 1 -> mean 0.75
    assert consistent_condition_loss(d_s, d_t).item() == pytest.approx(0.75)
    assert consistent_condition_loss(d_s, d_s.clone()).item() == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        consistent_condition_loss(d_s, d_t[:1])


def test_kl_penalty_denoising_rewards_and_total():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 0.0])
    assert kl_penalty(a, b).item() == pytest.approx((0 + 4 + 9) / 3)
    assert denoising_loss(a, b).item() == pytest.approx(13 / 3)
    images = torch.full((2, 3, 4, 4), 0.25)
    images[1] = 0.75
    bright = WeightedReward("brightness", lambda x: x.mean(dim=(1, 2, 3)), weight=2.0)
    terms = reward_terms(images, [bright])
    assert terms["brightness"].item() == pytest.approx(0.5)
    loss = total_loss(torch.tensor(1.5), available_weight=1.0, regularizer=torch.tensor(0.5), beta=0.1,
                      rewards=terms, reward_weights={"brightness": 2.0})
    assert loss.item() == pytest.approx(1.5 + 0.1 * 0.5 - 2.0 * 0.5)
    with pytest.raises(ValueError, match="returned \\(\\)"):
        reward_terms(images, [WeightedReward("bad", lambda x: x.mean())])
    with pytest.raises(ValueError, match="no terms"):
        total_loss(None, available_weight=0.0)


@pytest.fixture(scope="module")
def tiny_sampler(model_home):
    pipe, _ = load_pipeline(ModelConfig(model="tiny", safety_checker=False))
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False)
    rgba = make_product_rgba(96)
    prepared = prepare_product(product_from_arrays(rgba[..., :3], rgba[..., 3]), size=64, image_scale=0.75)
    pos, neg = encode_prompt_pair(pipe.tokenizer, pipe.text_encoder, ["a bottle on a table"], [""])
    sampler = ControlNetInpaintSampler(pipe)
    state = sampler.prepare([prepared.image], [prepared.mask], [prepared.control], pos, neg, height=64, width=64,
                            num_inference_steps=4, guidance_scale=7.5, generator=[torch_generator(5)])
    return sampler, state


def _cc(sampler, state, teacher):
    latents = sampler.denoise(state, stop=2)
    graded = sampler.graded_step(state, 2, latents)
    with torch.no_grad():
        t_uncond, t_text = sampler.predict_noise(state, state.timesteps[2], latents,
                                                 [state.negative_prompt_embeds, state.prompt_embeds],
                                                 controlnet=teacher)
    return consistent_condition_loss(guidance_direction(graded.eps_text, graded.eps_uncond),
                                     guidance_direction(t_text, t_uncond))


def test_consistent_condition_is_zero_for_an_identical_student_and_reaches_only_the_student(tiny_sampler):
    sampler, state = tiny_sampler
    student = sampler.controlnet.requires_grad_(True)
    teacher = copy.deepcopy(student).requires_grad_(False)
    student.zero_grad(set_to_none=True)
    loss = _cc(sampler, state, teacher)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())  # the graph reaches every student weight
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in sampler.unet.parameters())

    # a student that moved gets a non-zero loss whose gradient is non-zero on the student only
    with torch.no_grad():
        for p in student.controlnet_down_blocks.parameters():
            p.mul_(1.5)
    student.zero_grad(set_to_none=True)
    loss = _cc(sampler, state, teacher)
    assert loss.item() > 0
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in student.parameters()) > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_rfnet_judge_gradient_reaches_the_image_and_maps_are_detached():
    from reliable_ad.modalities import build_depth, build_salience
    from reliable_ad.rfft.feedback import RFNetJudge, judge_decide
    from reliable_ad.rfnet import load_rfnet

    model, processor = load_rfnet("tiny")
    seen = []

    class Spy:
        def __init__(self, estimator):
            self.estimator = estimator

        def __call__(self, images):
            seen.append(images.requires_grad)
            return self.estimator(images)

    depth, salience = Spy(build_depth("tiny", size=64)), Spy(build_salience("fine-grained", size=64))
    judge = RFNetJudge(model, processor, depth, salience)
    generated = torch.rand(2, 3, 64, 64, requires_grad=True)
    product = torch.rand(2, 3, 64, 64)
    log_p = judge(generated, product, ["红色 bottle", "a mug"])
    assert log_p.shape == (2,) and bool((log_p < 0).all())
    log_p.sum().backward()
    assert float(generated.grad.abs().sum()) > 0
    assert seen == [False, False]  # depth and salience saw a detached image
    assert all(p.grad is None for p in model.parameters())  # RFNet is frozen
    decided = judge_decide(judge, generated, product, ["a", "b"])
    assert decided.dtype == torch.bool and decided.shape == (2,)
    # a plain callable judge: accept at p >= 0.5
    plain = judge_decide(lambda g, p, c: torch.log(torch.tensor([0.7, 0.2])), generated, product, ["a", "b"])
    assert plain.tolist() == [True, False]


def test_the_rfft_judge_uses_the_estimators_its_rfnet_was_trained_with():
    """`rfft train --rfnet X` judges with X's own depth and salience estimators (its modalities.json),
    the same ones `run` and `inspect` use, not the paper's defaults."""
    from reliable_ad.rfnet.config import JudgeConfig
    from reliable_ad.rfft.feedback import RFNetJudge
    from reliable_ad.rfnet.inspector import Inspector

    cfg = JudgeConfig(rfnet="synthad")
    judge = RFNetJudge.from_pretrained(cfg.rfnet, depth=cfg.depth, salience=cfg.salience)
    inspector = Inspector.from_pretrained("synthad")
    assert inspector.spec.depth == "synthad" and inspector.spec.salience == "synthad"
    assert type(judge.depth) is type(inspector.estimators["depth"])
    assert type(judge.salience) is type(inspector.estimators["salience"])
    generated = torch.rand(2, 3, 64, 64, requires_grad=True)
    product = torch.rand(2, 3, 64, 64)
    log_p = judge(generated, product, ["a lamp", "a vase"])
    verdicts = inspector.inspect([(p.permute(1, 2, 0).numpy() * 255).astype("uint8") for p in product],
                                 [(g.detach().permute(1, 2, 0).numpy() * 255).astype("uint8") for g in generated],
                                 ["a lamp", "a vase"])
    assert log_p.shape == (2,) and torch.isfinite(log_p).all()
    # the same judge: the differentiable one agrees with the Inspector (up to uint8 rounding)
    assert torch.allclose(log_p.exp(), torch.tensor([v.p_available for v in verdicts]), atol=0.05)
