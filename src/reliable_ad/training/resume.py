"""The check that a rerun into an existing run folder continues the same run (generation, Recurrent
Generation, RFNet training, RFFT): the settings that change the result must equal those in the
folder's config.json; the others (how long, how often to log or checkpoint) may change. Torch-free.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from reliable_ad import __version__
from reliable_ad.core.io import atomic_write_json

CONFIG_FILE = "config.json"
VERSION_KEY = "reliable_ad_version"  # written beside the config; never part of the identity

_ABSENT = object()


def _get(data: Any, dotted: str) -> Any:
    node = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return _ABSENT
        node = node[key]
    return node


def _drop(data: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = data
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def identity_view(config: dict, identity_keys: Sequence[str], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """``{key: value}`` for each dotted key of ``identity_keys`` (absent ones left out), without the
    dotted paths in ``ignore``: what a resumed run must share with the run it resumes."""
    pruned = json.loads(json.dumps(config))  # plain JSON values, as config.json holds them (tuples -> lists)
    for dotted in ignore:
        _drop(pruned, dotted)
    view = {key: _get(pruned, key) for key in identity_keys}
    return {k: v for k, v in view.items() if v is not _ABSENT}


def _differences(old: Any, new: Any, where: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(new) + [k for k in old if k not in new]
        return [d for k in keys for d in _differences(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{where}.{k}")]
    return [] if old == new else [where]


def write_run_config(out_dir: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write ``config`` (with the package version) as the run's config.json, atomically."""
    return atomic_write_json(Path(out_dir) / CONFIG_FILE, {**config, VERSION_KEY: __version__})


def check_resume_config(out_dir: str | os.PathLike, new_config: dict[str, Any], identity_keys: Sequence[str], *,
                        ignore: Iterable[str] = (), upgrade: Callable[[dict], dict] | None = None,
                        write: bool = True) -> None:
    """Refuse to continue the run in ``out_dir`` with a config whose identity differs from its config.json.

    ``identity_keys``: dotted keys (``"seed"``, ``"optim"``, ``"runtime.seed"``) whose values must be
    equal; ``ignore``: dotted keys inside them that may change (``"optim.max_steps"``). ``upgrade``
    maps a stored config written by an older version into today's names before the comparison.
    Raises ``ValueError`` naming each differing key (the innermost: ``optim.learning_rate``). Then,
    when ``write``, (re)writes config.json with ``new_config`` (main process only, under several).
    """
    path = Path(out_dir) / CONFIG_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON ({e}); restore it, or choose another --out") from e
        if not isinstance(old, dict):
            raise ValueError(f"{path} does not hold a config mapping; restore it, or choose another --out")
        old = {k: v for k, v in old.items() if k != VERSION_KEY}
        if upgrade is not None:
            old = upgrade(copy.deepcopy(old))
        ignore = list(ignore)
        before, after = identity_view(old, identity_keys, ignore), identity_view(new_config, identity_keys, ignore)
        changed = [d for key in identity_keys for d in _differences(before.get(key, _ABSENT), after.get(key, _ABSENT),
                                                                     key)]
        if changed:
            raise ValueError(
                f"{out_dir} holds a run made with a different config ({', '.join(changed)} differ); "
                "rerun with the same settings to resume, or choose another --out"
            )
    if write:
        write_run_config(out_dir, new_config)
