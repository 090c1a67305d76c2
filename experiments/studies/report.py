"""The SynthAd experiments' report: checks a study's result dict and renders the results as one
markdown page (a verdict table of every study's claims, then tables, figure links, run times, each
study's own reading of its numbers). Pure functions on dicts and strings; the driver
(benchmarks/synthad_experiments.py) does the files.

Claims: a result may carry ``"claims"``, a list of ``make_claim(...)`` dicts (claim, paper, measured,
interval, verdict). The verdict is decided from the 95% interval of the deciding difference by
``claim_verdict``, never written by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

STATUS_OK, STATUS_FAILED, STATUS_MISSING = "ok", "failed", "not available"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
CLAIM_KEYS = ("claim", "paper", "measured", "interval", "verdict")


def claim_verdict(interval: Sequence[float] | None, threshold: float = 0.0, *, above: bool = True) -> str:
    """The verdict on a claim that a quantity lies above ``threshold`` (``above=False``: below it), from
    the 95% interval [lo, hi] of that quantity (for most claims a difference, threshold 0): reproduced
    when the interval lies entirely on the claimed side; not reproduced when it lies entirely on the
    other, touching the threshold counting as the other side (so [0, 0], no unit differing in any
    resample, is not a rise); otherwise, and without an interval, inconclusive."""
    if interval is None:
        return INCONCLUSIVE
    if len(interval) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in interval) \
            or interval[0] > interval[1]:
        raise ValueError(f"interval={interval!r}: expected [lo, hi] with finite lo <= hi, or None when undefined")
    lo, hi = interval
    if above:
        return REPRODUCED if lo > threshold else NOT_REPRODUCED if hi <= threshold else INCONCLUSIVE
    return REPRODUCED if hi < threshold else NOT_REPRODUCED if lo >= threshold else INCONCLUSIVE


def make_claim(claim: str, paper: str, measured: str, interval: Sequence[float] | None) -> dict[str, Any]:
    """One entry of a result's ``claims``, its verdict computed by ``claim_verdict``."""
    bounds = None if interval is None else [round(float(v), 4) for v in interval]
    return {"claim": claim, "paper": paper, "measured": measured, "interval": bounds,
            "verdict": claim_verdict(interval)}


def check_claims(claims: Any) -> list[str]:
    """Problems with a result's ``claims`` (empty when well-formed)."""
    if not isinstance(claims, list):
        return [f"'claims' is a {type(claims).__name__}, not a list"]
    problems = []
    for i, c in enumerate(claims):
        if not isinstance(c, Mapping) or not set(CLAIM_KEYS) <= set(c):
            problems.append(f"claim {i} needs the keys {', '.join(CLAIM_KEYS)}")
            continue
        if c["verdict"] not in VERDICTS:
            problems.append(f"claim {i} has verdict {c['verdict']!r}; expected one of {', '.join(VERDICTS)}")
        interval = c["interval"]
        if interval is not None and not (isinstance(interval, list) and len(interval) == 2 and all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in interval)):
            problems.append(f"claim {i} has interval {interval!r}; expected [lo, hi] or None")
    return problems


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
    if "claims" in result:
        problems += check_claims(result["claims"])
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


def format_interval(interval: Sequence[float] | None) -> str:
    return "–" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"


def verdict_table(studies: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per claim of every study, in study order; a study that did not finish gets one row with
    its status and error where its verdicts would be; a finished study without claims gets none."""
    lines = ["| study | claim | paper | measured | 95% interval | verdict |", "|---|---|---|---|---|---|"]
    for name, entry in studies.items():
        if entry["status"] != STATUS_OK:
            error = format_cell(entry.get("error") or "")
            lines.append(f"| {name} | – | – | – | – | **{entry['status']}**{': ' + error if error else ''} |")
            continue
        for c in entry["result"].get("claims") or []:
            lines.append("| " + " | ".join([name, format_cell(c["claim"]), format_cell(c["paper"]),
                                           format_cell(c["measured"]), format_interval(c["interval"]),
                                           f"**{c['verdict']}**"]) + " |")
    return "\n".join(lines) if len(lines) > 2 else "No study reported claims."


def render_report(header: Mapping[str, Any], studies: Mapping[str, Mapping[str, Any]],
                  figure_links: Mapping[str, Sequence[str]]) -> str:
    """The markdown page. ``header``: command, date, machine, seeds, models, total seconds, jobs.
    ``studies``: name -> {"status", "result" (for ok), "error" (otherwise), "cached", "wall_seconds"
    (this invocation's wall clock, absent when read back)}. ``figure_links``: name -> figure paths
    relative to the report."""
    out = [f"# SynthAd experiments{' (quick)' if header.get('quick') else ''}", "",
           "The paper's claims (docs/method.md §3-§5) measured on SynthAd, a procedural world whose rule-based oracle "
           "plays the human annotators (`reliable_ad.synthad`). Everything below was computed by one command; "
           "numbers are reported as they came out.", "",
           "## Verdicts", "",
           "Each claim's verdict follows from the 95% interval of the difference it rests on: reproduced when "
           "the interval lies above 0, not reproduced when below 0 (or exactly 0), inconclusive when it "
           "includes 0. Negative and inconclusive results stay in.", "",
           verdict_table(studies), "",
           "## Run", "",
           f"- command: `{header['command']}`",
           f"- date: {header['date']}",
           f"- machine: {header['machine']}",
           f"- generator: `{header['model']}`, RFNet: `{header['rfnet']}`, device: {header['device']}, "
           f"seed: {header['seed']}, denoising steps: {header['steps']}",
           f"- total run time: {format_seconds(header.get('total_seconds'))} (the sum of the studies' own times; "
           f"a study read back from an earlier run keeps its time); this invocation: "
           f"{format_seconds(header.get('this_run_seconds'))}"
           + (f" with {header['jobs']} studies at a time" if header.get("jobs", 1) > 1 else ""), "",
           "| study | status | run time | wall clock (this invocation) |", "|---|---|---|---|"]
    for name, entry in studies.items():
        status = entry["status"] + (" (read back from an earlier run)" if entry.get("cached") else "")
        seconds = entry.get("result", {}).get("seconds") if entry["status"] == STATUS_OK else None
        out.append(f"| {name} | {status} | {format_seconds(seconds)} | {format_seconds(entry.get('wall_seconds'))} |")
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
