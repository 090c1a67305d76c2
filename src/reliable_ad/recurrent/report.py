"""report.html: a self-contained page (images and charts embedded) for one Recurrent Generation run.

A contact sheet shows each product beside every attempt with RFNet's verdict and probabilities; the
accepted attempt is framed green, the kept candidate of a product with none available is framed red.
Charts: available rate within k attempts, rejections per class, and where the time went.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from reliable_ad.data.records import NSFW_CAPTION, ManifestRecord, VerdictRecord, blur_flagged
from reliable_ad.core.io import atomic_write_text

THUMB = 160


def _img_uri(image: Image.Image, size: int = THUMB, *, blur: bool = False) -> str:
    im = image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB")
    im.thumbnail((size, size))
    if im.mode == "RGBA":  # cut-outs on a light checkerboard-free grey, so white products stay visible
        bg = Image.new("RGB", im.size, (236, 236, 236))
        bg.paste(im, mask=im.split()[3])
        im = bg
    if blur:
        im = blur_flagged(im, size)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_uri(path: Path | None, *, blur: bool = False) -> str:
    try:
        with Image.open(path) as im:
            return _img_uri(im, blur=blur)
    except (OSError, TypeError, ValueError):
        return ""


def _link(out_dir: Path, record: ManifestRecord, key: str) -> str:
    # a generated image the safety checker flagged is never shown as it is
    return _file_uri(record.resolve(out_dir, key), blur=key == "image" and bool(record.nsfw))


def _charts(summary: dict) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "<p>(charts need matplotlib: pip install matplotlib)</p>"
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    rates = summary["available_rate_within_k"]
    ks = list(rates)
    axes[0].bar(ks, [100 * rates[k] for k in ks], color="#2e7d32")
    axes[0].set(title="available within k attempts", xlabel="k", ylabel="% of products", ylim=(0, 100))
    rej = summary["rejections_per_class"]
    axes[1].barh(list(rej) or ["(none)"], list(rej.values()) or [0], color="#c62828")
    axes[1].set(title="rejections per class", xlabel="attempts")
    sec = summary["seconds"]
    parts = {k: sec[k] for k in ("generation", "inspection") if sec[k] > 0}
    if parts:
        axes[2].pie(list(parts.values()), labels=[f"{k}\n{v:.1f} s" for k, v in parts.items()], colors=["#1565c0", "#f9a825"])
    axes[2].set(title="time")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return f'<img class="chart" alt="charts" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _probs(v: VerdictRecord) -> str:
    top = sorted(v.probs.items(), key=lambda kv: -kv[1])[:3]
    return "<br>".join(f"{html.escape(k)} {p:.2f}" for k, p in top)


def write_report(out_dir: Path, records: list[ManifestRecord], summary: dict) -> Path:
    from reliable_ad.recurrent.summary import latest_attempts

    rows = []
    for attempts in latest_attempts(records).values():
        first = attempts[0]
        product = _link(out_dir, first, "product")
        winner = next((a.attempt for a in attempts if a.accepted and not a.nsfw), None)
        flagged = None
        shippable = [a for a in attempts if not a.nsfw]
        if winner is None and len(attempts) >= summary["max_attempts"] and shippable:
            flagged = max(shippable, key=lambda a: a.verdict.p_available).attempt
        cells = []
        for a in attempts:
            cls = "ok" if a.attempt == winner else ("flag" if a.attempt == flagged else "")
            v = a.verdict
            if a.nsfw:
                cls, note = "nsfw", f'<br><i class="nsfw">{NSFW_CAPTION} (blurred; not accepted)</i>'
            else:
                note = ""
            cells.append(
                f'<figure class="{cls}"><img alt="attempt {a.attempt + 1}" src="{_link(out_dir, a, "image")}">'
                f'<figcaption><b>#{a.attempt + 1} {html.escape(v.label)}</b><br>{_probs(v)}{note}</figcaption></figure>'
            )
        status = f"available at attempt {winner + 1}" if winner is not None else (
            "none available (best kept, flagged)" if flagged is not None else "in progress")
        rows.append(
            f'<section class="product"><figure class="src"><img alt="product" src="{product}">'
            f'<figcaption><b>{html.escape(first.product_id or "")}</b><br>{html.escape(first.caption or "(no caption)")}'
            f'<br><i>{status}</i></figcaption></figure>{"".join(cells)}</section>'
        )
    failed = "".join(f"<li>{html.escape(p)}</li>" for p in summary["failed_products"])
    rate_k = summary["available_rate_within_k"]
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>reliable-ad run report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} h1{{margin:0 0 4px}}
.stats span{{display:inline-block;margin:4px 18px 4px 0}} .chart{{max-width:100%;margin:12px 0}}
.product{{display:flex;gap:10px;align-items:flex-start;border-top:1px solid #ddd;padding:10px 0;overflow-x:auto}}
figure{{margin:0;width:{THUMB}px;flex:none;font-size:12px;border:3px solid transparent;border-radius:4px}}
figure img{{width:{THUMB}px;height:{THUMB}px;object-fit:contain;background:#eee;display:block}}
figure.ok{{border-color:#2e7d32}} figure.flag{{border-color:#c62828}} figure.src{{border-color:#999}}
figure.nsfw{{border-color:#6a1b9a}} .nsfw{{color:#6a1b9a}}
</style></head><body>
<h1>Recurrent Generation report</h1>
<div class="stats"><span><b>{summary['products']}</b> products</span>
<span><b>{summary['available']}</b> available within {summary['max_attempts']} attempts
({100 * rate_k[str(summary['max_attempts'])]:.0f}%)</span>
<span>available at first attempt: <b>{100 * rate_k['1']:.0f}%</b></span>
<span>mean attempts per available image: <b>{_num(summary['mean_attempts_per_available'], 2)}</b></span>
<span>seconds per available image: <b>{_num(summary['seconds_per_available_image'], 2)}</b></span>
<span><b>{len(summary['failed_products'])}</b> products failed</span>
{f"<span><b>{summary['nsfw']}</b> attempts {NSFW_CAPTION} (shown blurred)</span>" if summary.get('nsfw') else ''}</div>
{_charts(summary)}
{f'<h2>Failed products</h2><ul>{failed}</ul>' if failed else ''}
<h2>Products</h2>
{''.join(rows)}
<p style="color:#777;font-size:12px">Images are AI-generated. Green frame: accepted by RFNet; red: none available, best kept{f"; purple: {NSFW_CAPTION}, shown blurred, never kept" if summary.get("nsfw") else ""}.</p>
</body></html>"""
    return atomic_write_text(out_dir / "report.html", page)
