"""The factories of the SynthAd weights that ship in the package (docs/synthad.md): run from the
repository root, e.g. ``python -m experiments.synthad.train_rfnet --out DIR --install``;
``bash scripts/train_synthad.sh`` remakes all of them as the shipped ones were made.

--install writes where the package resolves its packaged weights from (`reliable_ad.core.registry`:
``WEIGHTS_DIR``, with ``REPORT_FILE`` beside the RFNet).
"""

from reliable_ad.core.registry import REPORT_FILE, WEIGHTS_DIR

__all__ = ["REPORT_FILE", "WEIGHTS_DIR"]
