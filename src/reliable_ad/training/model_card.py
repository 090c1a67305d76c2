"""Hub model cards for what the trainers save: ``README.md`` with YAML front matter (license,
base_model, library_name, pipeline_tag, tags, and the evaluation metrics in the Hub's
``model-index`` form when a run measured them) and a short body, through huggingface_hub's
``ModelCard``/``ModelCardData`` (docs/method.md §3, §5).

Metrics are only ever the run's own measurements; absent ones are left out, never filled in.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reliable_ad.core.io import atomic_write_text

CARD_NAME = "README.md"
LICENSE = "apache-2.0"  # the project's license (pyproject.toml)
LIBRARY = "reliable-ad"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Metric:
    """One measured value: ``type`` a metric id (accuracy, f1, ...), ``split`` where it was measured."""

    type: str
    value: float
    name: str | None = None
    split: str | None = None


@dataclass
class CardInfo:
    """What a card says. ``task`` is the pipeline tag; ``dataset`` names the data the metrics come from."""

    model_name: str
    library_name: str
    task: str
    summary: str
    base_model: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    dataset: str = "held-out split of the training data"
    sections: dict[str, str] = field(default_factory=dict)  # heading -> markdown
    license: str = LICENSE


def hub_ids(*names: Any) -> list[str]:
    """The values that are Hub model ids ("owner/name"), in order, once each; local folders, None and
    packaged names ("tiny") are not base models a Hub page can link to."""
    out: list[str] = []
    for name in names:
        if isinstance(name, str) and _HUB_ID.match(name) and not Path(name).expanduser().exists() and name not in out:
            out.append(name)
    return out


def finite_metrics(values: dict[str, Any], names: dict[str, tuple[str, str]], split: str | None) -> list[Metric]:
    """Metrics from a run's measurements: ``names`` maps a (dotted) key of ``values`` to (metric type,
    display name); missing, null and non-finite values are left out."""
    out = []
    for key, (metric_type, display) in names.items():
        value: Any = values
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append(Metric(metric_type, round(float(value), 4), display, split))
    return out


def build_card(info: CardInfo):
    """A ``huggingface_hub.ModelCard`` for ``info``."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    results = [EvalResult(task_type=info.task, dataset_type="custom", dataset_name=info.dataset,
                          dataset_split=m.split, metric_type=m.type, metric_name=m.name, metric_value=m.value)
               for m in info.metrics]
    data = ModelCardData(model_name=info.model_name, license=info.license, library_name=info.library_name,
                         pipeline_tag=info.task, base_model=info.base_model or None,
                         tags=list(dict.fromkeys([LIBRARY, *info.tags])), eval_results=results or None)
    body = [f"# {info.model_name}", "", info.summary, ""]
    if info.metrics:
        body += ["## Evaluation", "", f"Measured by the training run on the {info.dataset}:", "",
                 "| split | metric | value |", "|---|---|---|"]
        body += [f"| {m.split or '-'} | {m.name or m.type} | {m.value:g} |" for m in info.metrics]
        body.append("")
    for heading, text in info.sections.items():
        body += [f"## {heading}", "", text.strip(), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def write_card(folder: str | os.PathLike, info: CardInfo) -> Path:
    """Write ``folder/README.md`` (atomically) and return its path."""
    return atomic_write_text(Path(folder) / CARD_NAME, str(build_card(info)))


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None when it is absent or unreadable (a card is written without it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
