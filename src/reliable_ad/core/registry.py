"""The one registry of presets and packaged weights, and the one answer to "is this value a registered
name, a folder, a hub id or a file?".

Kinds (``KINDS``): "model" (generation models, ``--model``), "rfnet" (RFNet configs and trained RFNets,
``--rfnet``), "depth" and "salience" (the estimators of I_d and I_s, docs/method.md §3), "backbone"
(RFNet's image encoder types, ``image_encoder.type``) and "prompt" (prompt presets, ``--preset``).
Each package registers its own kind from the module ``PROVIDERS`` names; the first listing or
lookup of a kind imports that module. Provider modules hold names, one-line descriptions and the
factory or config each name stands for (an object, or ``"module:attr"`` imported on use), and import
no torch, diffusers or transformers at import time, so listing stays light::

    from reliable_ad.core.registry import list_entries, resolve_source
    [e.name for e in list_entries("rfnet")]         # ['tiny', 'rfnet-r50', ..., 'synthad']
    resolve_source("synthad", "rfnet").form          # 'name'   (a registered name wins)
    resolve_source("runs/r0/model", "rfnet").form    # 'folder' (when that folder exists)
    resolve_source("org/model", "rfnet").form        # 'hub'

Packaged weights: the trained SynthAd models ship as data in ``reliable_ad/synthad/weights/``
(``generator/``, ``depth/``, ``salience/``, ``rfnet/``). ``packaged_folder(name)`` finds them by path
and imports no synthad module: synthad is the toy world and sits above core and data only.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import reliable_ad

KINDS = ("model", "rfnet", "depth", "salience", "backbone", "prompt")

# What each kind is, for listings and errors ("unknown depth estimator 'x'").
KIND_TITLES: dict[str, str] = {
    "model": "generation models (base + ControlNet): --model",
    "rfnet": "RFNet configs and trained RFNets: --rfnet, rfnet train --model",
    "depth": "depth estimators (I_d): --depth",
    "salience": "salience estimators (I_s): --salience",
    "backbone": "RFNet image encoder types: image_encoder.type",
    "prompt": "prompt presets: --preset",
}
KIND_LABELS: dict[str, str] = {
    "model": "model",
    "rfnet": "RFNet",
    "depth": "depth estimator",
    "salience": "salience estimator",
    "backbone": "image backbone",
    "prompt": "prompt preset",
}

# The module that registers each kind; imported on the kind's first listing or lookup.
PROVIDERS: dict[str, str] = {
    "model": "reliable_ad.generation.models",
    "rfnet": "reliable_ad.rfnet.presets",
    "depth": "reliable_ad.modalities.registry",
    "salience": "reliable_ad.modalities.registry",
    "backbone": "reliable_ad.rfnet.presets",
    "prompt": "reliable_ad.generation.prompts",
}

# The one hub-id pattern: "owner/name", each part letters, digits, "_", "." or "-", starting with a
# letter or digit (so "./x", "/x" and "~/x" are paths).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9_][\w.-]*$")


def is_hub_id(value: str) -> bool:
    """True for ``"owner/name"`` (what ``from_pretrained`` looks up on the Hugging Face Hub)."""
    return bool(HUB_ID.match(value)) and ".." not in value


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a registry kind; use one of {list(KINDS)}")
    return kind


# --- entries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One registered name: what it is (``description``, one line) and what it stands for.

    ``target`` is the factory or config (an object, or ``"module:attr"`` imported by ``load()``),
    ``hub_id`` the hub model the name is short for, ``packaged`` the folder of packaged weights
    (``packaged_folder``) it loads from. Any of them may be None.
    """

    kind: str
    name: str
    description: str
    target: Any = None
    hub_id: str | None = None
    packaged: str | None = None

    def load(self) -> Any:
        """The target; a ``"module:attr"`` string is imported now (this may import torch)."""
        if not isinstance(self.target, str):
            return self.target
        module, _, attr = self.target.partition(":")
        value: Any = importlib.import_module(module)
        for part in attr.split("."):
            value = getattr(value, part)
        return value

    def folder(self) -> Path:
        """The packaged weights folder; FileNotFoundError naming the fix when it is absent."""
        if self.packaged is None:
            raise ValueError(f"{KIND_LABELS[self.kind]} {self.name!r} has no packaged weights")
        return packaged_folder(self.packaged)


class Registry:
    """kind -> name -> Entry, filled by the ``providers`` modules on first use of a kind."""

    def __init__(self, providers: dict[str, str] | None = None):
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._providers = dict(providers or {})
        self._loaded: set[str] = set()  # kinds whose provider was imported
        self._loading: set[str] = set()  # kinds whose provider is being imported (it may look its kind up)
        self._lock = threading.Lock()  # guards the entries; held only briefly
        self._load_lock = threading.RLock()  # one provider import at a time

    def register(
        self,
        kind: str,
        name: str,
        description: str,
        target: Any = None,
        *,
        hub_id: str | None = None,
        packaged: str | None = None,
        replace: bool = False,
    ) -> Entry:
        check_kind(kind)
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f"{kind} name {name!r} must be a non-empty string without surrounding spaces")
        if not isinstance(description, str) or not description.strip() or "\n" in description:
            raise ValueError(f"{kind} {name!r}: description {description!r} must be one non-empty line")
        if isinstance(target, str) and ":" not in target:
            raise ValueError(f"{kind} {name!r}: target {target!r} must be an object or 'package.module:attribute'")
        if hub_id is not None and not is_hub_id(hub_id):
            raise ValueError(f"{kind} {name!r}: hub_id={hub_id!r} is not a hub id like 'owner/name'")
        if packaged is not None and packaged not in PACKAGED_WEIGHTS:
            raise ValueError(f"{kind} {name!r}: packaged={packaged!r} is not one of {sorted(PACKAGED_WEIGHTS)}")
        entry = Entry(kind, name, description, target, hub_id, packaged)
        with self._lock:
            old = self._entries[kind].get(name)
            if old is not None and old != entry and not replace:
                raise ValueError(
                    f"{kind} {name!r} is already registered ({old.description}); pick another name, "
                    "or pass replace=True to override it"
                )
            self._entries[kind][name] = entry
        return entry

    def _ensure(self, kind: str) -> None:
        check_kind(kind)
        if kind in self._loaded or kind not in self._providers:
            return
        with self._load_lock:
            if kind in self._loaded or kind in self._loading:
                return
            self._loading.add(kind)
            module = self._providers[kind]
            mine = [k for k, m in self._providers.items() if m == module]  # the kinds this module registers
            with self._lock:
                before = {k: dict(self._entries[k]) for k in mine}
            try:
                importlib.import_module(module)
            except BaseException:
                with self._lock:
                    self._entries.update(before)  # a retry (the module runs again) registers from scratch
                raise
            else:
                self._loaded.add(kind)
            finally:
                self._loading.discard(kind)

    def find(self, kind: str, name: str) -> Entry | None:
        self._ensure(kind)
        return self._entries[kind].get(name)

    def get(self, kind: str, name: str) -> Entry:
        entry = self.find(kind, name)
        if entry is None:
            raise ValueError(
                f"unknown {KIND_LABELS[kind]} {name!r}; registered {kind} names: {', '.join(self.names(kind))}"
            )
        return entry

    def entries(self, kind: str) -> list[Entry]:
        self._ensure(kind)
        return list(self._entries[kind].values())

    def names(self, kind: str) -> list[str]:
        return [e.name for e in self.entries(kind)]


REGISTRY = Registry(PROVIDERS)


def register(
    kind: str,
    name: str,
    description: str,
    target: Any = None,
    *,
    hub_id: str | None = None,
    packaged: str | None = None,
    replace: bool = False,
) -> Entry:
    """Register ``name`` under ``kind`` in the package registry (called by each kind's provider module)."""
    return REGISTRY.register(kind, name, description, target, hub_id=hub_id, packaged=packaged, replace=replace)


def get_entry(kind: str, name: str) -> Entry:
    """The entry ``name`` of ``kind``; ValueError listing the registered names when there is none."""
    return REGISTRY.get(kind, name)


def find_entry(kind: str, name: str) -> Entry | None:
    return REGISTRY.find(kind, name)


def list_names(kind: str) -> list[str]:
    """The registered names of ``kind``, in registration order."""
    return REGISTRY.names(kind)


def describe(kind: str) -> dict[str, str]:
    """name -> one-line description, for ``kind``."""
    return {e.name: e.description for e in REGISTRY.entries(kind)}


def list_entries(kind: str | None = None, pattern: str | None = None) -> list[Entry]:
    """Every entry of ``kind`` (all kinds, in ``KINDS`` order, when None) whose name matches the
    fnmatch ``pattern`` (case-insensitive; e.g. ``"rfnet-*"``)."""
    kinds = KINDS if kind is None else (check_kind(kind),)
    found = [e for k in kinds for e in REGISTRY.entries(k)]
    if pattern:
        found = [e for e in found if fnmatch.fnmatch(e.name.lower(), pattern.lower())]
    return found


# --- the resolver --------------------------------------------------------------------------------

NAME, FOLDER, HUB, FILE = "name", "folder", "hub", "file"
FORMS = (NAME, FOLDER, HUB, FILE)


@dataclass(frozen=True)
class Source:
    """What ``resolve_source`` found ``value`` to be: ``form`` is "name" (``entry`` is set), "folder"
    or "file" (``path`` is set, ``~`` expanded) or "hub" (a hub id, ``value`` itself)."""

    value: str
    form: str
    kind: str
    entry: Entry | None = None
    path: Path | None = None

    @property
    def hub_id(self) -> str | None:
        return self.value if self.form == HUB else None

    def __str__(self) -> str:
        """What a loader takes: the path for a folder or file, the value for a name or hub id."""
        return str(self.path) if self.path is not None else self.value


def _forms_text(accept: Sequence[str], kind: str, suffixes: Sequence[str], joiner: str = "or") -> str:
    words = {
        NAME: f"a registered {kind} name",
        FOLDER: "an existing folder",
        HUB: "a hub id like 'org/model'",
        FILE: f"a file ending in {'/'.join(suffixes)}" if suffixes else "an existing file",
    }
    parts = [words[f] for f in FORMS if f in accept]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" {joiner} " + parts[-1]


def resolve_source(
    value: str | os.PathLike,
    kind: str,
    *,
    accept: Iterable[str] = FORMS,
    suffixes: Sequence[str] = (),
    what: str | None = None,
) -> Source:
    """Say whether ``value`` is a registered name of ``kind``, an existing folder, an existing file
    or a hub id ("owner/name"), tried in that order (a registered name wins over a folder of the same
    name). ``accept`` restricts the forms the caller takes; ``suffixes`` the file endings it takes
    (lower case, with the dot; empty: any). ``what`` names the value in errors (default: the kind).

    Errors name the value, what was tried and the names that exist: ValueError, or FileNotFoundError
    for a missing path that ends in one of ``suffixes``.
    """
    check_kind(kind)
    accept = tuple(accept)
    unknown = [f for f in accept if f not in FORMS]
    if unknown or not accept:
        raise ValueError(f"accept={accept!r} must name some of {FORMS}")
    label = what or KIND_LABELS[kind]
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{label} must be a name, folder, hub id or file path (str), got {type(value).__name__} {value!r}")
    text = os.fspath(value)
    if not text.strip():
        raise ValueError(f"{label} is empty; give {_forms_text(accept, kind, suffixes)}")
    takes = f"{label} takes {_forms_text(accept, kind, suffixes)}"
    if NAME in accept:
        entry = REGISTRY.find(kind, text)
        if entry is not None:
            return Source(text, NAME, kind, entry=entry)
    path = Path(text).expanduser()
    if path.is_dir():
        if FOLDER in accept:
            return Source(text, FOLDER, kind, path=path)
        raise ValueError(f"{label} {text!r} is a folder, but {takes}")
    if path.is_file():
        if FILE in accept and (not suffixes or path.suffix.lower() in suffixes):
            return Source(text, FILE, kind, path=path)
        raise ValueError(f"{label} {text!r} is a file, but {takes}")
    if HUB in accept and is_hub_id(text):
        return Source(text, HUB, kind)
    if FILE in accept and suffixes and path.suffix.lower() in suffixes:
        raise FileNotFoundError(f"{label} {text!r}: no such file; check the path ({takes})")
    tried = _forms_text(accept, kind, suffixes, joiner="and")
    if NAME in accept:
        rest = [f for f in accept if f != NAME]
        fix = f"Pass one of those names{', or ' + _forms_text(rest, kind, suffixes) if rest else ''}"
        raise ValueError(f"unknown {label} {text!r}: tried {tried}; none fits. Registered {kind} names: "
                         f"{', '.join(REGISTRY.names(kind))}. {fix}.")
    raise ValueError(f"unknown {label} {text!r}: tried {tried}; none fits. Pass {_forms_text(accept, kind, suffixes)}.")


# --- packaged weights ------------------------------------------------------------------------------

WEIGHTS_DIR = Path(reliable_ad.__file__).resolve().parent / "synthad" / "weights"
REPORT_FILE = "report.json"  # beside the packaged RFNet: how the SynthAd models were trained and scored
# The scripts that train the SynthAd models and install them here (run from a source checkout).
TRAIN_COMMAND = "python -m experiments.synthad.train_rfnet --out DIR --install"
GENERATOR_TRAIN_COMMAND = "python -m experiments.synthad.train_generator --out DIR --install"


@dataclass(frozen=True)
class PackagedWeights:
    name: str  # its folder under WEIGHTS_DIR
    markers: tuple[str, ...]  # files every complete copy holds
    made_by: str  # the command that trains and installs it


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    p.name: p
    for p in (
        PackagedWeights("generator", ("base/model_index.json", "controlnet/config.json"), GENERATOR_TRAIN_COMMAND),
        PackagedWeights("depth", ("config.json",), TRAIN_COMMAND),  # transformers DPT + preprocessor
        PackagedWeights("salience", ("config.json",), TRAIN_COMMAND),  # transformers SegFormer + preprocessor
        PackagedWeights("rfnet", ("config.json",), TRAIN_COMMAND),  # a saved RFNet with modalities.json
    )
}


def packaged_folder(name: str, root: str | os.PathLike | None = None) -> Path:
    """The packaged weights folder ``name`` ("generator", "depth", "salience" or "rfnet") under
    ``root`` (default ``WEIGHTS_DIR``); FileNotFoundError naming the fix when it is incomplete."""
    if name not in PACKAGED_WEIGHTS:
        raise ValueError(f"kind={name!r} is not a packaged SynthAd model; use one of {sorted(PACKAGED_WEIGHTS)}")
    spec = PACKAGED_WEIGHTS[name]
    folder = (Path(root) if root is not None else WEIGHTS_DIR) / name
    missing = [m for m in spec.markers if not (folder / m).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the packaged SynthAd {name} model is missing: {str(folder)!r} has no {missing[0]}. Reinstall "
            f"reliable-ad (its wheel ships synthad/weights/), or train and install it with `{spec.made_by}`"
        )
    return folder
