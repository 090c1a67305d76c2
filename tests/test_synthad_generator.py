"""The SynthAd generator (`--model synthad`): its training script, the packaged weights and the
defaults that come with the preset (prompt preset, image scale, RFNet)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reliable_ad.generation.config import GenerateConfig, ModelConfig, SamplingConfig
from reliable_ad.core.registry import packaged_folder
from reliable_ad.generation.models import MODEL_PRESETS, load_pipeline, resolve_model
from experiments.synthad import train_generator as tg


SYNTHAD_WEIGHTS = packaged_folder("generator")


def test_preset_points_at_packaged_folders_and_brings_its_defaults():
    preset = MODEL_PRESETS["synthad"]
    assert preset.packaged and preset.native_size == tg.SIZE
    resolved = resolve_model(ModelConfig(model="synthad"))
    assert (SYNTHAD_WEIGHTS / "base" / "model_index.json").is_file()
    assert (SYNTHAD_WEIGHTS / "controlnet" / "config.json").is_file()
    assert resolved.base == str(SYNTHAD_WEIGHTS / "base")
    cfg = GenerateConfig(model=ModelConfig(model="synthad"))
    assert cfg.prompt_preset == "synthad"
    assert GenerateConfig().prompt_preset == "bright-indoor-beige"  # other models keep the authors' default
    assert GenerateConfig(model=ModelConfig(model="synthad"), preset="bright-indoor").prompt_preset == "bright-indoor"


def test_packaged_weights_are_small_safetensors():
    files = [p for p in SYNTHAD_WEIGHTS.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert len(weights) == 4  # vae, text encoder, unet, controlnet
    assert not [p for p in files if p.suffix in (".bin", ".ckpt", ".pt")]
    assert sum(p.stat().st_size for p in weights) < 12 * 2**20


def test_missing_packaged_weights_name_the_fix(monkeypatch, tmp_path):
    (tmp_path / "generator" / "base").mkdir(parents=True)  # a partial copy: no model_index.json, no controlnet
    monkeypatch.setattr("reliable_ad.core.registry.WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="experiments.synthad.train_generator --out DIR --install"):
        resolve_model(ModelConfig(model="synthad"))


def test_packaged_generator_loads_through_the_pipeline_and_keeps_the_product():
    from reliable_ad.generation.generator import AdGenerator, GenerationJob
    from reliable_ad.data.product import prepare_product
    from reliable_ad.generation.prompts import get_preset
    from reliable_ad.synthad.dataset import stream_product

    pipe, info = load_pipeline(ModelConfig(model="synthad", safety_checker=False))
    assert info["native_size"] == 64 and pipe.vae_scale_factor == tg.VAE_SCALE_FACTOR
    assert pipe.unet.dtype == torch.float32  # fp16 files, cast on load
    gen = AdGenerator(pipe, SamplingConfig(num_inference_steps=10), info)
    preset = get_preset("synthad")
    product = stream_product(123, 0)
    prepared = prepare_product(product.to_product(), gen.size, preset.image_scale)
    rendered = preset.render(5, caption=product.caption)
    [out] = gen.generate([GenerationJob(prepared, rendered.prompt, rendered.negative_prompt, 5)])
    assert out.image.shape == (64, 64, 3)
    solid = prepared.alpha == 255
    assert np.array_equal(out.image[solid], prepared.image[solid])  # the product, pixel for pixel
    assert out.image[~(prepared.alpha > 0)].std() > 5  # a scene was painted around it, not a flat canvas


def test_training_records_what_it_did(tmp_path):
    """The script end to end on a few scenes and steps: folders a pipeline loads, and training.json."""
    cfg = tg.GeneratorTrainConfig.quick()
    report = tg.train_generator(tmp_path, cfg, progress=False)
    saved = json.loads((tmp_path / "training.json").read_text())
    assert saved["config"]["steps"] == cfg.steps and set(saved["seconds"]) >= {"scenes", "vae", "denoiser"}
    assert sum(saved["scene_labels"].values()) > 0.9 * cfg.scenes
    assert 0.0 <= report["oracle_evaluation"]["available_rate"] <= 1.0
    assert (tmp_path / "samples.png").is_file()
    pipe, _ = load_pipeline(ModelConfig(model=str(tmp_path / "base"), controlnet=str(tmp_path / "controlnet"),
                                        safety_checker=False))
    assert pipe.vae_scale_factor == tg.VAE_SCALE_FACTOR
    # continuing from a saved generator keeps its VAE (no VAE steps) and trains the rest further
    more = tg.GeneratorTrainConfig.quick()
    more.init_from, more.vae_steps = str(tmp_path), 0
    again = tg.train_generator(tmp_path / "more", more, progress=False)
    assert again["vae"] == {"skipped": True}


def test_training_prompts_are_the_synthad_preset_filled_with_the_scene():
    from reliable_ad.synthad import SceneAttributes, attributes_from_prompt

    attrs = SceneAttributes("light pink", "slate", "none")
    text = tg.scene_prompt_text(attrs, "a small red lipstick")
    assert text == "a small red lipstick on a slate surface, light pink wall, no clutter"
    assert attributes_from_prompt(text) == attrs


def test_cli_writes_products_that_run_reads(tmp_path):
    from reliable_ad.cli.main import main
    from reliable_ad.generation.inputs import read_product_inputs
    from reliable_ad.data.product import load_product

    assert main(["synthad", "products", "-n", "3", "--seed", "7", "--out", str(tmp_path)]) == 0
    items, problems = read_product_inputs([str(tmp_path / "products.csv")])
    assert not problems and len(items) == 3
    assert all(i.caption and i.caption.startswith("a ") for i in items)
    assert load_product(items[0].path).alpha.max() == 255
    assert main(["synthad", "products", "-n", "0", "--out", str(tmp_path / "none")]) == 2


def test_cli_writes_a_labelled_dataset(tmp_path):
    from reliable_ad.cli.main import main

    assert main(["synthad", "dataset", "-n", "6", "--image-scale", "0.35", "--out", str(tmp_path)]) == 0
    assert len((tmp_path / "labels.txt").read_text().splitlines()) == 6
    assert (tmp_path / "modalities" / "meta.json").is_file()


def test_cli_generates_and_labels_with_the_oracle_and_resumes(tmp_path, monkeypatch):
    """`synthad generated`: images of the packaged generator labelled by the oracle, RF1M layout; a
    rerun finds every image recorded and loads no generator."""
    from reliable_ad.cli import synthad as cli_synthad
    from reliable_ad.cli.main import main
    from reliable_ad.core.labels import CLASS_NAMES
    from reliable_ad.data.readers import read_rf1m

    out = tmp_path / "labelled"
    args = ["synthad", "generated", "--out", str(out), "--products", "2", "--per-product", "2", "--steps", "2"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["label"] for r in records} <= set(CLASS_NAMES)
    assert list(records[0]) == ["image", "product_id", "caption", "prompt", "slots", "seed", "label", "p_available",
                                "reasons", "decisive", "checks_agreeing"]
    samples, problems = read_rf1m(out)
    decisive = [r["image"] for r in records if r["decisive"]]
    assert not problems and sorted(Path(s.image).relative_to(out).as_posix() for s in samples) == sorted(decisive)
    assert all(s.caption for s in samples)
    before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}

    def no_generator(*a, **k):
        raise AssertionError("a finished folder must not load the generator")

    monkeypatch.setattr(cli_synthad, "load_generator", no_generator)
    assert main(args) == 0
    assert before == {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    assert main([*args[:-2], "--steps", "0"]) == 2


def test_labelled_sets_leave_out_the_images_the_oracle_abstains_on(tmp_path):
    """write_labelled_set with the real oracle on images it must abstain on (the product over a scene
    painted with noise of sigma 40 in which every re-reading differs) and one it judges decisively (a
    clean render): the abstained ones stay in records.jsonl, not in labels.txt; abstain=False keeps all."""
    from reliable_ad.synthad.dataset import generate_scenes
    from reliable_ad.synthad.generated import ProductItem, write_labelled_set

    scenes = list(generate_scenes(6, seed=4, image_scale=0.35, class_shares={"Available": 1.0}))
    items = [ProductItem(f"p{i}", s.product) for i, s in enumerate(scenes)]
    rng = np.random.default_rng(0)
    noisy = [np.clip(s.scene.image + rng.normal(0, 40, s.scene.image.shape), 0, 255).astype(np.uint8)
             for s in scenes]

    def make_images(part):  # the first product's image clean, the others noisy
        return [(scenes[int(item.key[1:])].scene.image if item.key == "p0" else noisy[int(item.key[1:])], {})
                for item, _ in part]

    summary = write_labelled_set(tmp_path / "a", items, 1, make_images, image_scale=0.35)
    records = [json.loads(line) for line in (tmp_path / "a" / "records.jsonl").read_text().splitlines()]
    labelled = (tmp_path / "a" / "labels.txt").read_text().splitlines()
    assert records[0]["decisive"] and records[0]["label"] == "Available"
    assert summary["abstained"] == sum(not r["decisive"] for r in records) >= 1
    assert len(labelled) == len(records) - summary["abstained"] == sum(summary["per_class"].values())
    everything = write_labelled_set(tmp_path / "b", items, 1, make_images, image_scale=0.35, abstain=False)
    assert everything["abstained"] == 0 and len((tmp_path / "b" / "labels.txt").read_text().splitlines()) == 6

    # a folder written before the oracle could abstain is judged again from its saved images on resume
    path = tmp_path / "a" / "records.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("decisive", "checks_agreeing")}) + "\n"
                            for r in records))

    def no_images(part):
        raise AssertionError("every image is recorded; nothing is generated again")

    again = write_labelled_set(tmp_path / "a", items, 1, no_images, image_scale=0.35)
    assert again == summary and [json.loads(line) for line in path.read_text().splitlines()] == records
    assert (tmp_path / "a" / "labels.txt").read_text().splitlines() == labelled


def test_min_snr_weights_count_low_noise_steps_less():
    """--min-snr-gamma: weight min(SNR, gamma)/SNR per timestep: 1 where the noise dominates (SNR <=
    gamma), gamma/SNR below, so the high-noise steps (layout, wall colour) weigh relatively more."""
    from diffusers import DDPMScheduler

    schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                             beta_end=0.012)
    w = tg.min_snr_weights(schedule, 5.0)
    snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
    assert w.shape == (1000,) and torch.all((w > 0) & (w <= 1))
    assert torch.allclose(w[snr <= 5], torch.ones(int((snr <= 5).sum())))
    assert torch.allclose(w[snr > 5], 5 / snr[snr > 5].float())
    assert w[0] < 0.01 and w[-1] == 1.0  # the cleanest step counts least, the noisiest fully


def test_v_prediction_trains_on_a_zero_terminal_snr_schedule_the_pipeline_samples_with(tmp_path):
    """--prediction v: the saved scheduler says v_prediction, zero terminal SNR and trailing timesteps,
    so nothing of the image is left at t = T (the seed cannot carry a wall's colour) and the pipeline
    samples as the model was trained; min-SNR weighting (an epsilon weighting) is refused with it."""
    from diffusers import DDPMScheduler

    cfg = tg.GeneratorTrainConfig.quick()
    cfg.prediction = "v"
    tg.train_generator(tmp_path, cfg, progress=False)
    pipe, _ = load_pipeline(ModelConfig(model=str(tmp_path / "base"), controlnet=str(tmp_path / "controlnet"),
                                        safety_checker=False))
    config = pipe.scheduler.config
    assert (config.prediction_type, config.rescale_betas_zero_snr, config.timestep_spacing) == \
        ("v_prediction", True, "trailing")
    assert DDPMScheduler.from_config(config).alphas_cumprod[-1] < 1e-6  # SD1.5's keeps 0.0047
    refused = tg.GeneratorTrainConfig.quick()
    refused.prediction, refused.min_snr_gamma = "v", 5.0
    with pytest.raises(ValueError, match="min_snr_gamma=5.0 is for epsilon-prediction"):
        tg.train_generator(tmp_path / "refused", refused, progress=False)
    typo = tg.GeneratorTrainConfig.quick()
    typo.prediction = "x0"
    with pytest.raises(ValueError, match="prediction='x0'"):
        tg.train_generator(tmp_path / "typo", typo, progress=False)


def test_generator_report_measures_the_packaged_generator():
    """experiments/synthad/generator_report.py on 4 fresh products: its three measures are proportions of
    its own per-image rows, and Available is also given over the abstaining oracle's decisive images."""
    from experiments.synthad.generator_report import measure

    r = measure("synthad", 4, progress=False)
    rows = r["images"]
    assert len(rows) == 4 and r["products"] == 4
    assert r["available_first_attempt"]["k"] == sum(row["label"] == "Available" for row in rows)
    decisive = [row for row in rows if row["decisive"]]
    assert r["abstained"]["k"] == 4 - len(decisive) and r["available_first_attempt_decisive"]["n"] == len(decisive)
    assert r["available_first_attempt_decisive"]["k"] == sum(row["label"] == "Available" for row in decisive)
    assert r["references_right_support"]["n"] == sum(bool(row["references"]) for row in rows)
    assert r["wall_color_followed"]["n"] == 4 and r["guidance_rescale"] == 0.0


def test_generator_report_guidance_rescale_flag(capsys):
    """--guidance-rescale reaches the sampling it measures (recorded in the report); a value outside
    [0, 1] is refused with the flag's name."""
    from experiments.synthad.gates import generator_folder
    from experiments.synthad.generator_report import main
    from experiments.synthad.train_generator import evaluate_generator

    root = generator_folder("synthad")
    plain, rescaled = (evaluate_generator(root / "base", root / "controlnet", products=2, steps=10,
                                          guidance_rescale=phi, progress=False)["images"] for phi in (0.0, 0.7))
    assert any(not np.array_equal(a, b) for a, b in zip(plain, rescaled))  # the rescale reaches the sampling
    with pytest.raises(SystemExit) as err:
        main(["--model", "synthad", "--products", "2", "--guidance-rescale", "1.5"])
    assert err.value.code == 2 and "--guidance-rescale 1.5" in capsys.readouterr().err


def test_heldout_report_reads_what_rfnet_eval_writes(tmp_path, capsys):
    """experiments/synthad/heldout_report.py on the real writers' output: `synthad generated` makes a
    labelled folder, `rfnet eval` judges it with the packaged RFNet, and the report's point figures are
    those of eval's own metrics.json, with intervals around them."""
    from experiments.synthad.heldout_report import heldout_report, main as report_main, threshold_point
    from reliable_ad.cli.main import main

    data, ev = tmp_path / "heldout", tmp_path / "eval"
    assert main(["synthad", "generated", "--out", str(data), "--products", "6", "--per-product", "2",
                 "--steps", "20", "--seed", "5"]) == 0  # seed 5: Available images, some accepted
    assert main(["rfnet", "eval", "--model", "synthad", "--data", str(data), "--out", str(ev), "--num-workers", "0",
                 "--device", "cpu", "--no-progress"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    r = heldout_report(ev, resamples=50)
    assert r["images"] == metrics["n"] and 1 <= r["products"] <= 6
    available = metrics["per_class"]["Available"]
    assert r["available_precision"]["n"] > 0 and r["available_recall"]["n"] > 0
    assert r["available_precision"]["rate"] == pytest.approx(available["precision"])
    assert r["available_recall"]["rate"] == pytest.approx(available["recall"])
    assert r["available_ap"] == pytest.approx(metrics["available"]["average_precision"], abs=1e-3)
    lo, hi = r["available_ap_ci95"]
    assert 0.0 <= lo <= hi <= 1.0
    with pytest.raises(SystemExit) as exit_:  # a folder without predictions is a usage error naming the fix
        report_main([str(tmp_path / "missing")])
    assert exit_.value.code == 2 and "rfnet eval" in capsys.readouterr().err
    # a threshold chosen on eval's own rows (here: the same folder): asking only for the base rate's
    # precision keeps every image (the lowest score), so recall 1 and precision = the Available share
    rows = [json.loads(line) for line in (ev / "predictions.jsonl").read_text().splitlines()]
    share = np.mean([row["label"] == "Available" for row in rows])
    point = threshold_point(ev, ev, float(share))
    assert point["threshold"] == pytest.approx(min(row["probs"]["Available"] for row in rows))
    assert point["available_recall"]["rate"] == 1.0
    assert point["available_precision"]["rate"] == pytest.approx(share)
    capsys.readouterr()
    assert report_main([str(ev), "--choose-on", str(ev), "--precision", "0.5", "--resamples", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold_operating_point"]["target_precision"] == 0.5


def test_threshold_for_precision_keeps_the_most_recall():
    from experiments.synthad.heldout_report import threshold_for_precision

    truth = np.array([False, True, False, True, True, True])
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    assert threshold_for_precision(truth, score, 0.75) == pytest.approx(0.2)  # >= 0.2: 4 of 5 Available
    assert threshold_for_precision(truth, score, 1.0) == pytest.approx(0.4)
    assert threshold_for_precision(np.array([False, False]), np.array([0.5, 0.9]), 0.5) is None
    with pytest.raises(ValueError, match="precision=0"):
        threshold_for_precision(truth, score, 0.0)
