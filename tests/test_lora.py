"""LoRAs: kohya/A1111 and diffusers/peft files, UNet and text-encoder parts, fused at their scales.

The files are made offline by `lora_files` from one set of random weights, written in both formats;
equal weights must give equal fused models and equal images, and the fused weights must equal
W + scale * up @ down computed here by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import lora_files as lf
from conftest import make_product_rgba
from reliable_ad.data.product import prepare_product, product_from_arrays
from reliable_ad.generation.config import LoraSpec, ModelConfig, SamplingConfig
from reliable_ad.generation.generator import AdGenerator, GenerationJob
from reliable_ad.generation.models import load_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64
FAST = dict(size=SIZE, num_inference_steps=2, batch_size=1)


@pytest.fixture(scope="module")
def loras(tiny_checkpoint, tmp_path_factory):
    base, _ = tiny_checkpoint
    root = tmp_path_factory.mktemp("loras")
    a, b = lf.make_lora(base, seed=0), lf.make_lora(base, seed=1, rank=2)
    return dict(
        a=a,
        b=b,
        a_peft=lf.write_diffusers(a, root / "a_peft" / "pytorch_lora_weights.safetensors"),
        a_kohya=lf.write_kohya(a, root / "a_kohya.safetensors"),
        a_kohya_alpha=lf.write_kohya(a, root / "a_kohya_alpha2.safetensors", alpha=2.0),
        b_kohya=lf.write_kohya(b, root / "b_kohya.safetensors"),
        b_peft=lf.write_diffusers(b, root / "b_peft.safetensors"),
        root=root,
    )


def _load(*loras: str | LoraSpec):
    return load_pipeline(ModelConfig(model="tiny", device="cpu", lora=list(loras) or None))


@pytest.fixture(scope="module")
def plain(tiny_checkpoint):
    return _load()[0]


def _weight(model: torch.nn.Module, module: str) -> torch.Tensor:
    """The weight of ``module`` (a name as in the LoRA files) in a loaded model."""
    sd = model.state_dict()
    for name in (module, module.removeprefix("text_model.")):  # transformers >= 5 has no text_model level
        if f"{name}.weight" in sd:
            return sd[f"{name}.weight"]
    raise KeyError(module)


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()  # no adapter layers left behind
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def _job(seed: int = 3) -> GenerationJob:
    rgba = make_product_rgba(96, (200, 40, 40), seed=0)
    prepared = prepare_product(product_from_arrays(rgba[..., :3], rgba[..., 3]), size=SIZE, image_scale=0.75)
    return GenerationJob(prepared, "a red bottle on a marble table", "blurry", seed)


def _expected(plain, lora_scales: list[tuple[lf.LoraWeights, float]], part: str, layer: str) -> torch.Tensor:
    w = _weight(getattr(plain, part), layer).clone()
    for weights, scale in lora_scales:
        w += scale * weights.delta(f"{part}.{layer}")
    return w


def test_files_have_the_two_formats(loras):
    from safetensors.torch import load_file

    kohya = load_file(str(loras["a_kohya"]))
    peft = load_file(str(loras["a_peft"]))
    assert f"{lf.kohya_key('unet.' + lf.UNET_LAYER)}.lora_down.weight" in kohya
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha" in kohya
    assert f"unet.{lf.UNET_LAYER}.lora_A.weight" in peft and f"text_encoder.{lf.TEXT_LAYER}.lora_B.weight" in peft
    assert len(kohya) == 3 * len(loras["a"].down) and len(peft) == 2 * len(loras["a"].down)


@pytest.mark.parametrize("scale", [0.8, 1.3])
def test_kohya_and_peft_files_fuse_to_the_same_weights(loras, plain, scale):
    by_kohya, info = _load(LoraSpec(str(loras["a_kohya"]), scale))
    by_peft, _ = _load(f"{loras['a_peft']}:{scale}")
    by_folder, _ = _load(LoraSpec(str(loras["a_peft"].parent), scale))  # a diffusers folder
    by_alpha, _ = _load(LoraSpec(str(loras["a_kohya_alpha"]), scale))  # alpha != rank: same deltas
    for part in ("unet", "text_encoder"):
        for other in (by_peft, by_folder, by_alpha):
            assert _max_diff(getattr(by_kohya, part), getattr(other, part)) <= 1e-5, part
        assert _max_diff(getattr(by_kohya, part), getattr(plain, part)) > 1e-2, f"{part} unchanged"
    # by hand: W + s * up @ down, one UNet and one text-encoder layer
    for part, layer in (("unet", lf.UNET_LAYER), ("text_encoder", lf.TEXT_LAYER)):
        for pipe in (by_kohya, by_peft):
            got = _weight(getattr(pipe, part), layer)
            assert (got - _expected(plain, [(loras["a"], scale)], part, layer)).abs().max() <= 1e-5, part
    assert info["lora"] == [{"path": str(loras["a_kohya"]), "scale": scale, "hash": info["hashes"]["lora"][0]}]
    assert info["hashes"]["lora"][0].startswith("sha256:")


def test_equal_weights_give_equal_images(loras, plain):
    by_kohya, _ = _load(str(loras["a_kohya"]))
    by_peft, _ = _load(str(loras["a_peft"]))
    a, b, p = (AdGenerator(pipe, SamplingConfig(**FAST)).generate([_job()])[0] for pipe in (by_kohya, by_peft, plain))
    assert np.abs(a.raw - b.raw).max() <= 1e-5
    assert np.abs(a.raw - p.raw).max() > 1e-3  # the LoRA changes the image


def test_two_loras_add_up_and_scale_zero_is_no_lora(loras, plain):
    s1, s2 = 0.5, 1.2
    pipe, info = _load(f"{loras['a_kohya']}:{s1}", LoraSpec(str(loras["b_peft"]), s2))  # mixed formats
    for part, layer in (("unet", lf.UNET_LAYER), ("text_encoder", lf.TEXT_LAYER)):
        want = _expected(plain, [(loras["a"], s1), (loras["b"], s2)], part, layer)
        assert (_weight(getattr(pipe, part), layer) - want).abs().max() <= 1e-5, part
    same, _ = _load(LoraSpec(str(loras["b_kohya"]), s2), LoraSpec(str(loras["a_peft"]), s1))  # order, format
    for part in ("unet", "text_encoder"):
        assert _max_diff(getattr(pipe, part), getattr(same, part)) <= 1e-5
    assert [(e["path"], e["scale"]) for e in info["lora"]] == [(str(loras["a_kohya"]), s1), (str(loras["b_peft"]), s2)]
    zero, _ = _load(LoraSpec(str(loras["a_kohya"]), 0.0))
    for part in ("unet", "text_encoder"):
        assert _max_diff(getattr(zero, part), getattr(plain, part)) == 0.0


def test_config_forms(tmp_path):
    from reliable_ad.core.config import from_dict, to_dict
    from reliable_ad.generation.config import GenerateConfig

    old = from_dict(GenerateConfig, {"model": {"lora": "x.safetensors", "lora_scale": 1.0}})  # older configs
    assert old.model.lora == [LoraSpec("x.safetensors", 1.0)]
    new = from_dict(GenerateConfig, {"model": {"lora": [{"path": "a", "scale": 0.5}, {"path": "b"}, "c:1.5", "org/repo"]}})
    assert [(s.path, s.scale) for s in new.model.lora] == [("a", 0.5), ("b", 0.8), ("c", 1.5), ("org/repo", 0.8)]
    assert from_dict(GenerateConfig, to_dict(new)).model.lora == new.model.lora  # config.json round trip
    assert ModelConfig().lora is None and to_dict(ModelConfig())["lora"] is None
    with pytest.raises(ValueError, match=r"model.lora\[0\]: scale 3.0 for a is outside"):
        ModelConfig(lora=["a:3"])
    with pytest.raises(ValueError, match=r"model.lora\[0\].*'path'"):
        ModelConfig(lora=[{"file": "a"}])


def test_lora_flags_reach_the_config_and_the_manifest(loras, tmp_path):
    from reliable_ad.cli.common import build_config
    from reliable_ad.cli.generate import GENERATION_FLAGS
    from reliable_ad.cli.main import build_parser, main
    from reliable_ad.cli.run import RUN_FLAGS
    from reliable_ad.core.io import read_jsonl
    from reliable_ad.generation.config import GenerateConfig
    from reliable_ad.recurrent.config import RunConfig

    parser = build_parser()
    flags = ["--lora", "A.safetensors:0.5", "--lora", "B.safetensors"]
    model = build_config(GenerateConfig, parser.parse_args(["generate", "x.png", "--out", "o", *flags]), GENERATION_FLAGS).model
    assert model.lora == [LoraSpec("A.safetensors", 0.5), LoraSpec("B.safetensors", 0.8)]
    model = build_config(GenerateConfig, parser.parse_args(["generate", "x.png", "--out", "o", *flags, "--lora-scale", "1"]),
                         GENERATION_FLAGS).model
    assert model.lora == [LoraSpec("A.safetensors", 0.5), LoraSpec("B.safetensors", 1.0)]
    run = build_config(RunConfig, parser.parse_args(["run", "x.png", "--out", "o", *flags]), RUN_FLAGS)
    assert run.generation.model.lora == [LoraSpec("A.safetensors", 0.5), LoraSpec("B.safetensors", 0.8)]

    from PIL import Image

    product = tmp_path / "bottle.png"
    Image.fromarray(make_product_rgba(96), "RGBA").save(product)
    a, b = str(loras["a_kohya"]), str(loras["b_peft"])
    rc = main(["generate", str(product), "--out", str(tmp_path / "run"), "--model", "tiny", "--size", "64", "--steps", "2",
               "--no-progress", "--lora", f"{a}:0.5", "--lora", b])
    assert rc == 0
    (record,) = read_jsonl(tmp_path / "run" / "manifest.jsonl")
    listed = record["model"]["lora"]
    assert [(e["path"], e["scale"]) for e in listed] == [(a, 0.5), (b, 0.8)]
    assert all(e["hash"].startswith("sha256:") for e in listed)
    assert record["model"]["hashes"]["lora"] == [e["hash"] for e in listed]


def test_bad_files_name_the_file_and_the_fix(loras, tmp_path):
    not_lora = tmp_path / "not_a_lora.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(not_lora))
    with pytest.raises(ValueError, match=r"not_a_lora.safetensors.*kohya/A1111.*diffusers/peft"):
        _load(str(not_lora))
    other_names = tmp_path / "other_names.safetensors"  # LoRA keys, but for layers this model does not have
    save_file({"lora_unet_no_such_block.lora_down.weight": torch.zeros(2, 8),
               "lora_unet_no_such_block.lora_up.weight": torch.zeros(8, 2),
               "lora_unet_no_such_block.alpha": torch.tensor(2.0)}, str(other_names))
    with pytest.raises(ValueError, match=r"other_names.safetensors.*not found in the base model.*base model's architecture"):
        _load(str(other_names))
    # a LoRA for another model: the right names, the wrong shapes (e.g. an SDXL LoRA on SD1.5)
    wrong = lf.LoraWeights({k: torch.zeros(v.shape[0], v.shape[1] * 2, *v.shape[2:]) for k, v in loras["a"].down.items()},
                           loras["a"].up, loras["a"].rank)
    wrong_file = lf.write_kohya(wrong, tmp_path / "other_model.safetensors")
    with pytest.raises(ValueError, match=r"other_model.safetensors.*layer\(s\) have shapes other than the model's.*base model's architecture"):
        _load(str(wrong_file))
