"""Single-file checkpoints in the original SD (LDM) layout: `--model FILE.safetensors --base-config FOLDER`
and `--controlnet FILE.safetensors --controlnet-config FOLDER` load the same weights and make the same
images as the diffusers folders.

The files are written from the tiny model by `ldm_checkpoint` (inverse of diffusers' conversion, checked
against it); the `--base-config` folders hold configs only, so every weight must come from the file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ldm_checkpoint as ldm
from conftest import make_product_rgba
from reliable_ad.data.product import prepare_product, product_from_arrays
from reliable_ad.generation.config import ModelConfig, SamplingConfig
from reliable_ad.generation.generator import AdGenerator, GenerationJob
from reliable_ad.generation.models import load_controlnet, load_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64
FAST = dict(size=SIZE, num_inference_steps=2, batch_size=1)


@pytest.fixture(scope="module")
def files(tiny_checkpoint, tmp_path_factory):
    base, controlnet = tiny_checkpoint
    root = tmp_path_factory.mktemp("single-file")
    return dict(
        base=base,
        controlnet=controlnet,
        model=ldm.write_base_checkpoint(base, root / "tinymix_v7.safetensors"),
        controlnet_file=ldm.write_controlnet_checkpoint(controlnet, root / "control_tiny_canny.safetensors"),
        base_config=ldm.config_only_copy(base, root / "base-config"),
        controlnet_config=ldm.config_only_copy(controlnet, root / "controlnet-config"),
    )


@pytest.fixture(scope="module")
def pipes(files):
    from_folder, _ = load_pipeline(ModelConfig(model=str(files["base"]), controlnet=str(files["controlnet"]), device="cpu"))
    from_file, info = load_pipeline(ModelConfig(model=str(files["model"]), controlnet=str(files["controlnet"]),
                                                base_config=str(files["base_config"]), device="cpu"))
    return from_folder, from_file, info


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def test_written_file_has_the_original_layout(files):
    sd = load_file(str(files["model"]))
    prefixes = {k.split(".")[0] for k in sd}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    assert infer_diffusers_model_type(sd) == "v1"  # diffusers takes it for an SD1.x checkpoint
    cn = load_file(str(files["controlnet_file"]))
    assert {k.split(".")[0] for k in cn} == {"control_model"}
    assert infer_diffusers_model_type(cn) == "controlnet"
    assert not list(files["base_config"].rglob("*.safetensors"))  # the configs carry no weights


def test_roundtrip_check_catches_a_wrong_inversion(tiny_checkpoint):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_checkpoint[0] / "unet")
    good = ldm.unet_to_ldm(unet.state_dict(), unet.config.layers_per_block)
    ldm.check_roundtrip(good, unet=unet)
    swapped = dict(good)
    a, b = (f"{ldm.UNET_PREFIX}input_blocks.1.0.in_layers.2.weight", f"{ldm.UNET_PREFIX}input_blocks.1.0.out_layers.3.weight")
    assert good[a].shape == good[b].shape and not torch.equal(good[a], good[b])
    swapped[a], swapped[b] = good[b], good[a]  # conv1 <-> conv2: same shapes, wrong places
    with pytest.raises(AssertionError, match="differs"):
        ldm.check_roundtrip(swapped, unet=unet)


def test_single_file_base_loads_the_folders_weights(pipes):
    from_folder, from_file, info = pipes
    for name in ("unet", "vae", "text_encoder"):
        assert _max_diff(getattr(from_folder, name), getattr(from_file, name)) <= 1e-5, name
    assert info["base"].endswith(".safetensors") and info["hashes"]["base"].startswith("sha256:")
    assert from_file.unet.config.in_channels == 4


def _job(seed: int = 3) -> GenerationJob:
    rgba = make_product_rgba(96, (200, 40, 40), seed=0)
    prepared = prepare_product(product_from_arrays(rgba[..., :3], rgba[..., 3]), size=SIZE, image_scale=0.75)
    return GenerationJob(prepared, "a red bottle on a marble table", "blurry", seed)


def test_single_file_base_generates_the_same_image(pipes):
    from_folder, from_file, info = pipes
    a = AdGenerator(from_folder, SamplingConfig(**FAST)).generate([_job()])[0]
    b = AdGenerator(from_file, SamplingConfig(**FAST), info).generate([_job()])[0]
    assert np.abs(a.raw - b.raw).max() <= 1e-5
    assert np.array_equal(a.image, b.image)


def test_single_file_controlnet_loads_the_folders_weights(files):
    folder = load_controlnet(str(files["controlnet"]))
    single = load_controlnet(str(files["controlnet_file"]), config=str(files["controlnet_config"]))
    assert _max_diff(folder, single) <= 1e-5


@pytest.mark.parametrize("prefixed", [True, False], ids=["control_model-keys", "bare-keys"])
def test_single_file_controlnet_through_the_pipeline(files, pipes, tmp_path, prefixed):
    """`--controlnet FILE.safetensors --controlnet-config FOLDER`: offline, the file's weights, the same image.

    ControlNet files come keyed `control_model.*` (lllyasviel's) or bare (`time_embed.*`, e.g. thibaud's);
    diffusers reads both."""
    path = files["controlnet_file"]
    if not prefixed:
        from safetensors.torch import save_file

        path = tmp_path / "bare.safetensors"
        save_file({k.removeprefix(ldm.CONTROLNET_PREFIX): v for k, v in load_file(str(files["controlnet_file"])).items()}, str(path))
    from_folder = pipes[0]
    pipe, info = load_pipeline(ModelConfig(model=str(files["base"]), controlnet=str(path),
                                           controlnet_config=str(files["controlnet_config"]), device="cpu"))
    assert _max_diff(from_folder.controlnet, pipe.controlnet) <= 1e-5
    assert info["controlnet"] == str(path)
    a = AdGenerator(from_folder, SamplingConfig(**FAST)).generate([_job()])[0]
    b = AdGenerator(pipe, SamplingConfig(**FAST), info).generate([_job()])[0]
    assert np.abs(a.raw - b.raw).max() <= 1e-5


def test_controlnet_config_flag_reaches_the_model_config():
    from reliable_ad.cli.common import build_config
    from reliable_ad.cli.generate import GENERATION_FLAGS
    from reliable_ad.cli.main import build_parser
    from reliable_ad.cli.run import RUN_FLAGS
    from reliable_ad.generation.config import GenerateConfig
    from reliable_ad.recurrent.config import RunConfig

    parser = build_parser()
    flags = ["--model", "m.safetensors", "--base-config", "sd15/", "--controlnet", "c.safetensors",
             "--controlnet-config", "cn/"]
    model = build_config(GenerateConfig, parser.parse_args(["generate", "x.png", "--out", "o", *flags]), GENERATION_FLAGS).model
    assert (model.controlnet, model.controlnet_config, model.base_config) == ("c.safetensors", "cn/", "sd15/")
    run = build_config(RunConfig, parser.parse_args(["run", "x.png", "--out", "o", *flags]), RUN_FLAGS)
    assert run.generation.model.controlnet_config == "cn/"


def test_single_files_without_configs_offline_name_the_flag(files):
    """Offline, diffusers cannot fetch the configs for a single file; the error names our flag."""
    from huggingface_hub import try_to_load_from_cache

    for repo, name in (("lllyasviel/control_v11p_sd15_canny", "config.json"),
                       ("stable-diffusion-v1-5/stable-diffusion-v1-5", "model_index.json")):
        if isinstance(try_to_load_from_cache(repo, name), str):
            pytest.skip(f"{repo} is in the local hub cache, so diffusers finds configs without the flag")
    with pytest.raises(OSError, match="--controlnet-config"):
        load_pipeline(ModelConfig(model=str(files["base"]), controlnet=str(files["controlnet_file"]), device="cpu"))
    with pytest.raises(OSError, match="--base-config"):
        load_pipeline(ModelConfig(model=str(files["model"]), controlnet=str(files["controlnet"]), device="cpu"))
