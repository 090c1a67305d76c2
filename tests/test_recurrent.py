"""Recurrent Generation: the loop with fakes, retry policies, and the run job on the tiny generator."""

from __future__ import annotations

import functools

import json
from dataclasses import dataclass, replace

import numpy as np
import pytest

from reliable_ad.recurrent.config import RecurrentConfig, RunConfig
from reliable_ad.recurrent.loop import Attempt, Outcome, make_acceptor, recurrent_generation
from reliable_ad.recurrent.policies import plan_attempt
from reliable_ad.core.labels import CLASS_NAMES
from reliable_ad.rfnet.config import JudgeConfig


@dataclass
class FakeVerdict:
    label: str
    label_index: int
    probs: dict
    p_available: float

    @classmethod
    def of(cls, index: int, p: float | None = None):
        p_av = p if p is not None else (0.9 if index == 0 else 0.1)
        probs = {n: (p_av if i == 0 else (1 - p_av) / 4) for i, n in enumerate(CLASS_NAMES)}
        return cls(CLASS_NAMES[index], index, probs, p_av)


def _loop(tasks, accept_at: dict, *, k=5, batch_size=4, history=None, log=None, defect=1):
    """Fake generator and judge: product t is accepted at attempt accept_at[t] (1-based), never if absent."""
    finished: set = set()

    def generate(planned):
        if log is not None:
            log.append((len(planned), len(set(tasks) - finished)))
        return [f"img-{a.product_key}-{a.attempt}" for _, a in planned]

    def judge(planned, images):
        out = []
        for t, a in planned:
            ok = accept_at.get(t) == a.attempt + 1
            if ok or a.attempt + 1 == k:
                finished.add(t)
            out.append(FakeVerdict.of(0) if ok else FakeVerdict.of(defect, p=0.1 + 0.01 * a.attempt))
        return out

    return recurrent_generation(
        tasks, key=lambda t: t, plan=lambda t, n, h: Attempt(t, n, 1000 + n), generate=generate, judge=judge,
        accept=make_acceptor(), max_attempts=k, batch_size=batch_size, history=history)


def test_judge_that_accepts_at_attempt_three_gives_three_attempts():
    h = _loop(["a"], {"a": 3})
    assert [o.accepted for o in h["a"]] == [False, False, True]
    assert [o.attempt.attempt for o in h["a"]] == [0, 1, 2]


def test_judge_that_never_accepts_uses_k_attempts():
    h = _loop(["a"], {}, k=4)
    assert len(h["a"]) == 4 and not any(o.accepted for o in h["a"])


def test_rolling_queue_keeps_batches_full():
    log: list[int] = []
    tasks = [f"p{i}" for i in range(6)]
    h = _loop(tasks, {"p0": 1, "p1": 4, "p2": 2, "p3": 5, "p4": 3}, k=5, batch_size=4, log=log)
    total = sum(len(v) for v in h.values())
    assert sum(n for n, _ in log) == total == 1 + 4 + 2 + 5 + 3 + 5
    # every batch is full while at least batch_size products are unfinished
    assert all(n == min(4, unfinished) for n, unfinished in log)
    assert [n for n, _ in log][:3] == [4, 4, 4]


def test_resume_from_partial_history_equals_uninterrupted():
    tasks = ["a", "b", "c"]
    accept = {"a": 2, "b": 4}
    full = _loop(tasks, accept, k=5, batch_size=2)
    partial = {t: v[:1] for t, v in full.items()}  # as if stopped after each product's first attempt
    resumed = _loop(tasks, accept, k=5, batch_size=2, history=partial)
    assert resumed == full


def test_threshold_acceptance():
    accept = make_acceptor("threshold", 0.3)
    assert accept(FakeVerdict.of(2, p=0.35)) and not accept(FakeVerdict.of(0, p=0.2))
    with pytest.raises(ValueError, match="acceptance"):
        make_acceptor("vote")


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="max_attempts=0"):
        RecurrentConfig(max_attempts=0)
    with pytest.raises(ValueError, match="retry_policy='smart'"):
        RecurrentConfig(retry_policy="smart")


def _outcome(k, label, variation=None):
    return Outcome(Attempt("p", k, 1, variation or {}), label, 0.1, False)


def test_defect_aware_policy_changes_what_the_defect_names():
    cfg = RecurrentConfig(retry_policy="defect_aware", scale_steps=(0.5, 2.0))
    slots = {"wall_color": ("beige", "cream", "silver")}
    kw = dict(run_seed=0, config=cfg, base_scale=0.78, slots=slots, previous_slot_values={"wall_color": "beige"})
    a1 = plan_attempt("p", 1, [_outcome(0, "Size Mismatch")], **kw)
    assert a1.variation == {"image_scale": 0.39}
    a2 = plan_attempt("p", 2, [_outcome(0, "Size Mismatch"), _outcome(1, "Size Mismatch", a1.variation)], **kw)
    assert a2.variation["image_scale"] == 0.95  # 0.78 * 2.0, clipped
    a3 = plan_attempt("p", 3, [_outcome(2, "Indistinctiveness", a2.variation)], **kw)
    assert a3.variation == {"image_scale": 0.95, "slot_values": {"wall_color": "cream"}}
    a4 = plan_attempt("p", 4, [_outcome(3, "Space Mismatch", a3.variation)], **kw)
    assert a4.variation == a3.variation and a4.seed != a3.seed
    plain = plan_attempt("p", 1, [_outcome(0, "Size Mismatch")], **{**kw, "config": RecurrentConfig()})
    assert plain.variation == {}
    alt = plan_attempt("p", 1, [_outcome(0, "Indistinctiveness")], **{**kw, "slots": {},
                       "config": RecurrentConfig(retry_policy="defect_aware", alternate_presets=("soft-outdoor",))})
    assert alt.variation == {"preset": "soft-outdoor"}


def test_run_config_is_validated_as_a_whole_before_the_job():
    from reliable_ad.generation.config import GenerateConfig
    from reliable_ad.recurrent.config import validate_run_config

    validate_run_config(RunConfig())
    with pytest.raises(ValueError, match=r"alternate_presets: unknown prompt preset 'nope'; built-in presets are"):
        validate_run_config(RunConfig(recurrent=RecurrentConfig(alternate_presets=("soft-outdoor", "nope"))))
    with pytest.raises(ValueError, match=r"unknown prompt preset 'nope'"):
        validate_run_config(RunConfig(generation=GenerateConfig(preset="nope")))
    with pytest.raises(ValueError, match=r"judge.batch_size=0 must be >= 1"):
        validate_run_config(RunConfig(judge=replace(JudgeConfig(), batch_size=0)))


def test_defect_aware_steps_background_slots_from_the_values_the_failing_attempt_used():
    from reliable_ad.generation.prompts import get_preset

    preset = get_preset("synthad")  # slots: wall_color, surface (background) and clutter (not)
    render = functools.partial(preset.render, caption="a small red lipstick")  # {caption}: the product's
    assert preset.background_slots == ("wall_color", "surface")
    background = {n: v for n, v in preset.slots.items() if n in preset.background_slots}
    cfg = RecurrentConfig(retry_policy="defect_aware")
    kw = dict(run_seed=0, config=cfg, base_scale=preset.image_scale, slots=background)
    # the failing attempt drew values other than the ones render(0) picks
    seed = next(s for s in range(1, 100) if render(s).slot_values["wall_color"]
                != render(0).slot_values["wall_color"])
    used = render(seed).slot_values
    a1 = plan_attempt("p", 1, [_outcome(0, "Indistinctiveness")], previous_slot_values=used, **kw)
    after = lambda name, value: preset.slots[name][(preset.slots[name].index(value) + 1) % len(preset.slots[name])]  # noqa: E731
    assert a1.variation["slot_values"] == {"wall_color": after("wall_color", used["wall_color"]),
                                           "surface": after("surface", used["surface"])}
    # the clutter slot is not the policy's to change: the next render draws it from the attempt's seed
    rendered = render(a1.seed, slot_values=a1.variation["slot_values"])
    assert rendered.slot_values["clutter"] == render(a1.seed).slot_values["clutter"]
    # the next step continues from what attempt 1 used, not from render(0)
    used1 = rendered.slot_values
    a2 = plan_attempt("p", 2, [_outcome(0, "Indistinctiveness"), _outcome(1, "Indistinctiveness", a1.variation)],
                      previous_slot_values=used1, **kw)
    assert a2.variation["slot_values"] == {"wall_color": after("wall_color", used1["wall_color"]),
                                           "surface": after("surface", used1["surface"])}
    # a preset without background slots changes no slot (and moves to an alternate preset if one is given)
    plain = plan_attempt("p", 1, [_outcome(0, "Indistinctiveness")], previous_slot_values=used,
                         **{**kw, "slots": {}})
    assert plain.variation == {}


# --- the run job on the tiny generator, judged by fakes -------------------------------------------


def _run_cfg(tmp_path, **recurrent):
    from reliable_ad.generation.config import GenerateConfig, ModelConfig, SamplingConfig

    gen = GenerateConfig(model=ModelConfig(model="tiny"), sampling=SamplingConfig(size=64, num_inference_steps=2, batch_size=2))
    return RunConfig(generation=gen, recurrent=RecurrentConfig(**recurrent))


class BrightnessJudge:
    """Analytic judge: Available when the generated image's mean brightness passes a per-product bar."""

    def __init__(self):
        self.calls = 0

    def __call__(self, products, generated, captions):
        self.calls += len(generated)
        out = []
        for img in generated:
            m = float(np.asarray(img, np.float32).mean() / 255)
            p = float(np.clip((m - 0.45) * 10, 0.01, 0.99))
            out.append(FakeVerdict.of(0 if p >= 0.5 else 3, p=p))
        return out


@pytest.fixture(scope="module")
def tiny_generator(tiny_checkpoint):
    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.generation.generator import AdGenerator

    return AdGenerator.from_config(ModelConfig(model="tiny"), SamplingConfig(size=64, num_inference_steps=2, batch_size=2))


def test_run_job_writes_every_attempt_summary_and_report(tiny_generator, product_files, tmp_path):
    from reliable_ad.generation.inputs import read_product_inputs
    from reliable_ad.recurrent.run import run_recurrent_job
    from reliable_ad.core.io import read_jsonl

    inputs, _ = read_product_inputs([str(p) for p in product_files])
    never = lambda p, g, c: [FakeVerdict.of(1, p=0.1 + 0.1 * i) for i in range(len(g))]  # noqa: E731
    out = tmp_path / "never"
    s = run_recurrent_job(inputs, _run_cfg(tmp_path, max_attempts=3), out, generator=tiny_generator, judge=never, progress=False)
    recs = read_jsonl(out / "manifest.jsonl")
    assert len(recs) == 9 and s["none_available"] == 3 and s["available"] == 0
    assert s["rejections_per_class"] == {"Space Mismatch": 9}
    assert len(list((out / "flagged").glob("*.png"))) == 3 and not (out / "accepted").exists()
    assert (out / "report.html").stat().st_size > 5000 and json.loads((out / "summary.json").read_text())["products"] == 3

    def at_two(p, g, c):
        return [FakeVerdict.of(0) for _ in g]

    out2 = tmp_path / "first"
    s2 = run_recurrent_job(inputs, _run_cfg(tmp_path), out2, generator=tiny_generator, judge=at_two, progress=False)
    assert s2["available_rate_within_k"]["1"] == 1.0 and s2["mean_attempts_per_available"] == 1.0
    assert len(list((out2 / "accepted").glob("*.png"))) == 3
    rec = read_jsonl(out2 / "manifest.jsonl")[0]
    assert rec["verdict"]["label"] == "Available" and rec["accepted"] is True and rec["seconds"] > 0


def test_run_job_resume_equals_uninterrupted(tiny_generator, product_files, tmp_path):
    from reliable_ad.generation.inputs import read_product_inputs
    from reliable_ad.recurrent.run import run_recurrent_job
    from reliable_ad.core.io import read_jsonl

    inputs, _ = read_product_inputs([str(p) for p in product_files])
    cfg = _run_cfg(tmp_path, max_attempts=4)
    full = run_recurrent_job(inputs, cfg, tmp_path / "full", generator=tiny_generator, judge=BrightnessJudge(), progress=False)

    class Crash(BrightnessJudge):
        def __call__(self, products, generated, captions):
            if self.calls >= 3:
                raise KeyboardInterrupt
            return super().__call__(products, generated, captions)

    with pytest.raises(KeyboardInterrupt):
        run_recurrent_job(inputs, cfg, tmp_path / "cut", generator=tiny_generator, judge=Crash(), progress=False)
    resumed = run_recurrent_job(inputs, cfg, tmp_path / "cut", generator=tiny_generator, judge=BrightnessJudge(), progress=False)
    strip = lambda s: {k: v for k, v in s.items() if k not in ("seconds", "seconds_per_available_image")}  # noqa: E731
    assert strip(resumed) == strip(full)
    key = lambda r: (r["product_hash"], r["attempt"])  # noqa: E731
    a = sorted(read_jsonl(tmp_path / "full" / "manifest.jsonl"), key=key)
    b = sorted(read_jsonl(tmp_path / "cut" / "manifest.jsonl"), key=key)
    assert [(key(r), r["seed"], r["verdict"]["label"]) for r in a] == [(key(r), r["seed"], r["verdict"]["label"]) for r in b]


def test_real_model_without_rfnet_is_refused_before_generation(tmp_path):
    from reliable_ad.generation.config import GenerateConfig, ModelConfig
    from reliable_ad.recurrent.run import resolve_rfnet

    with pytest.raises(ValueError, match="needs a trained RFNet"):
        resolve_rfnet(RunConfig(generation=GenerateConfig(model=ModelConfig(model="sd15"))))
    assert resolve_rfnet(RunConfig()) == "tiny"
    with pytest.raises(ValueError, match="neither an RFNet folder"):
        resolve_rfnet(RunConfig(judge=JudgeConfig(rfnet="no-such-reviewer")))
