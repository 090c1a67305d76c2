"""Where the trained SynthAd models ship inside the package: the "synthad" depth and salience
estimators (`modalities.build_depth("synthad")`, `build_salience("synthad")`) and the "synthad" RFNet
(`rfnet.load_rfnet("synthad")`, `Inspector.from_pretrained("synthad")`, `--rfnet synthad`).

    <package>/synthad/weights/depth/      a transformers DPT depth model + preprocessor_config.json
    <package>/synthad/weights/salience/   a transformers SegFormer (one foreground channel) + preprocessor
    <package>/synthad/weights/rfnet/      a saved RFNet folder with modalities.json naming both above,
                                          and report.json: how the three were trained and how well
                                          they did on fresh scenes

All of them are made by `python -m reliable_ad.synthad.train_rfnet --out DIR --install`. The generator
(`--model synthad`, <package>/synthad/weights/generator/) is made by `reliable_ad.synthad.train_generator`.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PACKAGED_KINDS = ("depth", "salience", "rfnet")
REPORT_FILE = "report.json"
TRAIN_COMMAND = "python -m reliable_ad.synthad.train_rfnet --out DIR --install"
MARKER = "config.json"  # every packaged folder holds one (transformers and RFNet folders alike)


def packaged_folder(kind: str, root: str | Path | None = None) -> Path:
    """The packaged ``kind`` folder ("depth", "salience" or "rfnet"); FileNotFoundError when it is absent."""
    if kind not in PACKAGED_KINDS:
        raise ValueError(f"kind={kind!r} is not a packaged SynthAd model; use one of {PACKAGED_KINDS}")
    folder = (Path(root) if root is not None else WEIGHTS_DIR) / kind
    if not (folder / MARKER).is_file():
        raise FileNotFoundError(
            f"the packaged SynthAd {kind} model is missing: {str(folder)!r} has no {MARKER}. Reinstall "
            f"reliable-ad (its wheel ships synthad/weights/), or train and install it with `{TRAIN_COMMAND}`"
        )
    return folder
