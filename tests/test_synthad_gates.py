"""The SynthAd oracle's validity gates (experiments/synthad/gates.py; docs/synthad.md, "Validity gates"):
the instrument end to end at a small size (8 scenes per class, 48 generated images of the shipped
generator; about 20 s on 2 cores), its controls (it can pass), and the two gates as tests of what is
true today, both at their full size. Gate 1 holds since issue #13's world change; gate 2 holds for the
abstaining oracle (reliable_ad.synthad.decisive) the studies judge with."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from experiments.synthad import gates
from reliable_ad.core.labels import CLASS_NAMES

PER_CLASS, PRODUCTS, IMAGES_PER_PRODUCT = 8, 16, 3  # GateSettings.quick()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The instrument as a user runs it (`--quick`), its JSON report read back, and its stderr."""
    out = tmp_path_factory.mktemp("gates") / "gates.json"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = gates.main(["--quick", "--no-progress", "--out", str(out)])
    assert rc == 0
    return json.loads(out.read_text(encoding="utf-8")), err.getvalue()


def _figures(block: dict) -> str:
    return ", ".join(f"{name} {v['rate']:.2f}" for name, v in block.items())


# -- the statistics and the perturbations ----------------------------------------------------------


def test_wilson_interval_matches_known_values():
    assert gates.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert gates.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert gates.wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert gates.wilson(0, 0) == (0.0, 1.0)
    p = gates.proportion(3, 4)
    assert p["k"] == 3 and p["n"] == 4 and p["rate"] == 0.75 and p["ci95"][0] < 0.75 < p["ci95"][1]


def test_perturbations_are_small_seeded_and_stay_uint8():
    image = gates.render_scenes(1, seed=0)[0].scene.image  # a real scene: smooth regions and edges
    for pert in gates.PERTURBATIONS:
        a = pert.apply(image, np.random.default_rng(1))
        b = pert.apply(image, np.random.default_rng(1))
        assert a.dtype == np.uint8 and a.shape == image.shape and np.array_equal(a, b), pert.name
        diff = a.astype(np.float32) - image
        assert 0 < np.abs(diff).mean() < 12, pert.name  # a change, and an imperceptible one
        if pert.kind == "noise":
            assert np.std(diff) == pytest.approx(pert.amount, rel=0.1)
    white = np.full((4, 4, 3), 250, np.uint8)
    assert (gates.Perturbation("gain", "gain", 1.03).apply(white, np.random.default_rng(0)) == 255).all()


def test_scenes_are_balanced_placed_as_generation_places_them_and_deterministic():
    from reliable_ad.data.product import prepare_product

    items = gates.render_scenes(3, seed=5)
    assert sorted(item.scene.label_name for item in items) == sorted(CLASS_NAMES * 3)
    scale = gates._image_scale()
    for item in items:
        assert np.array_equal(prepare_product(item.product.to_product(), 64, scale).alpha > 0, item.scene.mask)
    again = gates.render_scenes(3, seed=5)
    assert all(np.array_equal(a.scene.image, b.scene.image) for a, b in zip(items, again))
    other = gates.render_scenes(3, seed=6)
    assert not all(np.array_equal(a.scene.image, b.scene.image) for a, b in zip(items, other))


def test_gate1_is_deterministic():
    from reliable_ad.synthad.oracle import OracleInspector

    items = gates.render_scenes(2, seed=1)
    vae = gates.load_vae()
    a = gates.gate1(items, vae, OracleInspector())
    b = gates.gate1(items, vae, OracleInspector())
    assert np.array_equal(a.pop("_images")["round_trip"], b.pop("_images")["round_trip"])
    assert a == b


def test_vae_option_loads_an_autoencoder_folder(tmp_path):
    """--vae FOLDER: gate 1's VAE from an AutoencoderKL folder (the packaged one read by path is the
    generator's VAE); anything else is refused."""
    folder = gates.generator_folder("synthad") / "base" / "vae"
    a, b = gates.load_vae(), gates.load_vae_folder(folder)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)
    with pytest.raises(ValueError, match="AutoencoderKL"):
        gates.load_vae_folder(tmp_path)
    assert gates.GateSettings(vae=str(folder)).vae == str(folder) and gates.GateSettings().vae is None


# -- the instrument end to end -----------------------------------------------------------------------


def _check_proportion(p: dict, n: int | None = None) -> None:
    assert set(p) >= {"k", "n", "rate", "ci95"}
    assert n is None or p["n"] == n
    assert 0 <= p["k"] <= p["n"] and p["rate"] == pytest.approx(p["k"] / p["n"])
    lo, hi = p["ci95"]
    assert 0.0 <= lo <= p["rate"] + 1e-4 and p["rate"] - 1e-4 <= hi <= 1.0 and lo < hi


def test_the_instrument_runs_end_to_end_and_its_report_is_well_formed(run):
    report, stderr = run
    n_scenes, n_images = PER_CLASS * len(CLASS_NAMES), PRODUCTS * IMAGES_PER_PRODUCT
    s = report["settings"]
    assert (s["per_class"], s["products"], s["images_per_product"], s["seed"], s["quick"]) == \
        (PER_CLASS, PRODUCTS, IMAGES_PER_PRODUCT, 0, True)
    assert s["image_scale"] == gates._image_scale() and s["size"] == 64 and s["vae"].endswith("base/vae")
    assert [p["name"] for p in s["perturbations"]] == [p.name for p in gates.PERTURBATIONS]

    g1 = report["gate1"]
    assert g1["n"] == n_scenes and g1["threshold"] == gates.GATE1_MIN_AGREEMENT and len(g1["scenes"]) == n_scenes
    for part in ("round_trip", "clean"):
        block = g1[part]
        assert list(block["per_class"]) == list(CLASS_NAMES)
        _check_proportion(block["overall"], n_scenes)
        for name, p in block["per_class"].items():
            _check_proportion(p, PER_CLASS)
            row = block["confusion"][name]
            assert list(row) == list(CLASS_NAMES) and sum(row.values()) == PER_CLASS and row[name] == p["k"]
    assert sum(v["n"] for v in g1["round_trip"]["per_variant"].values()) == n_scenes
    assert 0 < g1["round_trip"]["mean_abs_change"] < 40  # the VAE changed the pixels, not beyond recognition
    worst = min(p["rate"] for p in g1["round_trip"]["per_class"].values())
    assert g1["holds"] == (worst >= gates.GATE1_MIN_AGREEMENT)

    g2 = report["gate2"]
    assert g2["n"] == n_images and g2["threshold"] == gates.GATE2_MAX_FLIP_RATE and len(g2["images"]) == n_images
    _check_proportion(g2["available"], n_images)
    assert sum(g2["labels"].values()) == n_images
    for block, n in ((g2, n_images), (g2["control_clean_renders"], n_scenes)):
        assert list(block["perturbations"]) == [p.name for p in gates.PERTURBATIONS]
        for p in block["perturbations"].values():
            _check_proportion(p, n)
            assert p["k"] == p["to_available"] + p["from_available"]
            _check_proportion(p["label_changed"], n)
            assert p["label_changed"]["k"] >= p["k"]  # every flip changes the label
    flips = {p.name: sum(p.name in row["flipped"] for row in g2["images"]) for p in gates.PERTURBATIONS}
    assert flips == {name: v["k"] for name, v in g2["perturbations"].items()}
    assert len({(row["product"], row["k"]) for row in g2["images"]}) == n_images
    _check_proportion(g2["abstained"], n_images)
    kept = [row for row in g2["images"] if row["decisive"]]
    assert g2["decisive"]["n"] == len(kept) == n_images - g2["abstained"]["k"]
    assert list(g2["decisive"]["perturbations"]) == [p.name for p in gates.PERTURBATIONS]
    for name, v in g2["decisive"]["perturbations"].items():
        assert v["k"] == sum(name in row["flipped"] for row in kept) and v["n"] == len(kept)
    worst = max(v["rate"] for v in g2["decisive"]["perturbations"].values())
    assert g2["holds"] == (worst <= gates.GATE2_MAX_FLIP_RATE
                           and g2["abstained"]["rate"] <= gates.GATE2_MAX_ABSTENTION)
    assert report["holds"] == (g1["holds"] and g2["holds"])
    assert report["seconds"]["total"] > 0

    assert "gate 1: the oracle holds on VAE round-trips" in stderr and "gate 2: verdicts are stable" in stderr
    for name in [*CLASS_NAMES, "overall", *(p.name for p in gates.PERTURBATIONS)]:
        assert name in stderr


def test_the_controls_hold_so_the_instrument_can_pass(run):
    """On clean renders the oracle meets gate 1's bar for every class (100% today) and gate 2's
    perturbations flip none of its decisions: the instrument is able to say "holds"."""
    report, _ = run
    clean = report["gate1"]["clean"]
    assert clean["overall"]["rate"] >= 0.95, _figures(clean["per_class"])
    assert all(p["rate"] >= gates.GATE1_MIN_AGREEMENT for p in clean["per_class"].values()), \
        _figures(clean["per_class"])
    control = report["gate2"]["control_clean_renders"]["perturbations"]
    assert all(p["rate"] <= gates.GATE2_MAX_FLIP_RATE for p in control.values()), _figures(control)


# -- the gates: what is true today ---------------------------------------------------------------------


def test_gate_oracle_holds_on_vae_round_trips():
    """Gate 1 at its full size (60 scenes per class, seed 0: ~12 s, as `gates` runs it; at the quick
    size one miss in 8 already fails a class): every class agrees with its known label >= 95% through
    the shipped generator's VAE. Held since the world's defects were made to survive it (issue #13;
    docs/synthad.md: Available 0.98, Space 1.00, Size 1.00, Indistinct 0.95, Shape 0.97)."""
    from reliable_ad.synthad.oracle import OracleInspector

    g1 = gates.gate1(gates.render_scenes(60, seed=0), gates.load_vae(), OracleInspector())
    per_class = g1["round_trip"]["per_class"]
    assert all(p["rate"] >= gates.GATE1_MIN_AGREEMENT for p in per_class.values()), _figures(per_class)
    assert g1["holds"]


def test_gate_verdicts_stable_under_imperceptible_changes():
    """Gate 2 at its full size (100 products x 3 seeds of the shipped generator, seed 0: ~100 s on one
    core, as `gates` runs it): on the images the abstaining oracle judges decisively, no perturbation flips
    more than 3% of the Available-vs-not decisions, and it abstains on at most a third. The plain oracle
    fails this (6.0-7.7% flips on all 300 images, reported beside it); docs/synthad.md has the figures."""
    from reliable_ad.synthad.oracle import OracleInspector

    settings = gates.GateSettings()
    items, images, _ = gates.generate_images(settings)
    g2 = gates.gate2(items, images, OracleInspector(), settings.seed)
    flips = g2["decisive"]["perturbations"]
    assert all(p["rate"] <= gates.GATE2_MAX_FLIP_RATE for p in flips.values()), _figures(flips)
    assert g2["abstained"]["rate"] <= gates.GATE2_MAX_ABSTENTION, g2["abstained"]
    assert g2["holds"]
