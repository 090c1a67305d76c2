"""Prompt presets: built-ins, the authors' file, slot rendering and every validation error."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from reliable_ad.generation.prompts import (
    AUTHORS_WALL_COLORS,
    PromptPreset,
    RenderedPrompt,
    builtin_presets,
    get_preset,
    load_presets,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference_prompts.json"
AUTHORS_NAMES = ["soft-outdoor", "bright-indoor-beige", "minimal-wall-color", "tablecloth-flowers", "bright-indoor"]
BUILTIN_NAMES = [*AUTHORS_NAMES, "synthad"]


@pytest.fixture
def reference():
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} is not available")
    return REFERENCE


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def preset(**overrides):
    fields = dict(name="p", prompt="a product on a {color} table", negative_prompt="lowres", image_scale=0.75)
    fields["slots"] = {"color": ("red", "blue")}
    fields.update(overrides)
    return PromptPreset(**fields)


# --- built-ins and the authors' file ------------------------------------------------------------


def test_builtin_presets_load_and_validate():
    presets = builtin_presets()
    assert list(presets) == BUILTIN_NAMES
    for name in AUTHORS_NAMES:
        p = presets[name]
        assert isinstance(p, PromptPreset) and p.name == name
        assert 0.7 <= p.image_scale <= 0.78 and p.prompt and p.negative_prompt
        assert isinstance(p.render(0), RenderedPrompt)
    assert presets["minimal-wall-color"].slots == {"wall_color": AUTHORS_WALL_COLORS}
    assert all(not presets[n].slots for n in AUTHORS_NAMES if n != "minimal-wall-color")
    # the SynthAd generator's training format: its prompts parse back into scene attributes
    from reliable_ad.synthad import attributes_from_prompt

    rendered = presets["synthad"].render(0, caption="a small red lipstick")
    attrs = attributes_from_prompt(rendered.prompt)
    assert attrs.wall == rendered.slot_values["wall_color"] and attrs.surface == rendered.slot_values["surface"]
    builtin_presets().clear()  # a copy: callers cannot break the registry
    assert list(builtin_presets()) == BUILTIN_NAMES


def test_default_generate_config_preset_is_builtin():
    from reliable_ad.generation.config import GenerateConfig

    from reliable_ad.generation.config import ModelConfig
    from reliable_ad.generation.models import MODEL_PRESETS

    assert GenerateConfig().prompt_preset in builtin_presets()
    for name in MODEL_PRESETS:  # every model preset's own prompt preset exists
        assert GenerateConfig(model=ModelConfig(model=name)).prompt_preset in builtin_presets()


def test_builtin_presets_match_the_authors_file(reference):
    raw = json.loads(reference.read_text(encoding="utf-8"))
    authors = load_presets(reference)
    assert list(authors) == [f"preset_{i}" for i in range(5)]
    assert len(raw) == len(AUTHORS_NAMES)
    for item, name, theirs in zip(raw, AUTHORS_NAMES, authors.values(), strict=True):
        ours = builtin_presets()[name]
        assert ours.image_scale == theirs.image_scale == item["image_scale"]
        assert ours.slots == theirs.slots
        for colour in AUTHORS_WALL_COLORS:
            fixed = {"wall_color": colour} if ours.slots else {}
            a, b = ours.render(0, slot_values=fixed), theirs.render(0, slot_values=fixed)
            assert (a.prompt, a.negative_prompt) == (b.prompt, b.negative_prompt)
            # ... and to the authors' own filling of "{}" with str.format.
            expected = item["prompt"].format(colour) if item["flag"] else item["prompt"]
            assert (a.prompt, a.negative_prompt) == (expected, item["negative_prompt"])


def test_authors_format_flag_matting_and_literal_braces(tmp_path, caplog):
    items = [
        {"prompt": "a {} wall, {{logo}}", "negative_prompt": "no {braces}", "image_scale": 0.7, "matting": False, "flag": 1},
        {"prompt": "plain {x}", "image_scale": 0.8, "flag": 0},
    ]
    path = write(tmp_path, "theirs.json", json.dumps(items))
    with caplog.at_level(logging.DEBUG, logger="reliable_ad.generation.prompts"):
        presets = load_presets(path)
    assert "matting" in caplog.text
    first = presets["preset_0"].render(5, slot_values={"wall_color": "cream"})
    assert first.prompt == "a cream wall, {logo}" and first.negative_prompt == "no {braces}"
    assert presets["preset_1"].render(0).prompt == "plain {x}" and not presets["preset_1"].slots

    items[0]["matting"] = True
    with caplog.at_level(logging.WARNING, logger="reliable_ad.generation.prompts"):
        load_presets(write(tmp_path, "matting.json", json.dumps(items)))
    assert "not supported" in caplog.text


# --- rendering ----------------------------------------------------------------------------------


def test_render_is_deterministic_and_covers_every_value():
    p = builtin_presets()["minimal-wall-color"]
    assert p.render(7) == p.render(7)
    seen = {p.render(seed).slot_values["wall_color"] for seed in range(200)}
    assert seen == set(AUTHORS_WALL_COLORS)
    rendered = p.render(3)
    assert f"{rendered.slot_values['wall_color']} walls" in rendered.prompt and "{" not in rendered.prompt


def test_render_shares_slot_values_and_keeps_escaped_braces():
    p = preset(prompt="{{logo}} on a {color} table", negative_prompt="no {color} stains", slots={"color": ["red", "blue"]})
    r = p.render(1)
    c = r.slot_values["color"]
    assert r.prompt == f"{{logo}} on a {c} table" and r.negative_prompt == f"no {c} stains"
    assert p.slots == {"color": ("red", "blue")}  # lists become tuples
    assert p.render(1, slot_values={"color": "green"}).prompt == "{logo} on a green table"
    with pytest.raises(ValueError, match="no slot 'colour'"):
        p.render(1, slot_values={"colour": "green"})
    with pytest.raises(TypeError, match="seed"):
        p.render("1")


def test_caption_slot_is_filled_per_product_and_never_drawn():
    p = preset(prompt="{caption} on a {color} table", negative_prompt="no {color} stains")
    assert p.uses_caption and not preset().uses_caption
    r = p.render(1, caption="  a small\nred lipstick ")
    assert r.prompt == f"a small red lipstick on a {r.slot_values['color']} table"
    assert "caption" not in r.slot_values  # not a drawn slot: records and retries keep only drawn ones
    assert p.render(1, caption="a sofa").slot_values == r.slot_values  # the draw ignores the caption
    for missing in (None, "", "  "):
        with pytest.raises(ValueError, match=r"\{caption\}.*give each product a caption"):
            p.render(1, caption=missing)
    assert preset().render(1, caption="ignored").prompt == preset().render(1).prompt
    fallback = preset(prompt="{caption} on a {color} table", caption_default="a product")
    assert fallback.render(1).prompt.startswith("a product on a ") and fallback.render(1, caption="a mug").prompt \
        .startswith("a mug on a ")
    with pytest.raises(ValueError, match="caption_default"):
        preset(prompt="{caption} on a table", slots={}, caption_default=" ")
    with pytest.raises(ValueError, match="reserved for the product's caption"):
        preset(prompt="{caption} on a table", slots={"caption": ["x"]})


def test_the_synthad_preset_names_the_product():
    r = get_preset("synthad").render(0, caption="a large teal sofa")
    assert r.prompt.startswith("a large teal sofa on a ")
    assert get_preset("synthad").render(0).prompt.startswith("a product on a ")  # a cut-out without a caption


def test_preset_is_frozen_and_hashable():
    p = preset()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.prompt = "x"
    assert hash(p) == hash(preset())


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(image_scale=0), r"preset 'p': image_scale=0 must be .*\(0, 1\]"),
        (dict(image_scale=1.5), r"image_scale=1\.5"),
        (dict(image_scale=True), r"image_scale=True"),
        (dict(image_scale="0.7"), r"image_scale='0\.7'"),
        (dict(name=""), r"preset name '' must be"),
        (dict(prompt="  "), r"prompt is empty"),
        (dict(negative_prompt=None), r"negative_prompt=None must be a string"),
        (dict(keep_loc="yes"), r"keep_loc='yes'"),
        (dict(prompt="a {colour} table"), r"slot \{colour\} is used .* not declared"),
        (dict(prompt="a table"), r"slot 'color' is declared but never used"),
        (dict(slots={"color": []}), r"slot 'color' needs at least one value"),
        (dict(slots={"color": "red"}), r"slot 'color' has 'red'; give a list"),
        (dict(slots={"color": ["red", ""]}), r"needs at least one value, all non-empty"),
        (dict(prompt="a {} table"), r"slot \{\} .* not a plain named slot"),
        (dict(prompt="a {color:>9} table"), r"not a plain named slot"),
        (dict(prompt="a {color} table }"), r"Single '\}'.*literal braces"),
        (dict(negative_prompt="{oops"), r"negative_prompt: .*literal braces"),
    ],
)
def test_preset_validation_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        preset(**overrides)


def test_keep_loc_and_int_scale():
    p = preset(image_scale=1, keep_loc=True)
    assert p.image_scale == 1.0 and isinstance(p.image_scale, float) and p.keep_loc


# --- files --------------------------------------------------------------------------------------

OURS_YAML = """
presets:
  warm:
    prompt: "a product on a {wall} table, (bright:1.2)"
    negative_prompt: "lowres"
    image_scale: 0.75
    slots:
      wall: [oak, walnut]
  plain:
    prompt: "a product"
    image_scale: 0.7
    keep_loc: true
"""


def test_our_formats_load(tmp_path):
    presets = load_presets(write(tmp_path, "ours.yaml", OURS_YAML))
    assert list(presets) == ["warm", "plain"]
    assert presets["warm"].slots == {"wall": ("oak", "walnut")}
    assert presets["plain"].negative_prompt == "" and presets["plain"].keep_loc
    as_list = [{"name": n, "prompt": p.prompt, "image_scale": p.image_scale} for n, p in presets.items() if not p.slots]
    assert load_presets(write(tmp_path, "list.json", json.dumps(as_list)))["plain"].prompt == "a product"
    assert list(load_presets(write(tmp_path, "nested.yml", "presets:\n  - {name: x, prompt: y, image_scale: 1}\n"))) == ["x"]


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("bad.yaml", "presets: [unclosed", r"bad\.yaml is not valid YAML"),
        ("bad.json", "{'single': quotes}", r"bad\.json is not valid JSON"),
        ("typo.yaml", "presets:\n  a: {prompt: x, image_scal: 0.7}\n", r"typo\.yaml, preset 'a': unknown key\(s\) \['image_scal'\]"),
        ("missing.yaml", "presets:\n  a: {prompt: x}\n", r"missing\.yaml, preset 'a': missing 'image_scale'"),
        ("dup.yaml", "presets:\n  a: {prompt: x, image_scale: 1}\n  a: {prompt: y, image_scale: 1}\n", r"dup\.yaml.*duplicate key 'a'"),
        ("top.yaml", "preset:\n  a: {prompt: x, image_scale: 1}\n", r"top\.yaml: expected a top-level `presets:`"),
        ("extra.yaml", "presets: {}\nmodel: x\n", r"extra\.yaml: expected a top-level"),
        ("empty.yaml", "presets: {}\n", r"empty\.yaml: no presets found"),
        ("scalar.yaml", "hello\n", r"scalar\.yaml: expected `presets:"),
        ("mixed.json", '[{"name": "a", "prompt": "x", "image_scale": 1}, {"prompt": "y", "image_scale": 1}]', r"preset 1 has no `name`"),
        ("dupname.json", '[{"name": "a", "prompt": "x", "image_scale": 1}, {"name": "a", "prompt": "y", "image_scale": 1}]', r"used twice"),
        ("value.yaml", "presets:\n  a: {prompt: x, image_scale: 2}\n", r"value\.yaml: preset 'a': image_scale=2"),
        ("flag.json", '[{"prompt": "a {}", "image_scale": 0.7, "flag": 2}]', r"flag\.json, preset 0: flag=2"),
        ("akey.json", '[{"prompt": "a", "image_scale": 0.7, "flags": 1}]', r"akey\.json, preset 0: unknown key\(s\) \['flags'\]"),
        ("aslot.json", '[{"prompt": "a {color}", "image_scale": 0.7, "flag": 1}]', r"only '\{\}' \(the wall colour\)"),
    ],
)
def test_file_errors_name_the_file_and_problem(tmp_path, name, text, match):
    with pytest.raises(ValueError, match=match):
        load_presets(write(tmp_path, name, text))


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.yaml does not exist"):
        load_presets(tmp_path / "nope.yaml")


def test_get_preset(tmp_path, reference):
    assert get_preset("bright-indoor") is builtin_presets()["bright-indoor"]
    path = write(tmp_path, "ours.yaml", OURS_YAML)
    assert get_preset(f"{path}#warm").name == "warm"
    assert get_preset("plain", presets_file=path).keep_loc
    assert get_preset("2", presets_file=reference).slots == {"wall_color": AUTHORS_WALL_COLORS}
    single = write(tmp_path, "one.yaml", "presets:\n  only: {prompt: x, image_scale: 1}\n")
    assert get_preset(single).name == "only"
    with pytest.raises(ValueError, match=r"holds 2 presets .*#NAME"):
        get_preset(path)
    with pytest.raises(ValueError, match=r"has no preset 'cold'; choose one of \['plain', 'warm'\]"):
        get_preset(f"{path}#cold")
    with pytest.raises(ValueError, match=r"unknown prompt preset 'brigth-indoor'; built-in presets are"):
        get_preset("brigth-indoor")
    with pytest.raises(ValueError, match=r"absent\.yaml does not exist"):
        get_preset(tmp_path / "absent.yaml")


# --- background slots (what defect-aware retries step) --------------------------------------------


def test_background_slots_declared_validated_and_set_for_the_authors_format(tmp_path):
    builtins = builtin_presets()
    assert builtins["minimal-wall-color"].background_slots == ("wall_color",)
    assert builtins["synthad"].background_slots == ("wall_color", "surface")  # not the clutter level
    assert builtins["bright-indoor"].background_slots == ()
    text = "presets:\n  a: {prompt: 'a {wall} wall, {mess}', image_scale: 1, slots: {wall: [w], mess: [m]},\n" \
           "      background_slots: [wall]}\n"
    assert load_presets(write(tmp_path, "bg.yaml", text))["a"].background_slots == ("wall",)
    theirs = [{"prompt": "a {} wall", "image_scale": 0.7, "flag": 1}, {"prompt": "plain", "image_scale": 0.7}]
    presets = load_presets(write(tmp_path, "theirs.json", json.dumps(theirs)))
    assert presets["preset_0"].background_slots == ("wall_color",) and presets["preset_1"].background_slots == ()
    with pytest.raises(ValueError, match=r"background slot 'floor' is not a declared slot.*declare it under `slots`"):
        preset(slots={"color": ["red"]}, background_slots=("floor",))
    with pytest.raises(ValueError, match=r"background_slots='color' must be a list of slot names"):
        preset(slots={"color": ["red"]}, background_slots="color")


def test_presets_file_reads_exponent_floats(tmp_path):
    # PyYAML alone reads 75e-2 as the string "75e-2" (YAML 1.1); every command reads it as a number
    presets = load_presets(write(tmp_path, "exp.yaml", "presets:\n  a: {prompt: x, image_scale: 75e-2}\n"))
    assert presets["a"].image_scale == 0.75
