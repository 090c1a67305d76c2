"""The oracle's abstention (docs/synthad.md, "Validity gates"): a verdict on a generated image counts
only when it is decisive, that is when the Available-vs-not decision survives a fixed set of
imperceptible checks.

Why: on generated images, part of the oracle's readings sit on a knife's edge. A scale reference drawn
in a colour near the oracle's tolerance is found or lost with sigma-2 noise; a support line is seen one
row higher or lower; a hallucinated part is attached or not. These are not severities near a threshold
(a Size Mismatch of severity 4.2 falls to 0 when the reference is lost), so no margin on the severities
catches them; re-reading the image a few times does. A human annotation pipeline does the same when it
keeps the items its annotators agree on.

The checks (`CHECKS`) are the judge's own and differ from gate 2's perturbations (`PERTURBATIONS`, which
test the abstaining oracle with fresh noise draws, another gain and another blur), so gate 2 on decisive
images is not passed by construction. (A first set had only a darkening gain; on the v-prediction
generator's brighter images gate 2's gain x1.03 then flipped 3.3% of the decisive verdicts, so a
brightening check joined: docs/synthad.md.) Every study that judges generated images
with the oracle reports the share of images it abstained on beside its rates.

    judged = judge_decisive(oracle, image, product_alpha, caption, key="product-7/attempt-2")
    judged.label, judged.decisive, judged.agreeing
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from reliable_ad.core.labels import AVAILABLE_INDEX, CLASS_NAMES
from reliable_ad.synthad.seeds import sub_seed

AVAILABLE = CLASS_NAMES[AVAILABLE_INDEX]


@dataclass(frozen=True)
class Perturbation:
    """An imperceptible change of a uint8 image: Gaussian noise, a gain, or a Gaussian blur."""

    name: str
    kind: str  # "noise" | "gain" | "blur"
    amount: float  # noise sigma (uint8 scale), gain factor, or blur sigma (px)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = image.astype(np.float32)
        if self.kind == "noise":
            x = x + rng.normal(0.0, self.amount, x.shape).astype(np.float32)
        elif self.kind == "gain":
            x = x * self.amount
        elif self.kind == "blur":
            x = cv2.GaussianBlur(x, (0, 0), self.amount)
        else:
            raise ValueError(f"perturbation kind {self.kind!r} is not one of noise, gain, blur")
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# Gate 2's test: the issue's imperceptible changes.
PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation("noise sigma 2", "noise", 2.0),
    Perturbation("noise sigma 3", "noise", 3.0),
    Perturbation("noise sigma 4", "noise", 4.0),
    Perturbation("gain x1.03", "gain", 1.03),
    Perturbation("blur sigma 0.5", "blur", 0.5),
)

# The abstaining judge's own re-readings: other noise draws (their seeds are salted apart from gate 2's),
# gains both ways (a brighter one matters: bright walls clip at 255), a slightly wider blur.
CHECKS: tuple[Perturbation, ...] = (
    Perturbation("check noise sigma 2", "noise", 2.0),
    Perturbation("check noise sigma 3 (a)", "noise", 3.0),
    Perturbation("check noise sigma 3 (b)", "noise", 3.0),
    Perturbation("check noise sigma 4", "noise", 4.0),
    Perturbation("check gain x0.97", "gain", 0.97),
    Perturbation("check gain x1.02", "gain", 1.02),
    Perturbation("check blur sigma 0.6", "blur", 0.6),
)
CHECK_SALT = "synthad-oracle/abstain"


@dataclass(frozen=True)
class DecisiveVerdict:
    """The oracle's verdict on an image and whether it is decisive (`agreeing` of `checks` re-readings
    made the same Available-vs-not decision; decisive when all did)."""

    verdict: object  # reliable_ad.synthad.oracle.OracleVerdict
    agreeing: int
    checks: int

    @property
    def label(self) -> str:
        return self.verdict.label

    @property
    def available(self) -> bool:
        return self.verdict.label == AVAILABLE

    @property
    def decisive(self) -> bool:
        return self.agreeing == self.checks


def judge_decisive(oracle, image: np.ndarray, product_alpha: np.ndarray, caption: str, key: str | int, *,
                   checks: Sequence[Perturbation] = CHECKS) -> DecisiveVerdict:
    """The oracle's verdict on `image` and the Available-vs-not decisions of its `checks` re-readings; the
    noise of each check is seeded by (`key`, the check's name), so a verdict is reproducible: give every
    image its own key (e.g. product and attempt)."""
    verdict = oracle.judge(image, product_alpha, caption)
    base = verdict.label == AVAILABLE
    agreeing = 0
    for check in checks:
        rng = np.random.default_rng(sub_seed(CHECK_SALT, str(key), check.name))
        agreeing += (oracle.judge(check.apply(image, rng), product_alpha, caption).label == AVAILABLE) == base
    return DecisiveVerdict(verdict, agreeing, len(checks))


def decisive_summary(judged: Sequence[DecisiveVerdict]) -> dict:
    """Counts for a report: images, decisive ones, the abstention rate, Available among the decisive."""
    n = len(judged)
    decisive = [j for j in judged if j.decisive]
    return {"n": n, "decisive": len(decisive), "abstained": n - len(decisive),
            "abstention_rate": (n - len(decisive)) / n if n else None,
            "available_decisive": sum(j.available for j in decisive),
            "available_rate_decisive": sum(j.available for j in decisive) / len(decisive) if decisive else None}
