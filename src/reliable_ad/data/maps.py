"""Where precomputed depth and salience maps live on disk: the layout of the modality cache, shared by
the cache itself (`modalities.cache`, which computes and reads the maps) and by writers that already
know the true maps (`synthad.dataset`). Pure paths: nothing here loads an estimator.

Layout, inside a generation run folder (with ``manifest.jsonl``) or an RF1M-style dataset folder::

    <root>/modalities/meta.json                            {"depth": name, "salience": name, "size": S, ...}
    <root>/modalities/depth/<image relative path>.npy      float16 (S, S) in [0, 1], near = 1
    <root>/modalities/salience/<image relative path>.npy   float16 (S, S) in [0, 1], salient = 1
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = "modalities"
META_FILE = "meta.json"
KINDS = ("depth", "salience")
MAP_SUFFIX = ".npy"


def cache_root(root: str | os.PathLike) -> Path:
    """The modality cache folder of ``root``."""
    return Path(root) / CACHE_DIR


def map_path(root: str | os.PathLike, kind: str, image: str) -> Path:
    """Where the ``kind`` map of ``image`` (relative to ``root``, forward slashes) lives."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    return cache_root(root) / kind / (image + MAP_SUFFIX)
