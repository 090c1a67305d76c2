"""Statistics of human labels and rankings (docs/method.md §6): inter-annotator agreement
(Cohen's and Fleiss' kappa), majority votes, preference aggregation (mean rank, pairwise win
rates with Wilson intervals) and the RFNet uncertainty that orders the active-learning queue.

Pure functions on plain Python data: no database, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations

from reliable_ad.data.records import uncertainty as record_uncertainty

__all__ = [
    "cohen_kappa", "fleiss_kappa", "majority", "mean_ranks", "pairwise_wins", "wilson_interval",
    "uncertainty", "parse_ranking", "json_safe",
]

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Cohen's kappa of two annotators' labels on the same items, in item order.

    None when it is undefined: no items, or chance agreement of 1 (both always gave one same class).
    """
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs two label lists of one length, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    classes = set(a) | set(b)
    expected = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in classes)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from an items x classes table of vote counts.

    Items may have different numbers of raters (each needs at least two; others are ignored): the
    per-item agreement is then taken over each item's own raters, which equals Fleiss' formula
    when every item has the same number. None when undefined (no usable items, or all votes in one
    class).
    """
    rows = [list(r) for r in counts if sum(r) >= 2]
    if not rows:
        return None
    width = max(len(r) for r in rows)
    totals = [0] * width
    p_items = []
    for r in rows:
        n_i = sum(r)
        p_items.append((sum(c * c for c in r) - n_i) / (n_i * (n_i - 1)))
        for j, c in enumerate(r):
            totals[j] += c
    n_votes = sum(totals)
    p_bar = sum(p_items) / len(p_items)
    p_e = sum((t / n_votes) ** 2 for t in totals)
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def majority(votes: Iterable[int]) -> tuple[int, float] | None:
    """(label, share of votes) of the most frequent label; ties go to the lowest class index, as
    :func:`reliable_ad.data.readers.read_annotation_export` decides them. None for no votes."""
    tally: dict[int, int] = {}
    for v in votes:
        tally[v] = tally.get(v, 0) + 1
    if not tally:
        return None
    top = max(tally.values())
    label = min(k for k, c in tally.items() if c == top)
    return label, top / sum(tally.values())


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17 off
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def mean_ranks(rankings: Iterable[Sequence[str]]) -> dict[str, dict[str, float]]:
    """Per method: mean rank (1 = best), its 95% normal interval and the number of rankings.

    Each ranking lists methods best first; a method missing from a ranking is not counted there.
    """
    ranks: dict[str, list[int]] = {}
    for ranking in rankings:
        for position, method in enumerate(ranking, 1):
            ranks.setdefault(method, []).append(position)
    out = {}
    for method, values in sorted(ranks.items()):
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        half = Z95 * math.sqrt(var / n) if n > 1 else float("nan")
        out[method] = {"mean_rank": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}
    return out


def pairwise_wins(rankings: Iterable[Sequence[str]]) -> list[dict]:
    """For each ordered pair (a, b) of methods seen together: how often a was ranked above b, with a
    Wilson 95% interval. Rows come in a stable order (a, then b)."""
    wins: dict[tuple[str, str], int] = {}
    seen: dict[tuple[str, str], int] = {}
    for ranking in rankings:
        for hi, lo in combinations(ranking, 2):  # hi is ranked above lo
            wins[(hi, lo)] = wins.get((hi, lo), 0) + 1
            for pair in ((hi, lo), (lo, hi)):
                seen[pair] = seen.get(pair, 0) + 1
    rows = []
    for (a, b), n in sorted(seen.items()):
        w = wins.get((a, b), 0)
        low, high = wilson_interval(w, n)
        rows.append({"method": a, "versus": b, "wins": w, "n": n, "win_rate": w / n, "ci_low": low, "ci_high": high})
    return rows


def uncertainty(verdict: Mapping | None) -> float | None:
    """RFNet's uncertainty about one image in [0, 1], from a record's verdict (``probs`` keyed by class
    as `run` and `inspect` write it, or a list in class order); see :func:`reliable_ad.data.records.uncertainty`."""
    if not isinstance(verdict, Mapping):
        return None
    probs = verdict.get("probs")
    if isinstance(probs, Mapping):
        probs = list(probs.values())
    return record_uncertainty(probs if isinstance(probs, (list, tuple)) else None, verdict.get("p_available"))


def parse_ranking(value: str | Sequence[int], n: int) -> list[int]:
    """Positions (0-based, into the order shown) from best to worst.

    ``value`` is what the annotator typed, the 1-based positions of the shown images from best to
    worst ("1423": the first image is best, then the fourth, ...; with ten or more images separate
    them: "1,10,2,..."), or a list of 1-based positions. It must name every image exactly once.
    """
    if isinstance(value, str):
        text = value.strip()
        parts = [p for p in text.replace(",", " ").split()] if ("," in text or " " in text or n > 9) else list(text)
        try:
            positions = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"ranking {value!r} must list image numbers 1..{n}, best first, e.g. "
                             f"{''.join(str(i) for i in range(1, n + 1))!r}") from None
    elif isinstance(value, (list, tuple)) and all(isinstance(p, int) and not isinstance(p, bool) for p in value):
        positions = list(value)
    else:
        raise ValueError(f"ranking {value!r} must be a string such as '1423' or a list of image numbers")
    if sorted(positions) != list(range(1, n + 1)):
        raise ValueError(f"ranking {value!r} must name each of the images 1..{n} exactly once")
    return [p - 1 for p in positions]


def json_safe(value):
    """A copy with NaN (an undefined interval) as None: JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
