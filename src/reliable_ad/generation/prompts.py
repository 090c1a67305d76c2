"""Prompt presets: the designer-written prompt, negative prompt and product scale of each ad style.

Paper, section "Generation": the authors ship five presets (`data/reference_prompts.json`), one of which
fills a random wall colour. Here a preset is a typed, validated dataclass; random parts are named slots
(`{wall_color}`) filled deterministically from a seed, so every image can be traced to its prompt.
Slots named in `background_slots` describe the scene behind the product (a wall colour); defect-aware
retries step those, and only those, when RFNet finds the product indistinct from its background.
Prompts keep A1111 attention syntax ("(low quality:1.4)"); see `generation.weighting`.
"""

from __future__ import annotations

import functools
import json
import logging
import numbers
import os
import random
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from reliable_ad.core.config import load_yaml
from reliable_ad.core.registry import register

logger = logging.getLogger(__name__)

# The wall colours of the authors' script, in their order (their preset with `flag: 1`).
AUTHORS_WALL_COLORS = ("light pea green", "light yellow", "light pink", "light sky blue", "cream", "silver", "beige")
AUTHORS_SLOT = "wall_color"  # the slot name their positional "{}" becomes
_AUTHORS_KEYS = ("prompt", "negative_prompt", "image_scale", "matting", "flag")
_PRESET_KEYS = ("prompt", "negative_prompt", "image_scale", "slots", "keep_loc", "background_slots", "caption_default")
# The product's own caption, filled per product (not drawn): "{caption} on a wooden table" tells the
# model what the product is, as a real SD1.5 reads "a lipstick" (docs/method.md §2).
CAPTION_SLOT = "caption"


@dataclass(frozen=True)
class RenderedPrompt:
    """A preset's texts with every slot filled; `slot_values` records what was chosen."""

    prompt: str
    negative_prompt: str
    slot_values: dict[str, str]


def _template_fields(text: str, where: str) -> list[str]:
    """Slot names used by `text`; literal braces are written `{{` and `}}`."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise ValueError(f"{where}: {e} in {text!r}; write literal braces as '{{{{' and '}}}}'") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(
                f"{where}: slot {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} "
                f"in {text!r} is not a plain named slot; write it as {{slot_name}} (e.g. {{wall_color}}) "
                "and declare it under `slots`, or escape literal braces as '{{{{' and '}}}}'"
            )
        names.append(name)
    return names


@dataclass(frozen=True)
class PromptPreset:
    """One ad style. `prompt` and `negative_prompt` may contain named slots such as `{wall_color}`,
    each declared in `slots` with the values to draw from, and `{caption}`, the product's caption
    (never declared: each product brings its own).

    `background_slots` names the slots that describe the background (the wall colour; not the clutter
    around the product): a defect-aware retry after Indistinctiveness steps these to their next value.
    None are stepped unless declared (a slot's meaning cannot be guessed from its name); presets read
    from the authors' format declare their wall colour slot.
    """

    name: str
    prompt: str
    negative_prompt: str
    image_scale: float  # the product's longer side as a fraction of the canvas side, in (0, 1]
    slots: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    keep_loc: bool = False  # keep the product where it is in its photo instead of centring it
    background_slots: tuple[str, ...] = ()  # slots describing the background, stepped by defect-aware retries
    caption_default: str | None = None  # what {caption} says for a product without one; None: it is refused
    uses_caption: bool = field(init=False, default=False, compare=False)  # the prompt has {caption}

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"preset name {self.name!r} must be a non-empty string")
        where = f"preset {self.name!r}"
        for key in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"{where}: {key}={getattr(self, key)!r} must be a string")
        if not self.prompt.strip():
            raise ValueError(f"{where}: prompt is empty; describe the scene, e.g. 'a product on a wooden table'")
        scale = self.image_scale
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 < scale <= 1:
            raise ValueError(
                f"{where}: image_scale={scale!r} must be a number in (0, 1] (the product's longer side as a "
                "fraction of the canvas; the authors use 0.70-0.78)"
            )
        object.__setattr__(self, "image_scale", float(scale))
        if not isinstance(self.keep_loc, bool):
            raise ValueError(f"{where}: keep_loc={self.keep_loc!r} must be true or false")
        object.__setattr__(self, "slots", self._checked_slots(where))
        background = self.background_slots
        if isinstance(background, str) or not isinstance(background, (list, tuple)):
            raise ValueError(f"{where}: background_slots={background!r} must be a list of slot names, e.g. [wall_color]")
        for name in background:
            if name not in self.slots:
                raise ValueError(f"{where}: background slot {name!r} is not a declared slot (slots: {sorted(self.slots)}); "
                                 "declare it under `slots` or remove it from background_slots")
        if len(set(background)) != len(background):
            raise ValueError(f"{where}: background_slots={list(background)} names a slot twice; name each once")
        object.__setattr__(self, "background_slots", tuple(background))

        used = set(_template_fields(self.prompt, f"{where}, prompt"))
        used |= set(_template_fields(self.negative_prompt, f"{where}, negative_prompt"))
        if CAPTION_SLOT in self.slots:
            raise ValueError(f"{where}: slot {CAPTION_SLOT!r} is reserved for the product's caption and filled per "
                             "product; remove it from `slots` (the prompt's {caption} is filled without it)")
        object.__setattr__(self, "uses_caption", CAPTION_SLOT in used)
        if self.caption_default is not None and (not isinstance(self.caption_default, str)
                                                 or not self.caption_default.strip()):
            raise ValueError(f"{where}: caption_default={self.caption_default!r} must be a non-empty string such as "
                             "'a product', or left out (then a product without a caption is refused)")
        used.discard(CAPTION_SLOT)
        undeclared, unused = sorted(used - set(self.slots)), sorted(set(self.slots) - used)
        if undeclared:
            name = undeclared[0]
            raise ValueError(
                f"{where}: slot {{{name}}} is used in the prompt but not declared; add `slots: {{{name}: [...]}}` "
                "with its values, or write literal braces as '{{{{' and '}}}}'"
            )
        if unused:
            name = unused[0]
            raise ValueError(f"{where}: slot {name!r} is declared but never used; add {{{name}}} to the prompt or remove it")

    def _checked_slots(self, where: str) -> dict[str, tuple[str, ...]]:
        if not isinstance(self.slots, Mapping):
            raise ValueError(f"{where}: slots={self.slots!r} must be a mapping of slot name to a list of values")
        out = {}
        for name, values in self.slots.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"{where}: slot name {name!r} must be an identifier such as 'wall_color'")
            if isinstance(values, str) or not isinstance(values, (list, tuple)):
                raise ValueError(f"{where}: slot {name!r} has {values!r}; give a list of values, e.g. [cream, beige]")
            if not values or not all(isinstance(v, str) and v for v in values):
                raise ValueError(f"{where}: slot {name!r} needs at least one value, all non-empty strings; got {values!r}")
            out[name] = tuple(values)
        return out

    def render(self, seed: int, *, slot_values: Mapping[str, str] | None = None,
               caption: str | None = None) -> RenderedPrompt:
        """Fill the slots with values drawn by `random.Random(seed)` (same seed, same texts).

        `slot_values` fixes some slots explicitly (e.g. to reproduce an earlier image); `caption` fills
        `{caption}` (else the preset's `caption_default`; one of them is required when the preset uses it;
        the draw of the other slots does not depend on it).
        """
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        fixed = dict(slot_values or {})
        for name, value in fixed.items():
            if name not in self.slots:
                raise ValueError(f"preset {self.name!r} has no slot {name!r}; its slots are {sorted(self.slots)}")
            if not isinstance(value, str):
                raise ValueError(f"preset {self.name!r}: slot value {name}={value!r} must be a string")
        rng = random.Random(seed)
        values = {}
        for name in sorted(self.slots):  # fixed order: the draw must not depend on dict order
            drawn = rng.choice(self.slots[name])
            values[name] = fixed.get(name, drawn)
        texts = dict(values)
        if self.uses_caption:
            if not isinstance(caption, str) or not caption.strip():
                caption = self.caption_default
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"preset {self.name!r} writes the product's caption into its prompt ({{caption}}) "
                                 f"but the product has none (caption={caption!r}); give each product a caption "
                                 "(the caption column of the product list, or --caption)")
            texts[CAPTION_SLOT] = " ".join(caption.split())
        return RenderedPrompt(
            prompt=self.prompt.format_map(texts),
            negative_prompt=self.negative_prompt.format_map(texts),
            slot_values=values,
        )


# --- files --------------------------------------------------------------------------------------


def _parse_text(text: str, source: str, as_json: bool) -> Any:
    if as_json:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"presets file {source} is not valid JSON: {e}") from None
    try:
        return load_yaml(text)  # the YAML reader of every command: duplicate keys are errors
    except ValueError as e:
        raise ValueError(f"presets file {source} is not valid YAML: {str(e).removeprefix('invalid YAML: ')}") from None


def _authors_template(text: str, flag: int, where: str) -> str:
    """The authors' script formats flagged prompts with a colour ("{}"); other texts are literal."""
    if flag == 0:
        return text.replace("{", "{{").replace("}", "}}")
    out = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise ValueError(f"{where}: {e} in {text!r}") from None
    for literal, name, spec, conversion in parsed:
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        if name not in ("", "0") or spec or conversion:
            raise ValueError(f"{where}: only '{{}}' (the wall colour) can be filled in the authors' format; found {{{name}}}")
        out.append("{" + AUTHORS_SLOT + "}")
    return "".join(out)


def _from_authors(items: list, source: str) -> dict[str, PromptPreset]:
    presets = {}
    for i, item in enumerate(items):
        where = f"{source}, preset {i}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a mapping with keys {list(_AUTHORS_KEYS)}, got {item!r}")
        unknown = sorted(set(item) - set(_AUTHORS_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} in the authors' format; known keys are {list(_AUTHORS_KEYS)}")
        for key in ("prompt", "image_scale"):
            if key not in item:
                raise ValueError(f"{where}: missing {key!r}")
        if not isinstance(item["prompt"], str) or not isinstance(item.get("negative_prompt", ""), str):
            raise ValueError(f"{where}: prompt and negative_prompt must be strings")
        flag = item.get("flag", 0)
        if not isinstance(flag, int) or flag not in (0, 1):
            raise ValueError(f"{where}: flag={flag!r} must be 0 (fixed prompt) or 1 (fill '{{}}' with a wall colour)")
        # `matting` is false in every released preset and the paper does not say what it switches;
        # it is accepted so their file loads, and otherwise ignored.
        matting = item.get("matting", False)
        if matting:
            logger.warning("%s: matting=%r is not supported (its meaning is unknown); ignored", where, matting)
        else:
            logger.debug("%s: matting=%r ignored", where, matting)
        # Only the prompt is filled: no released negative prompt has a '{}'.
        prompt = _authors_template(item["prompt"], int(flag), where)
        negative = _authors_template(item.get("negative_prompt", ""), 0, where)
        slots = {AUTHORS_SLOT: AUTHORS_WALL_COLORS} if AUTHORS_SLOT in _template_fields(prompt, where) else {}
        name = f"preset_{i}"
        presets[name] = PromptPreset(name, prompt, negative, item["image_scale"], slots=slots,
                                     background_slots=tuple(slots))  # their one slot is the wall colour
    return presets


def _from_ours(entries: list[tuple[Any, Any]], source: str) -> dict[str, PromptPreset]:
    presets: dict[str, PromptPreset] = {}
    for name, body in entries:
        where = f"{source}, preset {name!r}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{source}: preset name {name!r} must be a non-empty string")
        if name in presets:
            raise ValueError(f"{where}: the name is used twice; preset names must be unique")
        if not isinstance(body, dict):
            raise ValueError(f"{where}: expected a mapping with keys {list(_PRESET_KEYS)}, got {body!r}")
        unknown = sorted(set(body) - set(_PRESET_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {list(_PRESET_KEYS)} (check the spelling)")
        for key in ("prompt", "image_scale"):
            if key not in body:
                raise ValueError(f"{where}: missing {key!r}")
        presets[name] = PromptPreset(
            name=name,
            prompt=body["prompt"],
            negative_prompt=body.get("negative_prompt", ""),
            image_scale=body["image_scale"],
            slots=body.get("slots") or {},
            keep_loc=body.get("keep_loc", False),
            background_slots=body.get("background_slots") or (),
            caption_default=body.get("caption_default"),
        )
    return presets


def _named_entries(items: list, source: str) -> list[tuple[Any, Any]]:
    entries = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "name" not in item:
            raise ValueError(f"{source}: preset {i} has no `name` (got {str(item)[:80]!r}); give every preset a name")
        entries.append((item["name"], {k: v for k, v in item.items() if k != "name"}))
    return entries


def _presets_from_data(data: Any, source: str) -> dict[str, PromptPreset]:
    try:
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"presets"})
            if unknown or "presets" not in data:
                raise ValueError(f"expected a top-level `presets:` key and nothing else; got keys {sorted(data)}")
            body = data["presets"]
            if isinstance(body, dict):
                presets = _from_ours(list(body.items()), source)
            elif isinstance(body, list):
                presets = _from_ours(_named_entries(body, source), source)
            else:
                raise ValueError(f"`presets` must be a mapping of name to preset, got {str(body)[:80]!r}")
        elif isinstance(data, list) and data and all(isinstance(d, dict) and "name" not in d for d in data):
            presets = _from_authors(data, source)
        elif isinstance(data, list):
            presets = _from_ours(_named_entries(data, source), source)
        else:
            raise ValueError(
                "expected `presets: {name: {prompt, negative_prompt, image_scale, slots}}`, a list of presets "
                f"each with a `name`, or the authors' list of presets; got {type(data).__name__} {str(data)[:80]!r}"
            )
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    if not presets:
        raise ValueError(f"{source}: no presets found")
    return presets


def load_presets(path: str | os.PathLike) -> dict[str, PromptPreset]:
    """Read presets from YAML or JSON: our format or the authors' `reference_prompts.json`.

    Our format: `presets: {name: {prompt, negative_prompt, image_scale, slots: {wall_color: [...]},
    keep_loc, background_slots: [wall_color]}}` or a list of such mappings each with a `name`. Unknown keys are errors. The authors'
    format (a list of {prompt, negative_prompt, image_scale, matting, flag}) is recognised by its lack
    of names; its presets are named preset_0, preset_1, ... and `flag: 1` turns "{}" into {wall_color}
    with their seven colours. Its `matting` key is accepted and ignored: what it switches is not
    documented, and it is false in every released preset.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"presets file {path} does not exist (or is not a file); check the path, or leave "
                         "--presets-file out to use the built-in presets")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"presets file {path} cannot be read: {e}") from None
    data = _parse_text(text, str(path), as_json=path.suffix.lower() == ".json")
    return _presets_from_data(data, str(path))


@functools.lru_cache(maxsize=1)
def _builtin() -> dict[str, PromptPreset]:
    resource = resources.files("reliable_ad") / "presets" / "default.yaml"
    source = "reliable_ad/presets/default.yaml"
    return _presets_from_data(_parse_text(resource.read_text(encoding="utf-8"), source, as_json=False), source)


def builtin_presets() -> dict[str, PromptPreset]:
    """The authors' five presets under descriptive names (`reliable_ad/presets/default.yaml`)."""
    return dict(_builtin())


def _pick(presets: dict[str, PromptPreset], key: str, source: str) -> PromptPreset:
    if key in presets:
        return presets[key]
    if key.isdigit() and int(key) < len(presets):  # an index, e.g. into the authors' unnamed list
        return list(presets.values())[int(key)]
    raise ValueError(f"{source} has no preset {key!r}; choose one of {sorted(presets)}")


def get_preset(name_or_path: str | os.PathLike, presets_file: str | os.PathLike | None = None) -> PromptPreset:
    """Resolve a preset: a built-in name, `FILE` holding one preset, `FILE#NAME`, or a name (or index)
    in `presets_file`."""
    key = os.fspath(name_or_path)
    if presets_file is not None:
        return _pick(load_presets(presets_file), key, f"presets file {os.fspath(presets_file)}")
    builtins = _builtin()
    if key in builtins:
        return builtins[key]
    if "#" in key:
        file, _, name = key.rpartition("#")
        if Path(file).is_file():
            return _pick(load_presets(file), name, f"presets file {file}")
    if Path(key).is_file():
        presets = load_presets(key)
        if len(presets) == 1:
            return next(iter(presets.values()))
        raise ValueError(f"presets file {key} holds {len(presets)} presets {sorted(presets)}; pick one with {key}#NAME")
    if isinstance(name_or_path, os.PathLike) or Path(key).suffix.lower() in (".yaml", ".yml", ".json"):
        raise ValueError(f"presets file {key} does not exist")
    raise ValueError(f"unknown prompt preset {key!r}; built-in presets are {sorted(builtins)}, or give a YAML/JSON file")


# --- the registry's "prompt" kind (`reliable-ad models --kind prompt`) ----------------------------------


def _summary(preset: PromptPreset, width: int = 80) -> str:
    """One line: the image scale and the start of the prompt."""
    text = " ".join(preset.prompt.split())
    text = text if len(text) <= width else text[: width - 3].rstrip(" ,") + "..."
    return f"image_scale {preset.image_scale}: {text}"


for _name, _preset in _builtin().items():
    register("prompt", _name, _summary(_preset), _preset)
del _name, _preset
