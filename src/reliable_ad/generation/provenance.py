"""Label every saved image as AI-generated (supplemental, ethics section).

PNG text chunks carry a plain label and the generation parameters; an XMP packet carries IPTC's
digital source type `trainedAlgorithmicMedia`, which photo tools and marketplaces read.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from reliable_ad import __version__
from reliable_ad.core.io import atomic_write_bytes

AI_LABEL = "AI-generated image (reliable-ad)"
IPTC_TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"

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
    info.add_itxt("XML:com.adobe.xmp", _XMP.format(source_type=IPTC_TRAINED_ALGORITHMIC_MEDIA, version=__version__))
    if parameters:
        info.add_itxt("parameters", json.dumps(parameters, ensure_ascii=False, default=str, sort_keys=True))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_labelled_png(path: str | Path, image: np.ndarray | Image.Image, parameters: dict | None = None) -> Path:
    """Write the labelled PNG atomically."""
    return atomic_write_bytes(path, png_bytes_with_label(image, parameters))


def read_label(path: str | Path) -> dict:
    """The text chunks of a PNG (for checks: ``read_label(p)['AI-Generated'] == 'true'``)."""
    with Image.open(path) as im:
        im.load()
        return dict(getattr(im, "text", {}) or {})
