"""Train the SynthAd models that ship with the package, end to end (docs/method.md §3 on SynthAd): the
"synthad" depth and salience estimators and the "synthad" RFNet that judges `reliable-ad run --model synthad`.

1. data: SynthAd scenes in the RF1M layout (half Available, the rest split over the four defects,
   products placed as the synthad generator preset places them, image_scale 0.35): one set with the
   renderer's true maps to fit the estimators, one to train RFNet, and a fresh one (other seeds)
   for the report.
2. estimators: the small DPT (depth) and SegFormer (salience) of `modalities.synthad_estimators`, fit
   to the true maps (`experiments.synthad.estimators`).
3. maps: those estimators' maps of every RFNet image (and of every --extra-data image) into the
   folders' modality cache. RFNet never sees a true map: inference never has one.
4. rfnet: RFNet (`rfnet_architecture`) trained by `reliable_ad.rfnet.train`; its modalities.json
   names depth "synthad" and salience "synthad".
5. report: on the fresh scenes, depth correlation and salience IoU against the true maps, RFNet's
   accuracy and Available AP, and its agreement with the OracleInspector (`experiments.synthad.model_report`).
6. --install: copy the three models into reliable_ad/synthad/weights/ (report.json beside the RFNet).

Layout of ``--out``: settings.json (the resolved settings), data/{estimators,rfnet,fresh}/ (RF1M
folders; data/extra-<k>-<name>/ mirror the --extra-data folders), estimators/{depth,salience}/,
maps.json (which estimator weights made each folder's maps), rfnet/ (the RFNet trainer's run folder;
rfnet/model/ is the model), report.json, seconds.json.

Every stage skips what an earlier run with the same settings finished, so a rerun resumes (and
``--install`` after a finished run redoes only the report, then copies). Measured without
--extra-data (``--threads 1`` on a 2-core machine shared with other training jobs, so the times
swing with their load): data 2.1 min (8,500 scenes), depth estimator 1.8 min, salience estimator 6.6 min
(2.2 min at the pace of its uncontended first steps), maps 0.6 min, RFNet 6.9 min (1,002 steps of
32), report 0.2 min: 18 min in all. ``--quick`` takes ~10 s. report.json ("seconds") has a run's own.
Quality on 490 fresh scenes: depth r 0.967 (mean-map baseline 0.921), salience IoU 0.851 (0.616),
RFNet accuracy 0.945, Available AP 0.987, agreement with the oracle 0.945.

    python -m experiments.synthad.train_rfnet --out runs/synthad --install
    python -m experiments.synthad.train_rfnet --out runs/synthad2 --extra-data runs/labelled_generations
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

logger = logging.getLogger("experiments.synthad.train_rfnet")

SYNTHAD = "synthad"  # the estimators' and the RFNet's registry name
IMAGE_SCALE = 0.35  # the synthad generator preset's prepare_product image_scale
CLASS_SHARES = {"Available": 0.5, "Space Mismatch": 0.125, "Size Mismatch": 0.125, "Indistinctiveness": 0.125,
                "Shape Hallucination": 0.125}
SEED_OFFSETS = {"estimators": 1_000, "rfnet": 2_000, "fresh": 9_000}  # data seeds: settings.seed + offset


@dataclass(frozen=True)
class Settings:
    estimator_scenes: int = 2000  # scenes with true maps the estimators learn from
    rfnet_scenes: int = 6000  # SynthAd scenes RFNet learns from (--extra-data comes on top)
    fresh_scenes: int = 500  # held-out scenes (other seeds) for the report
    estimator_steps: int = 800  # optimizer steps per estimator, batch 32
    estimator_lr: float = 3e-3  # peak of the one-cycle schedule
    rfnet_epochs: int = 6  # lr / 10 for the last 30% of them (the paper's step schedule, shortened)
    rfnet_batch_size: int = 32
    rfnet_lr: float = 2e-3  # from-scratch encoders learn faster than the paper's fine-tuning lr 1e-4
    seed: int = 0  # data, initialisation and order; the same seed gives the same models

    def __post_init__(self) -> None:
        for f in fields(self):
            value, rates = getattr(self, f.name), f.name.endswith("_lr")
            low = 0 if f.name == "seed" else 1
            ok = value > 0 if rates else isinstance(value, int) and value >= low
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
                raise ValueError(f"settings.{f.name}={value!r} must be " + ("> 0" if rates else f"an int >= {low}"))


QUICK = Settings(estimator_scenes=48, rfnet_scenes=64, fresh_scenes=30, estimator_steps=4, rfnet_epochs=1,
                 rfnet_batch_size=16)


def rfnet_architecture():
    """The synthad RFNet: small ResNets (stride 8, 8x8 tokens per image), the tiny caption encoder
    (no pretrained text model; SynthAd captions are short English), two fusion layers of width 64."""
    from reliable_ad.rfnet.config import FusionConfig, ImageEncoderConfig, RFNetConfig, TextEncoderConfig

    return RFNetConfig(
        image_encoder=ImageEncoderConfig(type="resnet", arch={"embedding_size": 16, "hidden_sizes": [32, 64],
                                                              "depths": [1, 1], "layer_type": "basic"}),
        text_encoder=TextEncoderConfig(name_or_path=None, max_length=32),
        fusion=FusionConfig(width=64, num_heads=4, num_layers=2, dropout=0.0),
        image_size=64,
    )


# --- stages ------------------------------------------------------------------------------------------


def make_data(out: Path, settings: Settings) -> dict[str, Path]:
    """The three SynthAd folders (written once; a folder with labels.txt is complete)."""
    from reliable_ad.synthad.dataset import write_synthad_dataset

    folders = {}
    for name, n, maps in (("estimators", settings.estimator_scenes, True), ("rfnet", settings.rfnet_scenes, False),
                          ("fresh", settings.fresh_scenes, True)):
        folder = out / "data" / name
        if not (folder / "labels.txt").is_file():
            summary = write_synthad_dataset(folder, n, seed=settings.seed + SEED_OFFSETS[name], size=64,
                                            class_shares=CLASS_SHARES, image_scale=IMAGE_SCALE, maps=maps)
            logger.info("data/%s: %d scenes %s; %d skipped (layouts that do not fit, e.g. %s)", name, summary.written,
                        summary.per_class, len(summary.failed), next(iter(summary.failed.values()), "-")[:80])
        folders[name] = folder
    return folders


def read_scenes(root: Path):
    """(samples, images uint8 (N, 3, S, S), true depth, true salience (N, 1, S, S) float32) of a
    SynthAd folder written with its true maps."""
    import numpy as np
    import torch
    from PIL import Image

    from reliable_ad.data.maps import map_path
    from reliable_ad.data.readers import read_rf1m

    samples, problems = read_rf1m(root)
    if problems or not samples:
        raise ValueError(f"{root}: {len(samples)} samples, problems {problems[:3]}; delete the folder to rewrite it")
    images = np.stack([np.asarray(Image.open(s.image).convert("RGB")) for s in samples])
    rel = [os.path.relpath(s.image, root).replace(os.sep, "/") for s in samples]
    maps = [torch.from_numpy(np.stack([np.load(map_path(root, kind, r)) for r in rel]).astype(np.float32))[:, None]
            for kind in ("depth", "salience")]
    return samples, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), *maps


def train_estimators(out: Path, data: Path, settings: Settings, seconds: dict[str, float]) -> dict[str, Any]:
    """The depth and salience estimators, fit to ``data``'s true maps (or loaded when saved before)."""
    from reliable_ad.modalities import TransformersDepth, TransformersSalience
    from experiments.synthad.estimators import fit_estimator
    from reliable_ad.modalities.synthad_estimators import build_untrained

    loaders = {"depth": TransformersDepth, "salience": TransformersSalience}
    estimators: dict[str, Any] = {}
    scenes = None
    for k, kind in enumerate(("depth", "salience")):
        folder = out / "estimators" / kind
        if (folder / "config.json").is_file():
            estimators[kind] = loaders[kind].from_pretrained(folder, size=64)
            continue
        t0 = time.perf_counter()
        if scenes is None:
            scenes = read_scenes(data)
        estimator = build_untrained(kind, seed=settings.seed + k)
        fit_estimator(estimator, scenes[1], scenes[2 + k], steps=settings.estimator_steps, lr=settings.estimator_lr,
                      seed=settings.seed + k, log_every=max(1, settings.estimator_steps // 8), log=logger.info)
        _save_atomically(estimator.save_pretrained, folder)
        estimators[kind] = estimator
        seconds[f"{kind}_estimator"] = round(time.perf_counter() - t0, 1)
    return estimators


def _save_atomically(save, folder: Path) -> None:
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def estimators_fingerprint(out: Path) -> str:
    """Of the saved estimator weights: cached maps are only reused with the estimators that made them."""
    digest = hashlib.sha256()
    for kind in ("depth", "salience"):
        digest.update((out / "estimators" / kind / "model.safetensors").read_bytes())
    return digest.hexdigest()[:16]


def mirror_folder(source: Path, dest: Path) -> Path:
    """``dest`` shows ``source``'s files (symlinks; copies where links fail) except its modalities/, so the
    synthad maps get their own cache and the user's folder is never written to."""
    from reliable_ad.data.maps import CACHE_DIR

    if not source.is_dir():
        raise FileNotFoundError(f"--extra-data {str(source)!r} is not a folder; pass an RF1M-layout folder")
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        target = dest / entry.name
        if entry.name == CACHE_DIR or target.exists() or target.is_symlink():
            continue
        try:
            target.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        except OSError:
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target)
    return dest


def compute_maps(out: Path, folders: list[Path], estimators: dict[str, Any], *, progress: bool = True) -> None:
    """The synthad maps of every image of ``folders``, cached; refuses maps of other estimator weights."""
    from reliable_ad.modalities.cache import attach_cached_maps, build_cache, list_images
    from reliable_ad.data.readers import read_rf1m
    from reliable_ad.core.io import atomic_write_json

    record = out / "maps.json"
    made = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    fingerprint = estimators_fingerprint(out)
    for folder in folders:
        key = str(folder)
        if made.get(key) not in (None, fingerprint):
            raise ValueError(f"{folder}/modalities holds maps of other synthad estimator weights ({made[key]}, now "
                             f"{fingerprint}); delete that modalities/ folder (and {out / 'rfnet'}) to redo them")
        made[key] = fingerprint
        atomic_write_json(record, made)
        summary = build_cache(folder, depth=SYNTHAD, salience=SYNTHAD, size=64, batch_size=64, estimators=estimators,
                              progress=progress)
        samples, _ = read_rf1m(folder)
        _, counts = attach_cached_maps(samples, folder, depth=SYNTHAD, salience=SYNTHAD)
        missing = {k: len(samples) - v for k, v in counts.items() if v < len(samples)}
        if missing:
            outside = len(samples) - len(list_images(folder)[0])
            raise ValueError(f"{folder}: {missing} images have no synthad map ({len(summary.failed)} unreadable, e.g. "
                             f"{list(summary.failed.items())[:2]}; {outside} outside the folder); fix or remove them")
        logger.info("maps: %s: %d images (%d new)", folder, len(samples), summary.written["depth"])


def train_config(out: Path, sources: list[Path], settings: Settings):
    """The TrainConfig of the synthad RFNet over ``sources`` (validation = 10% of the products)."""
    from reliable_ad.core.io import atomic_write_text
    from reliable_ad.rfnet.train_config import (DataConfig, DataSource, ModelSection, OptimConfig, RuntimeConfig,
                                                TrainConfig)

    arch = out / "rfnet_architecture.json"
    atomic_write_text(arch, rfnet_architecture().to_json() + "\n")
    epochs = settings.rfnet_epochs
    return TrainConfig(
        data=DataConfig(sources=[DataSource(str(s), kind="rf1m") for s in sources], split_fractions=(0.9, 0.1, 0.0),
                        split_seed=settings.seed),
        model=ModelSection(source=str(arch), load_pretrained=False, depth=SYNTHAD, salience=SYNTHAD, map_size=64),
        optim=OptimConfig(epochs=epochs, learning_rate=settings.rfnet_lr,
                          lr_milestones=[max(1, math.ceil(0.7 * epochs))], batch_size=settings.rfnet_batch_size),
        runtime=RuntimeConfig(seed=settings.seed, device="cpu", checkpoint_every=200, keep_checkpoints=1, log_every=20),
        num_workers=0,
    )


def train_rfnet(out: Path, sources: list[Path], settings: Settings, *, progress: bool = True) -> Path:
    """Train (or resume, or find finished) the synthad RFNet; returns its saved folder."""
    from reliable_ad.rfnet.train import train

    model = out / "rfnet" / "model"
    if not (model / "modalities.json").is_file():
        metrics = train(train_config(out, sources, settings), out / "rfnet", progress=progress)
        val = metrics.get("val", {})
        logger.info("rfnet: val accuracy %.3f, Available AP %.3f", val.get("accuracy", float("nan")),
                    val.get("available", {}).get("average_precision", float("nan")))
    return model


def report(out: Path, model: Path, folders: dict[str, Path], estimators: dict[str, Any], **kw) -> dict[str, Any]:
    """`model_report.write_report` on the fresh scenes, the estimators' training maps as the baseline."""
    from experiments.synthad.model_report import write_report

    _, _, depth, salience = read_scenes(folders["estimators"])
    return write_report(out, model, read_scenes(folders["fresh"]), (depth.mean(0), salience.mean(0)), estimators, **kw)


# --- install -----------------------------------------------------------------------------------------


def install(out: Path, dest: Path | None = None) -> Path:
    """Copy the run's estimators and RFNet (with report.json) into ``dest`` (default: the package's weights)."""
    from experiments.synthad import REPORT_FILE, WEIGHTS_DIR

    dest = Path(dest) if dest is not None else WEIGHTS_DIR
    parts = {"depth": out / "estimators" / "depth", "salience": out / "estimators" / "salience",
             "rfnet": out / "rfnet" / "model"}
    for name, folder in parts.items():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is missing: run the training first (without --install it stops there)")
    if not (out / REPORT_FILE).is_file():
        raise FileNotFoundError(f"{out / REPORT_FILE} is missing: the run did not finish its report")
    dest.mkdir(parents=True, exist_ok=True)
    for name, folder in parts.items():
        _save_atomically(lambda tmp, src=folder, name=name: _copy_readable(src, tmp, out / REPORT_FILE
                                                                           if name == "rfnet" else None), dest / name)
    size = sum(p.stat().st_size for name in parts for p in (dest / name).rglob("*") if p.is_file())
    logger.info("installed into %s (%.1f MB)", dest, size / 1e6)
    return dest


def _copy_readable(source: Path, dest: Path, report: Path | None) -> None:
    """Copy ``source`` (and ``report`` into it) with world-readable files: some writers create 0600 files."""
    from experiments.synthad import REPORT_FILE

    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".*"))
    if report is not None:
        shutil.copy2(report, dest / REPORT_FILE)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


# --- the whole run -----------------------------------------------------------------------------------


def _check_settings(out: Path, settings: Settings, extra: list[Path]) -> None:
    from reliable_ad.core.io import atomic_write_json

    path = out / "settings.json"
    wanted = {**asdict(settings), "extra_data": [str(p) for p in extra]}
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != wanted:
            changed = sorted(k for k in wanted if found.get(k) != wanted[k])
            raise ValueError(f"{out} holds a run with other settings ({', '.join(changed)} differ); rerun it as it was "
                             "to resume, or choose another --out")
    atomic_write_json(path, wanted)


def run(out: str | os.PathLike, settings: Settings = Settings(), *, extra_data: list[str | os.PathLike] = (),
        progress: bool = True) -> dict[str, Any]:
    """Stages 1-5 of the module docstring into ``out``; returns the report (also out/report.json)."""
    out = Path(out)
    extra = [Path(p).expanduser().resolve() for p in extra_data]
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings, extra)
    times_file = out / "seconds.json"
    seconds: dict[str, float] = json.loads(times_file.read_text()) if times_file.is_file() else {}

    def timed(name, fn, *args, **kw):
        t0 = time.perf_counter()
        result = fn(*args, **kw)
        seconds.setdefault(name, round(time.perf_counter() - t0, 1))
        times_file.write_text(json.dumps(seconds, indent=2) + "\n")
        return result

    logger.info("1/5 data")
    folders = timed("data", make_data, out, settings)
    logger.info("2/5 estimators")
    estimators = timed("estimators", train_estimators, out, folders["estimators"], settings, seconds)
    logger.info("3/5 maps")
    sources = [folders["rfnet"]] + [mirror_folder(p, out / "data" / f"extra-{i}-{p.name}") for i, p in enumerate(extra)]
    timed("maps", compute_maps, out, sources, estimators, progress=progress)
    logger.info("4/5 rfnet")
    model = timed("rfnet", train_rfnet, out, sources, settings, progress=progress)
    logger.info("5/5 report")
    return timed("report", report, out, model, folders, estimators,
                 settings={**asdict(settings), "extra_data": [str(p) for p in extra]}, seconds=seconds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.synthad.train_rfnet",
        description="Train the SynthAd depth and salience estimators and the SynthAd RFNet end to end (make "
                    "data, fit the estimators to the renderer's true maps, cache their maps, train RFNet on them, "
                    "report on fresh scenes), and optionally install them into the package as the 'synthad' models.",
    )
    p.add_argument("--out", required=True, type=Path,
                   help="run folder (created; a rerun with the same settings resumes)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run of every stage in seconds")
    p.add_argument("--extra-data", action="append", default=[], type=Path, metavar="DIR",
                   help="another labelled RF1M-layout folder for RFNet (repeatable); its maps are computed with the "
                        "new synthad estimators into a mirror under OUT/data, the folder itself is left untouched")
    p.add_argument("--install", action="store_true",
                   help="copy the finished models into reliable_ad/synthad/weights/ (not with --quick)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and order (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.quick and args.install:
        p.error("--install with --quick would ship barely trained models; install a full run")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads {args.threads} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("reliable_ad.synthad.dataset").setLevel(logging.CRITICAL)  # make_data counts skipped scenes
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint file otherwise
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    settings = replace(QUICK if args.quick else Settings(), seed=args.seed)
    try:
        report = run(args.out, settings, extra_data=args.extra_data, progress=not args.no_progress)
        if args.install:
            install(args.out)
    except (ValueError, FileNotFoundError) as e:
        logger.error("error: %s", e)
        return 1
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
