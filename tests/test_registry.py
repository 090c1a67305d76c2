"""The one registry of presets and packaged weights (reliable_ad.core.registry), its resolver of
"name, folder, hub id or file?", and `reliable-ad models`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from reliable_ad.cli.main import main
from reliable_ad.core import registry as reg
from reliable_ad.core.registry import (
    FILE,
    FOLDER,
    HUB,
    KINDS,
    NAME,
    PACKAGED_WEIGHTS,
    Registry,
    describe,
    get_entry,
    is_hub_id,
    list_entries,
    list_names,
    packaged_folder,
    resolve_source,
)

# A few names each kind must have (its package registers them).
EXPECTED = {
    "model": {"tiny", "tiny-inpaint", "synthad", "sd15", "sd15-inpaint", "reliable"},
    "rfnet": {"tiny", "rfnet-r50", "rfnet-r50-minilm", "baseline-resnet50", "baseline-vit", "synthad"},
    "depth": {"dpt-hybrid", "depth-anything-v2-small", "tiny", "synthad"},
    "salience": {"u2netp", "fine-grained", "auto", "tiny", "synthad"},
    "backbone": {"resnet", "vit"},
    "prompt": {"bright-indoor-beige", "minimal-wall-color", "synthad"},
}


# --- listing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_lists_its_presets_with_one_line_descriptions(kind):
    assert EXPECTED[kind] <= set(list_names(kind))
    for name, description in describe(kind).items():
        assert description.strip() and "\n" not in description, name
    assert [e.kind for e in list_entries(kind)] == [kind] * len(list_names(kind))


def test_the_packages_public_lists_read_the_registry():
    from reliable_ad.generation.models import MODEL_PRESETS
    from reliable_ad.generation.prompts import builtin_presets
    from reliable_ad.modalities import list_depth_estimators, list_salience_estimators
    from reliable_ad.rfnet.config import IMAGE_ENCODER_TYPES
    from reliable_ad.rfnet.presets import list_presets

    assert list(MODEL_PRESETS) == list_names("model")
    assert list(builtin_presets()) == list_names("prompt")
    assert list_depth_estimators() == list_names("depth") and list_salience_estimators() == list_names("salience")
    assert list_presets() == describe("rfnet")
    assert set(IMAGE_ENCODER_TYPES) == set(list_names("backbone"))
    assert get_entry("model", "sd15").load() is MODEL_PRESETS["sd15"]


def test_listing_filters_by_kind_and_pattern():
    assert {e.kind for e in list_entries()} == set(KINDS)
    synthad = list_entries(pattern="*synthad*")
    assert {e.kind for e in synthad} == {"model", "rfnet", "depth", "salience", "prompt"}
    assert [e.name for e in list_entries("rfnet", "RFNET-*")] == ["rfnet-r50", "rfnet-r50-minilm"]  # case-insensitive
    assert list_entries("depth", "no-such-*") == []
    with pytest.raises(ValueError, match=r"kind='vae' is not a registry kind.*'model'"):
        list_entries("vae")


def test_unknown_names_are_errors_listing_the_names():
    with pytest.raises(ValueError, match=r"unknown image backbone 'vgg'; registered backbone names: resnet, vit"):
        get_entry("backbone", "vgg")
    from reliable_ad.rfnet.encoders import image_backbone_spec

    assert image_backbone_spec("vit").model_type == "vit"
    with pytest.raises(ValueError, match="'vgg'.*resnet, vit"):
        image_backbone_spec("vgg")


def test_registry_class_registers_looks_up_and_refuses_duplicates():
    r = Registry()
    entry = r.register("depth", "mine", "my depth model", "json:dumps", hub_id="me/depth")
    assert r.get("depth", "mine") is entry and r.names("depth") == ["mine"] and r.names("rfnet") == []
    assert entry.load() is json.dumps  # "module:attr" is imported on use
    assert r.register("depth", "mine", "my depth model", "json:dumps", hub_id="me/depth") == entry  # same: fine
    with pytest.raises(ValueError, match=r"depth 'mine' is already registered \(my depth model\).*replace=True"):
        r.register("depth", "mine", "another", "json:loads")
    assert r.register("depth", "mine", "another", "json:loads", replace=True).load() is json.loads
    for bad, match in [
        (dict(kind="vae", name="x", description="d"), "kind='vae'"),
        (dict(kind="depth", name=" x", description="d"), "name ' x'"),
        (dict(kind="depth", name="x", description="two\nlines"), "one non-empty line"),
        (dict(kind="depth", name="x", description="d", target="no_colon"), "'package.module:attribute'"),
        (dict(kind="depth", name="x", description="d", hub_id="./nope"), "hub_id='./nope'"),
        (dict(kind="depth", name="x", description="d", packaged="vae"), "packaged='vae'"),
    ]:
        with pytest.raises(ValueError, match=match):
            r.register(**bad)
    with pytest.raises(ValueError, match="has no packaged weights"):
        entry.folder()


def test_a_provider_that_fails_halfway_is_retried_cleanly(tmp_path, monkeypatch):
    (tmp_path / "half_provider.py").write_text(
        "import os\n"
        "from reliable_ad.core import registry\n"
        "registry._TEST.register('depth', 'half', 'registered before the failure', lambda: None)\n"
        "if os.environ.get('HALF_FAIL'):\n"
        "    raise RuntimeError('provider broke')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "half_provider", raising=False)
    r = Registry({"depth": "half_provider"})
    monkeypatch.setattr(reg, "_TEST", r, raising=False)
    monkeypatch.setenv("HALF_FAIL", "1")
    for _ in range(2):
        with pytest.raises(RuntimeError, match="provider broke"):
            r.names("depth")
    monkeypatch.delenv("HALF_FAIL")
    assert r.names("depth") == ["half"]  # the half-registered entry was dropped, so the retry registers anew
    assert r.names("salience") == []  # a kind without a provider is simply empty
    monkeypatch.delitem(sys.modules, "half_provider")
    with pytest.raises(ModuleNotFoundError):
        Registry({"depth": "reliable_ad.no_such_module"}).names("depth")


# --- the resolver -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["org/model", "Intel/dpt-hybrid-midas", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                                   "a_b/c.d-e", "ZhenbangDu/reliable_controlnet"])
def test_hub_ids(value):
    assert is_hub_id(value)
    source = resolve_source(value, "rfnet")
    assert source.form == HUB and source.hub_id == value and str(source) == value and source.entry is None


@pytest.mark.parametrize("value", ["model", "./org/model", "/org/model", "~/model", "org/model/extra", "org/..",
                                   "-org/model", "org/", "/", "org model/x"])
def test_not_hub_ids(value):
    assert not is_hub_id(value)


def test_resolver_tells_name_folder_file_and_hub_apart(tmp_path, monkeypatch):
    folder = tmp_path / "my-model"
    folder.mkdir()
    config = tmp_path / "rfnet.yaml"
    config.write_text("image_size: 64\n")
    name = resolve_source("tiny", "rfnet")
    assert name.form == NAME and name.entry.name == "tiny" and name.entry.kind == "rfnet" and name.path is None
    got = resolve_source(folder, "rfnet")
    assert got.form == FOLDER and got.path == folder and str(got) == str(folder)
    got = resolve_source(str(config), "rfnet", suffixes=(".yaml", ".json"))
    assert got.form == FILE and got.path == config
    assert resolve_source("org/model", "depth").form == HUB
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    assert resolve_source("tiny", "rfnet").form == NAME  # a registered name wins over a folder of that name
    assert resolve_source("./tiny", "rfnet").form == FOLDER
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "model").mkdir()
    assert resolve_source("org/model", "rfnet").form == FOLDER  # an existing folder wins over a hub id
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_source("~/my-model", "rfnet").path == folder


def test_resolver_errors_name_the_value_what_was_tried_and_the_names(tmp_path):
    with pytest.raises(ValueError) as e:
        resolve_source("no-such-model", "depth")
    message = str(e.value)
    assert "unknown depth estimator 'no-such-model'" in message
    assert "tried a registered depth name, an existing folder, a hub id like 'org/model' and an existing file" in message
    assert "Registered depth names: dpt-hybrid, depth-anything-v2-small, tiny, synthad" in message
    with pytest.raises(ValueError, match=r"unknown salience estimator 'x'.*fine-grained.*a file ending in \.onnx"):
        resolve_source("x", "salience", suffixes=(".onnx",))
    with pytest.raises(ValueError, match=r"unknown controlnet 'tiny': tried an existing folder and a hub id.*Pass an"):
        resolve_source("tiny", "model", accept=(FOLDER, HUB), what="controlnet")
    weights = tmp_path / "weights.txt"
    weights.write_text("x")
    with pytest.raises(ValueError, match=r"model '.*weights.txt' is a file, but model takes .*\.safetensors/\.ckpt"):
        resolve_source(weights, "model", suffixes=(".safetensors", ".ckpt"))
    with pytest.raises(ValueError, match=r"'.*weights.txt' is a file, but saved RFNet takes .*folder"):
        resolve_source(weights, "rfnet", accept=(NAME, FOLDER, HUB), what="saved RFNet")
    with pytest.raises(ValueError, match=r"is a folder, but salience estimator takes a file ending in \.onnx"):
        resolve_source(tmp_path, "salience", accept=(FILE,), suffixes=(".onnx",))
    with pytest.raises(FileNotFoundError, match=r"'.*missing\.onnx': no such file"):
        resolve_source(tmp_path / "missing.onnx", "salience", suffixes=(".onnx",))
    with pytest.raises(TypeError, match="got NoneType None"):
        resolve_source(None, "depth")
    with pytest.raises(ValueError, match="depth estimator is empty"):
        resolve_source("  ", "depth")
    with pytest.raises(ValueError, match="kind='vae'"):
        resolve_source("x", "vae")
    with pytest.raises(ValueError, match="accept="):
        resolve_source("x", "depth", accept=("url",))


def test_loaders_use_the_one_resolver(tmp_path):
    from reliable_ad.generation.config import ModelConfig
    from reliable_ad.generation.models import resolve_model
    from reliable_ad.rfnet.io import resolve_folder
    from reliable_ad.rfnet.presets import _config_source, rfnet_config

    with pytest.raises(ValueError, match=r"unknown RFNet 'nope'.*Registered rfnet names: tiny, rfnet-r50"):
        _config_source("nope")
    config = tmp_path / "rfnet.yaml"
    config.write_text("image_size: 64\n")
    assert _config_source(str(config)).image_size == 64
    assert _config_source("tiny") == rfnet_config("tiny") and _config_source("synthad") is None
    assert _config_source(str(tmp_path)) is None and _config_source("org/rfnet") is None  # saved models
    assert resolve_folder("synthad") == packaged_folder("rfnet") and resolve_folder(tmp_path) == tmp_path
    with pytest.raises(ValueError, match=r"'tiny' is an RFNet config preset, not a saved model; build it with"):
        resolve_folder("tiny")
    with pytest.raises(ValueError, match="ControlNet must be given"):
        resolve_model(ModelConfig(model="org/base-model"))


# --- packaged weights --------------------------------------------------------------------------------


def test_packaged_folders_are_found_by_path():
    for name in PACKAGED_WEIGHTS:
        folder = packaged_folder(name)
        assert folder.is_dir() and folder.parent == reg.WEIGHTS_DIR
    assert reg.WEIGHTS_DIR.parts[-3:] == ("reliable_ad", "synthad", "weights")
    packaged = [e for e in list_entries() if e.packaged]
    assert {(e.kind, e.name) for e in packaged} == {("model", "synthad"), ("rfnet", "synthad"),
                                                   ("depth", "synthad"), ("salience", "synthad")}
    for entry in packaged:
        assert entry.folder() == packaged_folder(entry.packaged)
    assert (packaged_folder("rfnet") / reg.REPORT_FILE).is_file()


def test_missing_packaged_weights_name_the_fix(tmp_path, monkeypatch):
    (tmp_path / "generator" / "base").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"SynthAd generator model is missing: .* has no base/model_index.json"
                                                r".*experiments\.synthad\.train_generator --out DIR --install"):
        packaged_folder("generator", root=tmp_path)
    monkeypatch.setattr(reg, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"SynthAd rfnet model is missing.*train_rfnet --out DIR --install"):
        get_entry("rfnet", "synthad").folder()
    with pytest.raises(ValueError, match=r"kind='vae' is not a packaged SynthAd model; use one of \['depth'"):
        packaged_folder("vae")


# --- laziness -----------------------------------------------------------------------------------------


def test_listing_and_packaged_folders_import_no_torch_nor_synthad():
    code = textwrap.dedent("""
        import sys
        from reliable_ad.core.registry import KINDS, PACKAGED_WEIGHTS, list_entries, packaged_folder, resolve_source
        assert all(list_entries(kind) for kind in KINDS)
        for name in PACKAGED_WEIGHTS:
            packaged_folder(name)
        for kind in KINDS:
            resolve_source("org/model", kind)
        from reliable_ad.cli.main import main
        assert main(["models"]) == 0
        heavy = ("torch", "diffusers", "transformers", "reliable_ad.synthad")
        print("LOADED", [m for m in heavy if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "LOADED []"


# --- reliable-ad models ---------------------------------------------------------------------------------


def test_models_command_lists_every_kind_with_descriptions(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for kind in KINDS:
        assert f"\n{kind}: " in f"\n{out}", kind
    assert "  rfnet-r50 " in out and "the paper's RFNet" in out
    assert "[hub: Intel/dpt-hybrid-midas]" in out and "[packaged]" in out


def test_models_command_filters_by_kind_and_pattern(capsys):
    assert main(["models", "--kind", "rfnet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rfnet: ") and "\ndepth: " not in out and "  baseline-vit " in out
    assert main(["models", "*synthad*"]) == 0
    out = capsys.readouterr().out
    assert "\nbackbone: " not in out and out.count("  synthad ") == 5
    assert main(["models", "--kind", "backbone", "v*"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [f"  vit  {describe('backbone')['vit']}"]
    assert main(["models", "no-such-*"]) == 1
    assert "no name of any kind matches 'no-such-*'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["models", "--kind", "vae"])


def test_presets_command_still_lists_prompt_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "bright-indoor-beige  (image_scale 0.78)" in out and "minimal-wall-color" in out
