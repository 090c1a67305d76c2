"""RFNet's classes (docs/method.md §1): one usable class and four reasons a generated ad cannot be used.

The order is the model's output order and must never change: saved RFNet weights depend on it.
The public dataset's sixth label, Unsuitable (the source product photo itself is bad), is kept as an
optional extra class after the five; whether a model keeps, drops or merges it is a data choice.
A two-class model (Available vs Unavailable) exists for the paper's "binary label" ablation.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "Available",
    "Space Mismatch",
    "Size Mismatch",
    "Indistinctiveness",
    "Shape Hallucination",
)

CLASS_DESCRIPTIONS: dict[str, str] = {
    "Available": "usable as an ad",
    "Space Mismatch": "product and scene break physics: part of the product floats, stands on nothing, "
    "intersects things",
    "Size Mismatch": "product size contradicts the scene (a massage chair smaller than a cabinet)",
    "Indistinctiveness": "the product does not stand out; a viewer cannot tell what or where the product is, "
    "or may think extra items come with it",
    "Shape Hallucination": "the background extends the product's shape (adds a pedestal, legs, handles), "
    "misleading the buyer",
}

AVAILABLE_INDEX = 0
NUM_CLASSES = len(CLASS_NAMES)

UNSUITABLE = "Unsuitable"
UNSUITABLE_DESCRIPTION = "the source product photo itself is bad (truncated, damaged)"
UNAVAILABLE = "Unavailable"  # the binary ablation's merged negative class
SUPPORTED_NUM_CLASSES = (2, NUM_CLASSES, NUM_CLASSES + 1)


def class_names(num_classes: int = NUM_CLASSES) -> tuple[str, ...]:
    """Names of a model's outputs: the five classes, plus Unsuitable for a six-class model."""
    if num_classes == 2:
        return (CLASS_NAMES[AVAILABLE_INDEX], UNAVAILABLE)
    if num_classes == NUM_CLASSES:
        return CLASS_NAMES
    if num_classes == NUM_CLASSES + 1:
        return CLASS_NAMES + (UNSUITABLE,)
    raise ValueError(
        f"num_classes={num_classes} has no class names; RFNet has {NUM_CLASSES} classes "
        f"({', '.join(CLASS_NAMES)}), {NUM_CLASSES + 1} with {UNSUITABLE!r} kept as its own class, "
        f"or 2 (Available vs {UNAVAILABLE}); set num_classes to one of {SUPPORTED_NUM_CLASSES}"
    )


# The acceptance rule: when does a verdict say "Available"? (docs/method.md §4)
ACCEPTANCE = ("argmax", "threshold")


def check_acceptance(acceptance: str, threshold: float) -> None:
    if acceptance not in ACCEPTANCE:
        raise ValueError(f"acceptance={acceptance!r} is not one of {ACCEPTANCE} (argmax: RFNet's top class is "
                         "Available, the paper; threshold: p(Available) >= threshold)")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold} must be in (0, 1] (the p(Available) that accepts an image)")


def accepts(label_index: int, p_available: float, acceptance: str = "argmax", threshold: float = 0.5) -> bool:
    """argmax: the top class is Available (the paper); threshold: p(Available) >= ``threshold``. Used by
    Recurrent Generation, RFFT's validation and every report, so all of them accept the same images."""
    if acceptance == "argmax":
        return label_index == AVAILABLE_INDEX
    if acceptance == "threshold":
        return p_available >= threshold
    raise ValueError(f"acceptance={acceptance!r} is not one of {ACCEPTANCE}")
