"""What annotators choose from (docs/method.md §1, §6): RFNet's five classes plus the release's
Unsuitable, with short guidance and examples in our own words. The availability page shows
exactly this."""

from __future__ import annotations

import re

from reliable_ad.core.labels import CLASS_NAMES, UNSUITABLE

# the order is the class index RFNet trains on; key 6 is the optional sixth label
LABELS: tuple[str, ...] = (*CLASS_NAMES, UNSUITABLE)
_NAME_TO_INDEX = {re.sub(r"[\s_\-]+", "", n).lower(): i for i, n in enumerate(LABELS)}

GENERAL = (
    "Look at the product photo, its caption and the generated ad. Would you publish the ad as it is? "
    "If not, pick the one reason that matters most: when several problems show, choose the most "
    "significant one, the one a shopper would notice first."
)

GUIDANCE: tuple[dict, ...] = (
    {
        "name": "Available",
        "short": "Usable as an ad as it is.",
        "examples": [
            "A kettle standing on a kitchen counter, lit like the room, clearly the subject.",
            "Small flaws far from the product that no shopper would notice.",
        ],
    },
    {
        "name": "Space Mismatch",
        "short": "Product and scene break physics.",
        "examples": [
            "A sofa whose legs hover above the floor, or a bottle standing on nothing.",
            "A chair passing through a table; a lamp half-sunk into a shelf.",
        ],
    },
    {
        "name": "Size Mismatch",
        "short": "The product's size contradicts the scene.",
        "examples": [
            "A massage chair smaller than the cabinet beside it.",
            "A phone as large as the window behind it.",
        ],
    },
    {
        "name": "Indistinctiveness",
        "short": "The product does not stand out.",
        "examples": [
            "A white mug on a white, cluttered table: hard to tell where it is.",
            "Extra similar objects around it, so a buyer may think they come with it.",
        ],
    },
    {
        "name": "Shape Hallucination",
        "short": "The background extends the product's shape.",
        "examples": [
            "A pedestal, legs, a handle or a lid added where the product ends.",
            "A bag continued by a strap that the real bag does not have.",
        ],
    },
    {
        "name": UNSUITABLE,
        "short": "The product photo itself is bad (cut off, damaged); not the generator's fault.",
        "examples": ["The product cut-out misses a corner, or the photo is blurred or torn."],
    },
)
assert tuple(g["name"] for g in GUIDANCE) == LABELS


def label_index(value) -> int | None:
    """Class index 0..5 of an int or a class name (case, spaces, underscores and hyphens ignored);
    None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < len(LABELS) else None
    if isinstance(value, str):
        token = value.strip()
        if token.isdigit():
            return int(token) if int(token) < len(LABELS) else None
        return _NAME_TO_INDEX.get(re.sub(r"[\s_\-]+", "", token).lower())
    return None
