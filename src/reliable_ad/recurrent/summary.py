"""Statistics of a Recurrent Generation run, computed from its manifest records alone.

Pure functions of the records, so shards written by several processes merge by concatenation.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from reliable_ad.data.records import ManifestRecord


def latest_attempts(records: list[ManifestRecord]) -> dict[str, list[ManifestRecord]]:
    """Judged image records grouped by product, one per attempt (first wins), in attempt order."""
    by_product: dict[str, dict[int, ManifestRecord]] = defaultdict(dict)
    for r in records:
        if not r.is_image or r.attempt is None or r.verdict is None or not r.product_hash:
            continue
        by_product[r.product_hash].setdefault(int(r.attempt), r)
    return {p: [a[k] for k in sorted(a)] for p, a in by_product.items()}


def summarize(records: list[ManifestRecord], max_attempts: int) -> dict:
    products = latest_attempts(records)
    failed = sorted({r.where for r in records if r.failed})
    first_ok: list[int | None] = []
    rejections: Counter = Counter()
    gen_s = judge_s = 0.0
    nsfw = 0
    for attempts in products.values():
        ok = next((a.attempt + 1 for a in attempts if a.accepted and not a.nsfw), None)
        first_ok.append(ok)
        for a in attempts:
            gen_s += float(a.seconds or 0.0)
            judge_s += float(a.inspect_seconds or 0.0)
            if a.nsfw:  # rejected by the safety checker, whatever RFNet said
                nsfw += 1
            elif not a.accepted:
                rejections[a.verdict.label] += 1
    n = len(first_ok)
    available = [k for k in first_ok if k is not None]
    total_attempts = sum(len(a) for a in products.values())
    return {
        "products": n,
        "available": len(available),
        "none_available": n - len(available),
        "failed_products": failed,
        "max_attempts": max_attempts,
        "available_rate_within_k": {
            str(k): (sum(1 for a in available if a <= k) / n if n else 0.0) for k in range(1, max_attempts + 1)
        },
        "mean_attempts_per_available": (sum(available) / len(available)) if available else None,
        "attempts_total": total_attempts,
        "rejections_per_class": dict(sorted(rejections.items())),
        "nsfw": nsfw,  # attempts the safety checker flagged (never accepted, regenerated)
        "seconds": {"generation": round(gen_s, 3), "inspection": round(judge_s, 3), "total": round(gen_s + judge_s, 3)},
        "seconds_per_available_image": round((gen_s + judge_s) / len(available), 3) if available else None,
    }
