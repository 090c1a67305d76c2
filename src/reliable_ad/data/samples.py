"""The compact record every reader returns (docs/method.md §3): one labelled generated image, and the
problems a reader met on the way (a reader records a bad line and goes on)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Sample", "Problem", "ReadResult"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled generated image. Paths are strings (a ``Path`` costs several times the memory);
    an image inside a zip archive is ``<archive>.zip/<member>`` (`reliable_ad.data.archives`)."""

    image: str  # the generated image I_g
    product: str | None  # the product image I_o, None when the release has none for it
    caption: str  # the product caption, "" when unknown
    label: int  # class index; -1 only for unlabelled manifest records read with require_label=False
    product_id: str  # the grouping key for splits
    source: str  # "<file name>:<line number>" it was read from
    depth: str | None = None  # cached depth map I_d (.png or .npy)
    salience: str | None = None  # cached salience map I_s (.png or .npy)
    agreement: float | None = None  # share of annotator votes for the label, when votes were given


class Problem(NamedTuple):
    file: str
    line: int  # 1-based; 0 when the problem is not tied to a line
    message: str


class ReadResult(NamedTuple):
    samples: list[Sample]
    problems: list[Problem]
