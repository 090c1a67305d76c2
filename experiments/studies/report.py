"""The SynthAd experiments' report: checks a study's result dict and renders the results as one
markdown page (tables, figure links, run times, each study's own reading of its numbers).
Pure functions on dicts and strings; the driver (benchmarks/synthad_experiments.py) does the files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

STATUS_OK, STATUS_FAILED, STATUS_MISSING = "ok", "failed", "not available"


def check_result(result: Any) -> list[str]:
    """Problems with a ``run_study`` result (empty when well-formed): the keys and types of the
    contract (common.study_result), rows as long as their columns, numbers finite or None."""
    if not isinstance(result, Mapping):
        return [f"the result is a {type(result).__name__}, not a dict"]
    problems = []
    for key, kind in (("tables", Mapping), ("figures", Sequence), ("seconds", (int, float)), ("settings", Mapping)):
        if not isinstance(result.get(key), kind) or isinstance(result.get(key), (str, bool)):
            problems.append(f"'{key}' is missing or not a {getattr(kind, '__name__', 'number')}")
    if problems:
        return problems
    if not math.isfinite(result["seconds"]) or result["seconds"] < 0:
        problems.append(f"'seconds'={result['seconds']!r} must be a finite number >= 0")
    for title, tab in result["tables"].items():
        if not isinstance(tab, Mapping) or not isinstance(tab.get("columns"), list) \
                or not isinstance(tab.get("rows"), list):
            problems.append(f"table {title!r} needs 'columns' and 'rows' lists")
            continue
        for i, row in enumerate(tab["rows"]):
            if not isinstance(row, list) or len(row) != len(tab["columns"]):
                problems.append(f"table {title!r} row {i} has {len(row) if isinstance(row, list) else '?'} cells "
                                f"for {len(tab['columns'])} columns")
                continue
            for cell in row:
                if isinstance(cell, float) and not math.isfinite(cell):
                    problems.append(f"table {title!r} row {i} holds {cell!r}; use None for undefined numbers")
                elif cell is not None and not isinstance(cell, (int, float, str)):
                    problems.append(f"table {title!r} row {i} holds a {type(cell).__name__}")
    for f in result["figures"]:
        if not isinstance(f, str) or f.startswith("/") or ".." in f.split("/"):
            problems.append(f"figure {f!r} must be a path relative to the study's folder")
    return problems


def format_cell(value: Any) -> str:
    """A table cell: None as an en dash, floats with 2 decimals (3 for fractions in (-1, 1), so a
    rate keeps its third digit), text with pipes escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(tab: Mapping[str, Any]) -> str:
    lines = ["| " + " | ".join(format_cell(c) for c in tab["columns"]) + " |",
             "|" + "---|" * len(tab["columns"])]
    lines += ["| " + " | ".join(format_cell(c) for c in row) + " |" for row in tab["rows"]]
    return "\n".join(lines)


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def _settings_line(settings: Mapping[str, Any]) -> str:
    simple = {k: v for k, v in settings.items()
              if isinstance(v, (int, float, str, bool)) or (isinstance(v, list) and len(v) <= 8
                                                            and all(isinstance(x, (int, float, str)) for x in v))}
    return ", ".join(f"{k}={v}" for k, v in simple.items())


def render_report(header: Mapping[str, Any], studies: Mapping[str, Mapping[str, Any]],
                  figure_links: Mapping[str, Sequence[str]]) -> str:
    """The markdown page. ``header``: command, date, machine, seeds, models, total seconds.
    ``studies``: name -> {"status", "result" (for ok), "error" (otherwise), "cached"}.
    ``figure_links``: name -> figure paths relative to the report."""
    out = [f"# SynthAd experiments{' (quick)' if header.get('quick') else ''}", "",
           "The paper's claims (docs/method.md §3-§5) measured on SynthAd, a procedural world whose rule-based oracle "
           "plays the human annotators (`reliable_ad.synthad`). Everything below was computed by one command; "
           "numbers are reported as they came out.", "",
           f"- command: `{header['command']}`",
           f"- date: {header['date']}",
           f"- machine: {header['machine']}",
           f"- generator: `{header['model']}`, RFNet: `{header['rfnet']}`, device: {header['device']}, "
           f"seed: {header['seed']}, denoising steps: {header['steps']}",
           f"- total run time: {format_seconds(header.get('total_seconds'))} (the sum of the studies' own times; "
           f"a study read back from an earlier run keeps its time); this invocation: "
           f"{format_seconds(header.get('this_run_seconds'))}", "",
           "| study | status | run time |", "|---|---|---|"]
    for name, entry in studies.items():
        status = entry["status"] + (" (read back from an earlier run)" if entry.get("cached") else "")
        seconds = entry.get("result", {}).get("seconds") if entry["status"] == STATUS_OK else None
        out.append(f"| {name} | {status} | {format_seconds(seconds)} |")
    for name, entry in studies.items():
        out += ["", f"## {name}", ""]
        if entry["status"] != STATUS_OK:
            out.append(f"**{entry['status']}**: {entry.get('error', '')}".rstrip())
            continue
        result = entry["result"]
        out.append(f"Run time {format_seconds(result['seconds'])}. Settings: {_settings_line(result['settings'])}.")
        for title, tab in result["tables"].items():
            out += ["", f"### {title}", "", markdown_table(tab)]
            if tab.get("note"):
                out += ["", f"*{tab['note']}*"]
        for link in figure_links.get(name, []):
            out += ["", f"![{name}: {link.rsplit('/', 1)[-1]}]({link})"]
        out += ["", "**What this shows.** " + (result.get("summary") or "The study gave no reading of its numbers.")]
    return "\n".join(out) + "\n"
