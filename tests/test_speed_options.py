"""Speed options (generation/speed.py, `--overlap-inspection`): each keeps what is made.

On the tiny generator in fp32 on the CPU: the ControlNet embedding reuse is bit-identical; SDPA vs
diffusers' plain attention and channels-last agree within 1e-4 on the raw [0, 1] output (float
reassociation only); torch.compile likewise (marked slow: compiling takes minutes on two cores).
Overlapped inspection gives the same history, records and record order as the sequential loop."""

from __future__ import annotations

import copy
import json
import threading
import time

import numpy as np
import pytest
import torch

from conftest import make_product_rgba
from reliable_ad.data.product import prepare_product, product_from_arrays
from reliable_ad.generation.config import GenerateConfig, ModelConfig, SamplingConfig, SpeedConfig
from reliable_ad.generation.generator import AdGenerator, GenerationJob
from reliable_ad.recurrent.loop import Attempt, LoopTimings, make_acceptor, recurrent_generation
from reliable_ad.rfnet.inspector import Verdict

SIZE = 64
SAMPLING = SamplingConfig(size=SIZE, num_inference_steps=2, batch_size=2)
pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOLERANCE = 1e-4  # on raw pixels in [0, 1]; fp32 differences from reordered sums are ~1e-6


@pytest.fixture(scope="module")
def base(tiny_checkpoint):
    """A pipeline no test changes: each test takes its own deep copy."""
    from reliable_ad.generation.models import load_pipeline

    return load_pipeline(ModelConfig(model="tiny"))


def _generator(base, speed: SpeedConfig | None = None) -> AdGenerator:
    pipe, info = base
    return AdGenerator(copy.deepcopy(pipe), SAMPLING, info, speed)


def _jobs(n: int = 2) -> list[GenerationJob]:
    colors = [(200, 40, 40), (40, 90, 200), (30, 160, 60)]
    out = []
    for i in range(n):
        rgba = make_product_rgba(96, colors[i % 3], seed=i)
        prepared = prepare_product(product_from_arrays(rgba[..., :3], rgba[..., 3]), size=SIZE, image_scale=0.75)
        out.append(GenerationJob(prepared, f"a bottle on a table {i}", "lowres", 500 + i))
    return out


@pytest.fixture(scope="module")
def reference(base):
    """Every speed option off: diffusers' computation as it is."""
    return _generator(base, SpeedConfig(reuse_control_embedding=False)).generate(_jobs())


def _max_diff(a, b) -> float:
    return max(float(np.abs(x.raw - y.raw).max()) for x, y in zip(a, b))


def test_control_embedding_reuse_is_bit_identical_and_computed_once_per_call(base, reference):
    gen = _generator(base, SpeedConfig(reuse_control_embedding=True))
    cn = gen.pipe.controlnet
    keys = set(cn.state_dict())
    out = gen.generate(_jobs())
    assert _max_diff(out, reference) == 0.0
    for a, b in zip(out, reference):
        assert np.array_equal(a.image, b.image)
    assert gen._control_cache.computed == 1  # one batch of 2 steps: once, not twice
    assert set(cn.state_dict()) == keys  # an instance forward: the weights' names are untouched
    # outside a generator call (RFFT, other users of the pipeline) it computes every time, with gradient
    x = torch.rand(1, 3, SIZE, SIZE, requires_grad=True)
    with torch.enable_grad():
        y = cn.controlnet_cond_embedding(x)
    assert y.requires_grad and gen._control_cache.computed == 1


@pytest.mark.parametrize("speed", [SpeedConfig(attention="default"), SpeedConfig(channels_last=True),
                                   SpeedConfig(attention="sdpa", channels_last=True)],
                         ids=["plain-attention", "channels-last", "sdpa+channels-last"])
def test_speed_option_keeps_the_images_within_float_tolerance(base, reference, speed):
    gen = _generator(base, speed)
    out = gen.generate(_jobs())
    diff = _max_diff(out, reference)
    assert diff <= TOLERANCE, diff
    if speed.channels_last:
        w = gen.pipe.unet.conv_in.weight
        assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def test_attention_option_sets_the_processors(base):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    pipe = _generator(base).pipe
    for name, cls in (("default", AttnProcessor), ("sdpa", AttnProcessor2_0)):  # plain, then back to SDPA
        AdGenerator(pipe, SAMPLING, base[1], SpeedConfig(attention=name))
        for module in (pipe.unet, pipe.controlnet, pipe.vae):
            procs = module.attn_processors
            assert procs and all(type(p) is cls for p in procs.values()), (name, module.__class__.__name__)


def test_diffusers_batches_cfg_and_the_vae_decode(base):
    """What the pipeline already does, checked: one UNet and one ControlNet call per step on the doubled
    (uncond + cond) batch, and one VAE decode for the whole batch."""
    gen = _generator(base)
    pipe = gen.pipe
    seen = {"unet": [], "controlnet": [], "decode": []}
    hooks = [getattr(pipe, name).register_forward_pre_hook(lambda m, args, kw, name=name: seen[name].append(args[0].shape[0]),
                                                            with_kwargs=True) for name in ("unet", "controlnet")]
    decode = pipe.vae.decode

    def counting_decode(z, *a, **kw):
        seen["decode"].append(z.shape[0])
        return decode(z, *a, **kw)

    pipe.vae.decode = counting_decode
    try:
        gen.generate(_jobs(2))
    finally:
        for h in hooks:
            h.remove()
        del pipe.vae.decode
    steps = SAMPLING.num_inference_steps
    assert seen["unet"] == [4] * steps and seen["controlnet"] == [4] * steps
    assert seen["decode"] == [2]


def test_speed_config_errors_name_the_value_and_choices():
    with pytest.raises(ValueError, match=r"speed.attention='flash'.*sdpa"):
        SpeedConfig(attention="flash")
    with pytest.raises(ValueError, match=r"speed.compile_mode='fast'.*reduce-overhead"):
        SpeedConfig(compile_mode="fast")


def test_speed_flags_reach_the_config():
    import argparse

    from reliable_ad.cli.common import build_config
    from reliable_ad.cli.generate import GENERATION_FLAGS, add_generation_args

    p = argparse.ArgumentParser()
    add_generation_args(p)
    args = p.parse_args(["--attention", "default", "--channels-last", "--compile", "--compile-mode",
                         "reduce-overhead", "--no-reuse-control-embedding", "--overlap-inspection"])
    cfg = build_config(GenerateConfig, args, GENERATION_FLAGS)
    assert cfg.speed == SpeedConfig(attention="default", channels_last=True, compile=True,
                                    compile_mode="reduce-overhead", reuse_control_embedding=False,
                                    overlap_inspection=True)
    assert build_config(GenerateConfig, p.parse_args([]), GENERATION_FLAGS).speed == SpeedConfig()


@pytest.mark.slow
def test_compile_matches_within_tolerance(base, reference):
    """torch.compile of the UNet and ControlNet (about 2 minutes to compile on two CPU cores)."""
    gen = _generator(base, SpeedConfig(compile=True))
    out = gen.generate(_jobs())
    assert hasattr(gen.pipe.unet, "_orig_mod") and hasattr(gen.pipe.controlnet, "_orig_mod")
    assert _max_diff(out, reference) <= TOLERANCE


# --- overlapped inspection --------------------------------------------------------------------------


def _fake_loop(overlap: bool, n_products: int = 7, batch_size: int = 2):
    """The loop with fakes: acceptance by a fixed rule on the seed; the judge is slow enough that batch
    i+1's generation starts while batch i is judged, and records when things happen."""
    events, results = [], []
    lock = threading.Lock()

    def log(*e):
        with lock:
            events.append(e)

    def generate(planned):
        log("generate", tuple(a.product_key for _, a in planned), "start")
        return [f"img-{a.product_key}-{a.attempt}" for _, a in planned]

    def judge(planned, images):
        log("judge", tuple(a.product_key for _, a in planned), "start")
        time.sleep(0.05)
        log("judge", tuple(a.product_key for _, a in planned), "end")
        return [Verdict("Available", 0, {}, 1.0) if (a.seed * 7 + a.attempt) % 3 == 0 else
                Verdict("Space Mismatch", 1, {}, 0.0) for _, a in planned]

    timings = LoopTimings()
    history = recurrent_generation(
        [f"p{i}" for i in range(n_products)], key=lambda t: t,
        plan=lambda t, k, h: Attempt(t, k, int(t[1:]) * 10 + k), generate=generate, judge=judge,
        accept=make_acceptor(), max_attempts=4, batch_size=batch_size,
        on_result=lambda t, a, img, v, ok: results.append((t, a.attempt, img, v.label, ok)),
        overlap=overlap, timings=timings)
    return history, results, events, timings


def test_overlapped_inspection_equals_the_sequential_loop():
    seq_history, seq_results, _, seq_t = _fake_loop(overlap=False)
    ovl_history, ovl_results, events, ovl_t = _fake_loop(overlap=True)
    assert ovl_history == seq_history and ovl_results == seq_results  # same outcomes, same order
    assert seq_t.overlapped_batches == 0 and ovl_t.overlapped_batches > 0
    assert ovl_t.batches == seq_t.batches and ovl_t.judge > 0 and ovl_t.wall > 0
    # some batch's generation started while the previous batch was still being judged
    overlapped = False
    for i, (kind, keys, what) in enumerate(events):
        if kind == "judge" and what == "start":
            end = events.index(("judge", keys, "end"))
            overlapped |= any(e[0] == "generate" for e in events[i + 1:end])
    assert overlapped


def test_run_job_with_overlapped_inspection_writes_the_same_records(base, product_files, tmp_path):
    """`run` on the tiny generator, judged by brightness: overlap on and off give the same manifest
    (seeds, images, verdicts, order) and summary; a finished run resumes with the option changed."""
    from reliable_ad.generation.inputs import read_product_inputs
    from reliable_ad.core.io import read_jsonl
    from reliable_ad.recurrent.config import RecurrentConfig, RunConfig
    from reliable_ad.recurrent.run import run_recurrent_job

    def judge(products, generated, captions):
        out = []
        for img in generated:
            p = float(np.clip((np.asarray(img, np.float32).mean() / 255 - 0.45) * 10, 0.01, 0.99))
            out.append(Verdict("Available" if p >= 0.5 else "Space Mismatch", 0 if p >= 0.5 else 1, {}, p))
        time.sleep(0.02)
        return out

    inputs, _ = read_product_inputs([str(p) for p in product_files])
    gen = AdGenerator(copy.deepcopy(base[0]), SamplingConfig(size=SIZE, num_inference_steps=1, batch_size=1),
                      base[1])
    volatile = ("seconds", "inspect_seconds", "created")
    manifests, summaries = {}, {}
    for overlap in (False, True):
        cfg = RunConfig(generation=GenerateConfig(model=ModelConfig(model="tiny"), sampling=gen.sampling,
                                                  speed=SpeedConfig(overlap_inspection=overlap)),
                        recurrent=RecurrentConfig(max_attempts=2))
        out = tmp_path / f"overlap-{overlap}"
        summaries[overlap] = run_recurrent_job(inputs, cfg, out, generator=gen, judge=judge, progress=False)
        manifests[overlap] = [{k: v for k, v in r.items() if k not in volatile}
                              for r in read_jsonl(out / "manifest.jsonl")]
        for r in read_jsonl(out / "manifest.jsonl"):
            assert r["seconds"] > 0 and r["inspect_seconds"] > 0
    assert manifests[True] == manifests[False] and len(manifests[True]) >= 3
    strip = lambda s: {k: v for k, v in s.items() if k not in ("seconds", "seconds_per_available_image")}  # noqa: E731
    assert strip(summaries[True]) == strip(summaries[False])
    loop = summaries[True]["seconds"]["loop"]
    assert loop["batches"] == len(manifests[True]) and loop["overlapped_batches"] > 0
    assert loop["generate"] > 0 and loop["judge"] > 0
    saved = json.loads((tmp_path / "overlap-True" / "summary.json").read_text())
    assert saved["seconds"]["loop"] == loop
    # speed options are not part of a run's identity: resuming with another one is allowed
    cfg.generation.speed = SpeedConfig(overlap_inspection=False, channels_last=True)
    again = run_recurrent_job(inputs, cfg, tmp_path / "overlap-True", generator=gen, judge=judge, progress=False)
    assert again["attempts_total"] == summaries[True]["attempts_total"]
