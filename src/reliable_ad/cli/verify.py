"""`reliable-ad verify IMAGE...`: is each image marked as AI-generated, and is its C2PA manifest intact?

Reads the three provenance layers `generate` and `run` write (README, "Provenance"): the C2PA manifest
(validated: signature and content hash), the PNG label (text chunk + XMP digital source type) and the
invisible watermark. Exit status: 0 when every image carries a valid C2PA manifest, 1 when any is
unmarked (no manifest: e.g. re-saved, which strips metadata; the watermark may still be found), invalid
(changed after signing) or unreadable, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="check images for reliable-ad's provenance: C2PA manifest, AI-generated label, watermark",
        description=(
            "For each image: validate its C2PA manifest (valid / invalid, with the validator's errors / none), read "
            "the AI-generated label in its metadata (PNG text and XMP's IPTC digital source type) and look for "
            "reliable-ad's invisible watermark (it survives a re-save, a JPEG copy or a crop that strip the rest). "
            "A manifest signed with the development identity is valid but 'untrusted': no validator knows its CA. "
            "Exit status: 0 when every image has a valid C2PA manifest; 1 when any is unmarked, invalid or "
            "unreadable; 2 on a usage error."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG as written by generate/run; JPEG too)")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout (JSON Lines)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def verify_image(path: str | Path) -> dict:
    """Everything `verify` finds in one image file: ``status`` is "signed", "invalid", "unmarked" or
    "unreadable" (``error`` says why), with the ``c2pa``, ``label`` and ``watermark`` readings."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from reliable_ad.generation import watermark
    from reliable_ad.generation.c2pa_sign import read_c2pa
    from reliable_ad.generation.provenance import read_png_label

    path = Path(path)
    out: dict = {"image": str(path)}
    try:
        data = path.read_bytes()
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        out["label"] = read_png_label(data)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        return {**out, "status": "unreadable", "error": f"{e}; give an image file"}
    c2pa = read_c2pa(data, _MIME.get(path.suffix.lower(), "image/png"))
    out["c2pa"] = c2pa.to_dict()
    out["watermark"] = watermark.detect(pixels).to_dict()
    out["status"] = {"valid": "signed", "invalid": "invalid", "none": "unmarked"}[c2pa.status]
    return out


def _describe(r: dict) -> list[str]:
    if r["status"] == "unreadable":
        return [f"{r['image']}: UNREADABLE ({r['error']})"]
    c, label, wm = r["c2pa"], r["label"], r["watermark"]
    lines = [f"{r['image']}: {r['status'].upper()}"]
    if c["status"] == "valid":
        trust = "trusted" if c["trusted"] else "untrusted signer (a development identity, or a CA this validator does not know)"
        gen = c.get("generation") or {}
        facts = ", ".join(f"{k} {gen[k]}" for k in ("seed", "preset") if k in gen)
        model = (gen.get("model") or {}).get("preset") or (gen.get("model") or {}).get("base")
        verdict = (gen.get("verdict") or {}).get("label")
        extra = "; ".join(x for x in (facts, f"model {model}" if model else "", f"RFNet: {verdict}" if verdict else "") if x)
        lines.append(f"  C2PA:      valid, {trust}; signed by {c['signer']}; {c['generator']}")
        lines.append(f"             source type {c['digital_source_type']}" + (f"; {extra}" if extra else ""))
    elif c["status"] == "invalid":
        lines.append("  C2PA:      INVALID: " + "; ".join(c["errors"]))
    else:
        lines.append("  C2PA:      none (no manifest: never signed, or re-saved by a tool that drops it)")
    source = label["digital_source_type"]
    lines.append(f"  label:     {'AI-Generated text chunk' if label['ai_generated'] else 'no AI-Generated text chunk'}; "
                 f"XMP digital source type: {source.rsplit('/', 1)[-1] if source else 'none'}")
    lines.append(f"  watermark: {'found' if wm['found'] else 'not found'} ({wm['matched']}/{wm['bits']} payload bits)")
    return lines


def run(args: argparse.Namespace) -> int:
    results = []
    for path in tqdm(args.images, desc="verifying", unit="img", disable=args.no_progress or len(args.images) < 5):
        r = verify_image(path)
        results.append(r)
        if args.json:
            print(json.dumps(r, ensure_ascii=False, default=str))
        else:
            print("\n".join(_describe(r)))
    bad = [r for r in results if r["status"] != "signed"]
    if bad:
        counts = {s: sum(r["status"] == s for r in bad) for s in ("unmarked", "invalid", "unreadable")}
        print(f"{len(results) - len(bad)}/{len(results)} image(s) signed; "
              + ", ".join(f"{n} {s}" for s, n in counts.items() if n), file=sys.stderr)
    return 1 if bad else 0
