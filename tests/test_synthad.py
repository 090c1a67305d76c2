"""SynthAd: procedural products and scenes, the injected defects, the oracle and the dataset writer."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from reliable_ad.data.product import load_product, paste_back, prepare_product, product_from_arrays
from reliable_ad.core.labels import AVAILABLE_INDEX, CLASS_NAMES
from reliable_ad.synthad import (CATEGORIES, CATEGORY_NAMES, COLOR_NAMES, DEFECT_VARIANTS, PRODUCT_COLORS, REFERENCES,
                                 SURFACES, WALL_COLORS, OracleInspector, SceneAttributes, attribute_conflicts,
                                 attributes_from_prompt, class_schedule, parse_caption, render_scene, sample_product,
                                 scene_prompt, write_product_png, write_synthad_dataset)
from reliable_ad.synthad.oracle import OracleConfig
from reliable_ad.synthad.preview import class_sheet, save_png
from reliable_ad.synthad.products import SHADE_RANGE
from reliable_ad.synthad.world import APRON_SHADE, color_distance, shade

PER_CLASS = 100  # 500 scenes, balanced over the five classes, for the agreement test


def _scene(i: int, label: int, size: int = 64, **kw):
    return render_scene(sample_product(i), None, label, seed=i, size=size, **kw)


@pytest.fixture(scope="session")
def labelled_scenes():
    """500 rendered 64 px scenes, 100 per class, with their render time."""
    t0 = time.perf_counter()
    scenes = [_scene(10_000 * label + j, label) for label in range(len(CLASS_NAMES)) for j in range(PER_CLASS)]
    return scenes, (time.perf_counter() - t0) / len(scenes)


@pytest.fixture(scope="session")
def oracle():
    return OracleInspector()


# ----------------------------------------------------------------------------------------------
# Products
# ----------------------------------------------------------------------------------------------


def test_at_least_eight_categories_with_size_classes():
    assert len(CATEGORIES) >= 8
    assert {c.size_class for c in CATEGORIES.values()} == {"small", "medium", "large"}
    for cat in CATEGORIES.values():
        assert 0 < cat.height_m[0] < cat.height_m[1]


@pytest.mark.parametrize("category", CATEGORY_NAMES)
def test_every_category_renders_a_cutout_with_its_caption(category):
    for color in ("red", "black"):
        p = sample_product(3, category=category, color=color)
        assert p.rgba.dtype == np.uint8 and p.rgba.ndim == 3 and p.rgba.shape[2] == 4
        alpha = p.alpha
        assert (alpha == 255).sum() > 500 and (alpha == 0).any()
        assert (p.rgb[alpha == 0] == 0).all()
        assert p.caption == f"a {CATEGORIES[category].size_class} {color} {category}"
        info = parse_caption(p.caption)
        assert (info.size_class, info.category, info.color) == (p.size_class, category, color)
        lo, hi = CATEGORIES[category].height_m
        assert lo <= p.height_m <= hi
        # the body colour dominates: the oracle reads the product's colour from it
        body = color_distance(p.rgb[alpha == 255].astype(np.float32), PRODUCT_COLORS[color]) < 60
        assert body.mean() > 0.4, f"{category}: body colour covers only {body.mean():.0%}"
        p.to_product()  # a valid data.product.Product


def test_products_are_deterministic_from_seeds():
    a, b, c = sample_product(11), sample_product(11), sample_product(12)
    assert np.array_equal(a.rgba, b.rgba) and a.caption == b.caption and a.height_m == b.height_m
    assert not (np.array_equal(a.rgba, c.rgba) and a.caption == c.caption)


def test_product_png_round_trips_through_the_product_loader(tmp_path):
    p = sample_product(4)
    path = write_product_png(p, tmp_path / "p.png")
    loaded = load_product(path)
    assert np.array_equal(loaded.alpha, p.alpha)
    assert np.array_equal(loaded.rgb[p.alpha > 0], p.rgb[p.alpha > 0])


def test_bad_product_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown product category 'sofa'"):
        sample_product(0, category="sofa")
    with pytest.raises(ValueError, match="unknown product colour 'mauve'"):
        sample_product(0, color="mauve")
    with pytest.raises(TypeError, match="seed"):
        sample_product("7")


def test_world_palettes_keep_their_roles_apart():
    """The oracle's rules rely on these separations (see world.py)."""
    shades = [shade(c, f) for c in PRODUCT_COLORS.values() for f in SHADE_RANGE]
    for wall in WALL_COLORS.values():
        for surface in SURFACES.values():
            assert color_distance(wall, surface) > 55  # the support line is visible
    for ref in REFERENCES.values():
        others = [*WALL_COLORS.values(), *SURFACES.values(), *[shade(s, APRON_SHADE) for s in SURFACES.values()],
                  *shades, *[r.key for r in REFERENCES.values() if r is not ref]]
        nearest = min(color_distance(ref.key, c) for c in others)
        assert nearest > OracleConfig().reference_tolerance + 5, ref.name
    for name in COLOR_NAMES:  # every product colour has walls to stand out on
        p = sample_product(0, category="box", color=name)
        assert any(not attribute_conflicts(p, SceneAttributes(w, s)) for w in WALL_COLORS for s in SURFACES)


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


def test_scenes_are_deterministic_from_seeds():
    p = sample_product(21)
    a = render_scene(p, None, "Shape Hallucination", seed=5)
    b = render_scene(sample_product(21), None, "Shape Hallucination", seed=5)
    c = render_scene(p, None, "Shape Hallucination", seed=6)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
    assert np.array_equal(a.salience, b.salience) and a.variant == b.variant and a.prompt == b.prompt
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("size", [64, 128])
def test_every_category_renders_a_scene(size):
    for i, category in enumerate(CATEGORY_NAMES):
        s = render_scene(sample_product(i, category=category), None, None, seed=i, size=size)
        assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
        for m in (s.depth, s.salience):
            assert m.shape == (size, size) and m.dtype == np.float32
            assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
        assert s.label == AVAILABLE_INDEX and s.label_name == "Available"
        assert s.salience[s.product_alpha == 255].mean() > s.salience[~s.mask].mean()
        assert s.depth[s.product_alpha == 255].mean() > s.depth[: s.layout.support_y].mean()  # nearer than the wall


def test_product_pixels_are_exact_in_every_class(labelled_scenes):
    scenes, _ = labelled_scenes
    for s in scenes[::10]:
        opaque = s.product_alpha == 255
        assert np.array_equal(s.image[opaque], s.product_rgb[opaque])
        assert np.array_equal(paste_back(s.background, s.placed), s.image)
        # the product layer is what the generation pipeline would get in keep_loc mode
        layer = s.product_layer
        prepared = prepare_product(product_from_arrays(layer[..., :3], layer[..., 3]), s.size, keep_loc=True)
        assert np.array_equal(prepared.alpha, s.product_alpha)
        assert np.array_equal(paste_back(s.background, prepared), s.image)


def test_centred_placement_matches_the_generation_pipeline():
    p = sample_product(8, category="speaker")
    s = render_scene(p, None, None, seed=3, image_scale=0.4)
    prepared = prepare_product(p.to_product(), 64, 0.4)
    assert np.array_equal(s.product_alpha, prepared.alpha)
    assert np.array_equal(paste_back(s.background, prepared), s.image)
    with pytest.raises(ValueError, match="image_scale"):
        render_scene(p, None, None, seed=3, image_scale=0.95)


def test_each_defect_variant_renders():
    for k, (defect, variants) in enumerate(DEFECT_VARIANTS.items()):
        for j, variant in enumerate(variants):
            category = "bottle" if variant == "sinking" else None  # tables only
            s = render_scene(sample_product(100 * k + j, category=category), None, defect, seed=j, variant=variant)
            assert s.label == CLASS_NAMES.index(defect) and s.variant == variant
            assert s.extension_mask.any() == (defect == "Shape Hallucination")


def test_prompt_text_round_trips():
    p = sample_product(2, category="bottle", color="red")
    attrs = SceneAttributes("beige", "wooden", "low")
    assert scene_prompt(p, attrs) == "a red bottle on a wooden table, beige wall, low clutter"
    assert attributes_from_prompt(scene_prompt(p, attrs)) == attrs
    big = sample_product(2, category="suitcase", color="blue")
    none = SceneAttributes("light sky blue", "concrete", "none")
    assert scene_prompt(big, none) == "a blue suitcase on a concrete floor, light sky blue wall, no clutter"
    assert attributes_from_prompt(scene_prompt(big, none)) == none
    for i in range(20):
        s = _scene(i, i % 5)
        assert attributes_from_prompt(s.prompt) == s.attrs


def test_bad_scene_arguments_are_refused():
    p = sample_product(0, category="bottle", color="black")
    with pytest.raises(ValueError, match="slate"):
        render_scene(p, SceneAttributes("beige", "slate"), None)
    with pytest.raises(ValueError, match="Spaces Mismatch"):
        render_scene(p, None, "Spaces Mismatch")
    with pytest.raises(ValueError, match="variant='legs'"):
        render_scene(p, None, "Space Mismatch", variant="legs")
    with pytest.raises(ValueError, match="size=100"):
        render_scene(p, None, None, size=100)
    with pytest.raises(ValueError, match="SceneAttributes.wall='teal'"):
        SceneAttributes("teal", "wooden")


# ----------------------------------------------------------------------------------------------
# Oracle
# ----------------------------------------------------------------------------------------------


def test_oracle_agrees_with_injected_labels(labelled_scenes, oracle):
    scenes, render_s = labelled_scenes
    t0 = time.perf_counter()
    predicted = np.array([oracle.judge_scene(s).label_index for s in scenes])
    judge_s = (time.perf_counter() - t0) / len(scenes)
    truth = np.array([s.label for s in scenes])
    per_class = {name: float((predicted[truth == k] == k).mean()) for k, name in enumerate(CLASS_NAMES)}
    overall = float((predicted == truth).mean())
    print(f"\noracle agreement on {len(scenes)} 64 px scenes: {overall:.3f}; per class {per_class}; "
          f"render {1000 * render_s:.1f} ms, judge {1000 * judge_s:.1f} ms per scene")
    assert overall >= 0.95
    for name, share in per_class.items():
        assert share >= 0.9, f"{name}: {share:.2f}"


def test_oracle_agrees_at_128_px(oracle):
    scenes = [_scene(70_000 + 1000 * label + j, label, size=128) for label in range(5) for j in range(10)]
    agree = np.mean([oracle.judge_scene(s).label_index == s.label for s in scenes])
    assert agree >= 0.95


def test_oracle_tolerates_a_slightly_blurred_background(oracle):
    """A generator redraws the background less crisply; the product is still pasted exactly."""
    import cv2

    rng = np.random.default_rng(0)
    agree = []
    for label in range(5):
        for j in range(12):
            s = _scene(80_000 + 1000 * label + j, label)
            background = cv2.GaussianBlur(s.background.astype(np.float32), (0, 0), 0.6)
            background = np.clip(background + rng.normal(0, 3, background.shape), 0, 255).astype(np.uint8)
            verdict = oracle.judge(paste_back(background, s.placed), s.product_alpha, s.caption)
            agree.append(verdict.label_index == label)
    assert np.mean(agree) >= 0.9


def test_oracle_verdicts_have_the_inspector_fields(labelled_scenes, oracle):
    scenes, _ = labelled_scenes
    for s in scenes[::50]:
        v = oracle.judge_scene(s)
        assert v.label in CLASS_NAMES and CLASS_NAMES[v.label_index] == v.label
        assert set(v.probs) == set(CLASS_NAMES) and abs(sum(v.probs.values()) - 1) < 1e-6
        assert v.p_available == v.probs["Available"]
        assert v.label == max(v.probs, key=v.probs.get)
        assert set(v.to_dict()) >= {"label", "label_index", "probs", "p_available"}
        if v.label != "Available":
            assert v.reasons


def test_oracle_judges_an_edited_image():
    """Rules look at pixels, not at the renderer's labels: lifting the product off an Available
    scene makes it float; painting the wall in the product's colour makes it indistinct."""
    oracle = OracleInspector()
    s = _scene(3, AVAILABLE_INDEX)
    assert oracle.judge_scene(s).label == "Available"
    lift = 10
    alpha = np.roll(s.product_alpha, -lift, axis=0)
    rgb = np.roll(s.product_rgb, -lift, axis=0)
    placed = prepare_product(product_from_arrays(rgb, alpha), 64, keep_loc=True)
    lifted = paste_back(s.background, placed)
    assert oracle.judge(lifted, alpha, s.caption).label == "Space Mismatch"
    painted = s.background.copy()
    painted[: s.layout.support_y] = shade(s.product.color_rgb, 1.02)
    painted = paste_back(painted, s.placed)
    assert oracle.judge(painted, s.product_alpha, s.caption).label == "Indistinctiveness"


def test_oracle_as_a_recurrent_generation_judge(oracle):
    scenes = [_scene(90_000 + i, i % 5, size=64 if i % 2 else 128) for i in range(10)]
    products = [s.product.rgba for s in scenes]
    verdicts = oracle(products, [s.image for s in scenes], [s.caption for s in scenes])
    assert [v.label_index for v in verdicts] == [oracle.judge_scene(s).label_index for s in scenes]
    for s in scenes:
        assert np.array_equal(oracle.locate(s.product.rgba, s.image), s.product_alpha)
        assert np.array_equal(oracle.locate(s.product_layer, s.image), s.product_alpha)
    # the pipeline's own centred placement is found too
    p = sample_product(6, category="can")
    prepared = prepare_product(p.to_product(), 64, 0.45)
    generated = paste_back(scenes[1].background, prepared)
    assert np.array_equal(oracle.locate(p.rgba, generated), prepared.alpha)
    # an image without the product
    other = sample_product(7, category="chair")
    [v] = oracle([other.rgba], [scenes[1].background], [other.caption])
    assert v.p_available == 0.0 and "not found" in v.reasons[0]
    with pytest.raises(ValueError, match="pass one of each"):
        oracle(products[:2], [scenes[0].image], ["x"])


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------


def test_class_schedule_follows_shares():
    labels = class_schedule(100, {"Available": 0.5, "Space Mismatch": 0.5}, seed=1)
    assert labels.count(0) == 50 and labels.count(1) == 50
    assert class_schedule(100, seed=2) == class_schedule(100, seed=2)
    with pytest.raises(ValueError, match="unknown class 'Blurry'"):
        class_schedule(10, {"Blurry": 1.0})


def test_dataset_writer_is_readable_by_read_rf1m(tmp_path):
    from reliable_ad.modalities.cache import attach_cached_maps
    from reliable_ad.rfnet.dataset import RFDataset
    from reliable_ad.data.readers import read_rf1m

    summary = write_synthad_dataset(tmp_path / "synthad", 20, seed=3, maps=True)
    assert summary.ok and summary.written == 20 and set(summary.per_class.values()) == {4}
    samples, problems = read_rf1m(tmp_path / "synthad")
    assert not problems and len(samples) == 20
    records = {r["image"]: r for r in map(json.loads, (tmp_path / "synthad" / "scenes.jsonl").read_text().splitlines())}
    captions = json.loads((tmp_path / "synthad" / "captions.json").read_text())
    for sample in samples:
        rel = sample.image.split("synthad/", 1)[1]
        assert sample.label == records[rel]["label"]
        assert sample.product is not None and sample.product_id == records[rel]["product_id"]
        assert sample.caption == captions[sample.product_id] == records[rel]["caption"]
    with_maps, counts = attach_cached_maps(samples, tmp_path / "synthad", depth="synthad-true", salience="synthad-true")
    assert counts == {"depth": 20, "salience": 20}
    depth = np.load(with_maps[0].depth)
    assert depth.dtype == np.float16 and depth.shape == (64, 64) and 0 <= depth.min() <= depth.max() <= 1
    item = RFDataset(with_maps, image_size=32)[0]
    assert item["image"].shape == (3, 32, 32) and item["depth"].shape == (1, 32, 32)
    # the same settings write the same images
    again = write_synthad_dataset(tmp_path / "again", 20, seed=3, maps=False)
    assert again.written == 20
    first = sorted((tmp_path / "synthad" / "images").iterdir())
    assert [p.read_bytes() for p in first] == [(tmp_path / "again" / "images" / p.name).read_bytes() for p in first]


def test_contact_sheet_of_the_classes(labelled_scenes, tmp_path):
    scenes, _ = labelled_scenes
    picked = [s for k in range(5) for s in [x for x in scenes if x.label == k][:8]]
    sheet = class_sheet(picked, per_class=8)
    assert sheet.shape[0] == 5 * (128 + 4) + 4 and sheet.dtype == np.uint8
    assert save_png(sheet, tmp_path / "sheet.png").endswith("sheet.png")


def test_synthad_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, reliable_ad.synthad; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
