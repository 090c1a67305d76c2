"""Labelled generated images (docs/method.md §3): read the public RF1M release, our generation
manifests and annotation exports into compact :class:`Sample` lists (RFNet's training and
evaluation data, the annotation importer's RF1M folders).

The RF1M reader and its layout live in `reliable_ad.data.rf1m` (label codes in
`reliable_ad.data.label_codes`, zip archives in `reliable_ad.data.archives`); this module re-exports
it beside the readers of our own JSON Lines. In our own records (manifests, annotation exports) an
integer label is our class index 0..5 (`reliable_ad.core.labels`, 5 = Unsuitable), never an RF1M code.

Readers never fail on one item: a malformed line, an unknown label, a duplicate or a missing file
is recorded as a :class:`Problem` (file, line, message), skipped, and counted in a logged summary.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterator

import numpy as np

from reliable_ad.core.labels import CLASS_NAMES, UNSUITABLE
from reliable_ad.data.label_codes import name_to_raw
from reliable_ad.data.records import iter_manifest
from reliable_ad.data.rf1m import (
    ATTEMPT_SUFFIX,
    LABEL_FILE_NAMES,
    FolderIndex,
    label_map,
    log_summary,
    policy_class_names,
    read_captions,
    read_rf1m,
)
from reliable_ad.data.samples import Problem, ReadResult, Sample

__all__ = [
    "CLASS_NAMES", "UNSUITABLE", "Sample", "Problem", "ReadResult", "parse_label", "policy_class_names",
    "read_rf1m", "read_captions", "read_manifest", "read_annotation_export", "LABEL_FILE_NAMES",
]

logger = logging.getLogger(__name__)


def _raw_label(value: Any) -> int | None:
    """Our class index 0..5 (5 = Unsuitable) from an int or a class name; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if 0 <= value <= 5 else None
    if isinstance(value, str):
        token = value.strip()
        if token.isdigit():
            return int(token) if int(token) <= 5 else None
        return name_to_raw(token)
    return None


def parse_label(value: Any) -> int:
    """Our class index 0..5 of an int or a tolerant class name (5 is Unsuitable). For our own records;
    RF1M label files go through a named code mapping instead (`reliable_ad.data.label_codes`)."""
    raw = _raw_label(value)
    if raw is None:
        raise ValueError(f"label {value!r} is neither an int 0..5 nor one of {(*CLASS_NAMES, UNSUITABLE)}")
    return raw


# ---------------------------------------------------------------------------------------------
# Our own JSON Lines: generation manifests and annotation exports


def _iter_jsonl(path: str, problems: list[Problem]) -> Iterator[tuple[int, dict]]:
    """Records with their line numbers; an unparsable line (a torn last line too) is a problem."""
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(Problem(path, line_no, f"not valid JSON ({e.msg})"))
                continue
            if not isinstance(record, dict):
                problems.append(Problem(path, line_no, f"expected a JSON object, got {type(record).__name__}"))
                continue
            yield line_no, record


def _record_sample(record: dict, folder: str, label: int, source: str, files: FolderIndex | None,
                   agreement: float | None = None) -> Sample | str:
    """A Sample from a manifest or export record, or an error message. Paths are relative to the
    file's folder; a named file (image, product, depth, salience) that is missing is an error."""
    paths: dict[str, str | None] = {}
    for key in ("image", "product", "depth", "salience"):
        value = record.get(key)
        if value is None and key != "image":
            paths[key] = None
            continue
        if not isinstance(value, str) or not value:
            return f"{key!r} must be a non-empty path string, got {value!r}"
        path = os.path.normpath(os.path.join(folder, value))
        if files is not None and not files.exists(path):
            return f"{key} {value!r} not found"
        paths[key] = path
    caption = record.get("caption") or ""
    if not isinstance(caption, str):
        return f"'caption' must be a string, got {type(caption).__name__}"
    pid = record.get("product_id") or record.get("product_hash")
    if not pid:
        named = paths["product"] or paths["image"]
        pid = os.path.splitext(os.path.basename(named))[0]
        pid = pid if paths["product"] else (ATTEMPT_SUFFIX.sub("", pid) or pid)
    return Sample(paths["image"], paths["product"], caption, label, str(pid), source,
                  paths["depth"], paths["salience"], agreement)


def read_manifest(
    path: str | os.PathLike, *, require_label: bool = True, unsuitable: str = "drop", check_files: bool = True,
    use_verdicts: bool = False,
) -> ReadResult:
    """Read our generation manifest (JSON Lines, one record per generated image).

    Records are :class:`reliable_ad.data.records.ManifestRecord` lines: ``image`` and ``product``
    relative to the manifest's folder (a schema-1 product may be relative to the working directory
    the run was started in), ``product_hash``, ``caption``, optional ``depth``/``salience``, and
    ``label`` (int or class name: a human label). RFNet's own
    ``verdict`` is a prediction, not ground truth: it is used as the label only with
    ``use_verdicts=True`` (e.g. to distil one reviewer into another), so that training on an inspected
    run never silently learns from the model's own guesses.
    Records with ``error`` set are generation failures and are skipped; records without a label are
    skipped unless ``require_label=False``, which gives them label -1. The product id is
    ``product_id``, else ``product_hash``, else the product file's stem.
    """
    policy = label_map(unsuitable)
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest {path!r} does not exist")
    folder, name = os.path.split(path)
    files = FolderIndex() if check_files else None
    samples: list[Sample] = []
    problems: list[Problem] = []
    n_failed = n_unlabelled = n_dropped = 0
    for line_no, record in iter_manifest(path):
        if isinstance(record, str):
            problems.append(Problem(path, line_no, record))
            continue
        if record.failed:
            n_failed += 1
            continue
        value = record.label
        if value is None and use_verdicts and record.verdict is not None:
            value = record.verdict.label
        if value is None:
            if require_label:
                n_unlabelled += 1
                continue
            label: int | None = -1
        else:
            raw = _raw_label(value)
            if raw is None:
                problems.append(Problem(path, line_no, f"label {value!r} is not 0..5 or a class name"))
                continue
            label = policy[raw]
        if label is None:
            n_dropped += 1
            continue
        fields = {k: getattr(record, k) for k in ("image", "product", "depth", "salience", "caption", "product_id",
                                                  "product_hash")}
        product = record.resolve(folder, "product")
        if product is not None and record.schema_version < 2:  # schema 1: the product may be cwd-relative
            fields["product"] = str(product)
        sample = _record_sample(fields, folder, label, f"{name}:{line_no}", files)
        if isinstance(sample, str):
            problems.append(Problem(path, line_no, sample))
        else:
            samples.append(sample)
    log_summary("manifest", path, samples, problems, failed_generations=n_failed, unlabelled=n_unlabelled,
                 dropped_unsuitable=n_dropped)
    return ReadResult(samples, problems)


def read_annotation_export(
    path: str | os.PathLike, *, unsuitable: str = "drop", check_files: bool = True
) -> ReadResult:
    """Read an annotation export: JSON Lines with ``image``, ``product``, ``caption`` and ``label``
    or ``votes`` (a list of labels). Votes give the majority label, ties to the lowest class index;
    ``Sample.agreement`` is the share of votes for the final label. With both, ``label`` (an
    adjudicated decision) wins. Majority is taken over raw labels, before the Unsuitable policy.
    """
    policy = label_map(unsuitable)
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation export {path!r} does not exist")
    folder, name = os.path.split(path)
    files = FolderIndex() if check_files else None
    samples: list[Sample] = []
    problems: list[Problem] = []
    n_dropped = 0
    for line_no, record in _iter_jsonl(path, problems):
        votes = record.get("votes")
        raw_votes: list[int | None] = []
        if votes is not None:
            raw_votes = [_raw_label(v) for v in votes] if isinstance(votes, list) else [None]
            if not raw_votes or None in raw_votes:
                problems.append(Problem(path, line_no, f"votes {votes!r} must be a non-empty list of labels"))
                continue
        if record.get("label") is not None:
            raw = _raw_label(record["label"])
            if raw is None:
                problems.append(Problem(path, line_no, f"label {record['label']!r} is not 0..5 or a class name"))
                continue
        elif raw_votes:
            tally = [raw_votes.count(k) for k in range(6)]
            raw = tally.index(max(tally))  # the first maximum: ties go to the lowest index
        else:
            problems.append(Problem(path, line_no, "record has neither 'label' nor 'votes'"))
            continue
        agreement = raw_votes.count(raw) / len(raw_votes) if raw_votes else None
        label = policy[raw]
        if label is None:
            n_dropped += 1
            continue
        sample = _record_sample(record, folder, label, f"{name}:{line_no}", files, agreement)
        if isinstance(sample, str):
            problems.append(Problem(path, line_no, sample))
        else:
            samples.append(sample)
    log_summary("annotation export", path, samples, problems, dropped_unsuitable=n_dropped)
    return ReadResult(samples, problems)


