"""Label every saved image as AI-generated (supplemental, ethics section), in three layers.

1. PNG text chunks carry a plain label and the generation parameters; an XMP packet carries IPTC's
   digital source type `trainedAlgorithmicMedia`, which photo tools and marketplaces read.
2. A signed C2PA manifest (`c2pa_sign`): the same source type in a c2pa.created action, the generator,
   model ids and weight hashes, seed, settings and RFNet's verdict; any change to the pixels breaks it.
3. An invisible watermark (`watermark`) in the background pixels, which a re-save does not strip.
`ImageMarker` applies all three; `reliable-ad verify` reads them back (README, "Provenance").
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from reliable_ad import __version__
from reliable_ad.core.config import from_dict
from reliable_ad.data.product import Product, load_product, place_product
from reliable_ad.data.records import ManifestRecord
from reliable_ad.generation import watermark
from reliable_ad.generation.c2pa_sign import IPTC_TRAINED_ALGORITHMIC_MEDIA, C2paSigner, resolve_identity
from reliable_ad.generation.config import ProvenanceConfig
from reliable_ad.training.resume import CONFIG_FILE

logger = logging.getLogger(__name__)

AI_LABEL = "AI-generated image (reliable-ad)"
XMP_KEY = "XML:com.adobe.xmp"

_XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    Iptc4xmpExt:DigitalSourceType="{source_type}"
    xmp:CreatorTool="reliable-ad {version}"/>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def png_bytes_with_label(image: np.ndarray | Image.Image, parameters: dict | None = None) -> bytes:
    """Encode ``image`` (H, W, 3) uint8 as PNG with the AI-generated label and ``parameters``."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    info = PngImagePlugin.PngInfo()
    info.add_text("AI-Generated", "true")
    info.add_text("Description", AI_LABEL)
    info.add_text("Software", f"reliable-ad {__version__}")
    info.add_itxt(XMP_KEY, _XMP.format(source_type=IPTC_TRAINED_ALGORITHMIC_MEDIA, version=__version__))
    if parameters:
        info.add_itxt("parameters", json.dumps(parameters, ensure_ascii=False, default=str, sort_keys=True))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_label(path: str | Path) -> dict:
    """The text chunks of a PNG (for checks: ``read_label(p)['AI-Generated'] == 'true'``)."""
    with Image.open(path) as im:
        im.load()
        return dict(getattr(im, "text", {}) or {})


def read_png_label(data: bytes) -> dict:
    """The label layer of an image file's bytes: ``ai_generated`` (the text chunk) and the XMP
    ``digital_source_type`` (None where absent)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        text = dict(getattr(im, "text", {}) or {})
        xmp = text.get(XMP_KEY) or im.info.get("xmp") or ""
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", "replace")
    found = re.search(r'DigitalSourceType(?:="|>)([^"<]+)', xmp)
    return {"ai_generated": text.get("AI-Generated") == "true", "digital_source_type": found.group(1) if found else None}


# what the C2PA manifest tells about an image: no local paths (the product's source path stays private)
_ASSERTED = ("product_hash", "product_id", "caption", "preset", "prompt", "negative_prompt", "slots", "run_seed",
             "attempt", "seed", "variation", "image_scale", "size", "placement", "model", "sampling", "nsfw",
             "rfnet", "accepted", "reliable_ad_version", "created")


def generation_assertion(record: ManifestRecord) -> dict:
    """Our C2PA assertion for ``record``: generator, model ids and weight hashes, seed, settings, verdict."""
    data = {k: getattr(record, k) for k in _ASSERTED if getattr(record, k, None) is not None}
    if record.verdict is not None:
        data["verdict"] = record.verdict.to_json()
    data["generator"] = {"name": "reliable-ad", "version": __version__}
    return data


class ImageMarker:
    """Encodes generated images as marked PNGs per a `ProvenanceConfig`; build once per run, before any
    generation, so that a bad signing identity stops the run early."""

    def __init__(self, config: ProvenanceConfig | None = None):
        self.config = config or ProvenanceConfig()
        self.signer = C2paSigner(resolve_identity(self.config.c2pa_cert, self.config.c2pa_key)) \
            if self.config.c2pa else None
        if self.signer is not None and self.signer.identity.development:
            logger.info("signing C2PA manifests with the development identity in %s (not trusted by validators; "
                        "pass --c2pa-cert/--c2pa-key for production)", self.signer.identity.source)

    def png_bytes(self, image: np.ndarray, record: ManifestRecord, product_alpha: np.ndarray | None = None) -> bytes:
        """``image`` (H, W, 3) uint8 as a PNG with every layer the config asks for. The watermark spares
        the pixels where ``product_alpha`` > 0 (unless ``watermark_product``); with no alpha given it is
        left out rather than touch the product (a warning says so)."""
        pixels = np.asarray(image, dtype=np.uint8)
        if self.config.watermark:
            if self.config.watermark_product:
                pixels = watermark.embed(pixels)
            elif product_alpha is not None:
                pixels = watermark.embed(pixels, product_alpha)
            else:
                logger.warning("%s: no product mask, so no watermark (it would change product pixels)", record.image)
        params = {"prompt": record.prompt, "negative_prompt": record.negative_prompt, "seed": record.seed,
                  "preset": record.preset, "product_hash": record.product_hash}
        png = png_bytes_with_label(pixels, params)
        if self.signer is not None:
            png = self.signer.sign_png(png, Path(record.image or "image.png").name, generation_assertion(record))
        return png


# ---------------------------------------------------------------------------------------------
# For writers that pass neither a marker nor the product mask (`recurrent`'s): both from the run folder

_MARKERS: dict[tuple[str, int], tuple[ImageMarker, int]] = {}


def _run_settings(out_dir: Path) -> tuple[ImageMarker, int]:
    """The marker the run folder's config.json asks for (`generate`'s top level or `run`'s
    ``generation``) and its products' white threshold; built once per config file."""
    path = Path(out_dir) / CONFIG_FILE
    try:
        key = (str(path.resolve()), path.stat().st_mtime_ns)
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        key, config = (str(path), -1), {}
    if key not in _MARKERS:
        gen = config.get("generation", config) if isinstance(config, dict) else {}
        section = gen.get("provenance") if isinstance(gen, dict) else None
        threshold = ((gen.get("product") or {}) if isinstance(gen, dict) else {}).get("white_threshold", 250)
        marker = ImageMarker(from_dict(ProvenanceConfig, section) if isinstance(section, dict) else None)
        _MARKERS[key] = (marker, int(threshold))
    return _MARKERS[key]


def marker_for_run(out_dir: str | Path) -> ImageMarker:
    return _run_settings(Path(out_dir))[0]


def placed_alpha(out_dir: str | Path, record: ManifestRecord) -> np.ndarray | None:
    """The product's (S, S) alpha as placed in ``record``'s image, from the run's copy of the product and
    the recorded placement; None when it cannot be placed again exactly (then no watermark is added)."""
    out_dir = Path(out_dir)
    try:
        placement = record.placement or {}
        product = load_product(out_dir / str(record.product), white_threshold=_run_settings(out_dir)[1])
        size = int(placement["size"])
        if placement.get("mode") == "keep_loc":
            placed = place_product(product, size, 1.0, keep_loc=True)
        else:
            x0, y0, x1, y1 = (int(v) for v in placement["box"])
            out_w, out_h = (round(float(s) * n) for s, n in zip(placement["scale"], (x1 - x0, y1 - y0)))
            # the recorded box, placed at the recorded size: with threshold 1 the crop is its own box
            crop = Product(product.rgb[y0:y1, x0:x1], product.alpha[y0:y1, x0:x1], product.source)
            placed = place_product(crop, size, max(out_w, out_h) / size, box_alpha_threshold=1)
        if list(placed.placement.offset) != list(placement["offset"]):
            return None
        return placed.alpha
    except (KeyError, TypeError, ValueError, OSError) as e:
        logger.warning("%s: cannot place the product again (%s)", record.image, e)
        return None
