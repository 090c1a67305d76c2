"""Saving and loading RFNet: a self-contained folder of ``config.json``, ``model.safetensors``,
``tokenizer/`` and a Hub model card ``README.md``, written atomically (into a temporary sibling folder,
then renamed into place). The preprocessing (image size, caption length, the backbones' mean/std) is
part of ``config.json``, so the folder is all `load_rfnet` and a Hub user need.

``config.json`` wraps the resolved RFNetConfig (with the encoders' full architectures) in a small
header, so a folder rebuilds without the hub and a folder of anything else is recognised and refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch

from reliable_ad.core.registry import FOLDER, HUB, NAME, resolve_source
from reliable_ad.rfnet.config import RFNetConfig
from reliable_ad.training.model_card import CARD_NAME, CardInfo, build_card, finite_metrics, hub_ids, read_json


CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "rfnet"
FORMAT_VERSION = 1
TRAINING_FILE = "training.json"  # beside a model `rfnet train` saved: the data and split it was trained on
# rfnet eval's metrics.json key -> (Hub metric type, display name)
CARD_METRICS = {"accuracy": ("accuracy", "accuracy"), "macro_f1": ("f1", "macro F1"),
                "available.f1": ("f1", "Available F1"),
                "available.average_precision": ("average_precision", "Available AP"),
                "ece": ("ece", "expected calibration error")}


def resolve_folder(name_or_path: str | os.PathLike) -> Path:
    """The folder of a saved RFNet: a packaged model's ("synthad"; a registered name wins over a folder
    of that name), a local folder as is, or a hub id ("owner/name") through ``snapshot_download``
    (obeys HF_HUB_OFFLINE). ``core.registry.resolve_source`` tells which."""
    source = resolve_source(name_or_path, "rfnet", accept=(NAME, FOLDER, HUB), what="saved RFNet")
    if source.form == NAME:
        if source.entry.packaged is None:
            raise ValueError(f"{source.value!r} is an RFNet config preset, not a saved model; build it with "
                             f"build_rfnet({source.value!r}) or load_rfnet({source.value!r}), or pass a saved RFNet folder")
        return source.entry.folder()
    if source.form == FOLDER:
        return source.path
    from huggingface_hub import snapshot_download

    try:
        # + modalities.json and training.json, written beside a trained model (modality_spec.py, train.py)
        patterns = [CONFIG_NAME, WEIGHTS_NAME, "tokenizer/*", "modalities.json", "training.json", CARD_NAME]
        return Path(snapshot_download(repo_id=source.value, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - hub errors differ by version; all mean "not available"
        raise ValueError(
            f"could not get {source.value!r} from the Hugging Face Hub ({type(e).__name__}: {e}); "
            "with HF_HUB_OFFLINE=1 it must already be in the local cache, or pass a local folder"
        ) from e


def read_config(folder: str | os.PathLike) -> RFNetConfig:
    """The RFNetConfig saved in ``folder``; anything that is not an RFNet folder raises ``ValueError``."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{str(folder)!r} is not a saved RFNet: it has no {CONFIG_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); re-save the model") from e
    found = data.get("model_type") if isinstance(data, dict) else None
    if found != MODEL_TYPE:
        raise ValueError(
            f"{str(folder)!r} is not a saved RFNet: its {CONFIG_NAME} has model_type={found!r}, not {MODEL_TYPE!r}; "
            "RFNet folders are written by reliable_ad.rfnet.save_pretrained"
        )
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(folder)!r} has format_version={version!r}; this reliable-ad reads up to {FORMAT_VERSION} "
            "(upgrade reliable-ad)"
        )
    try:
        return RFNetConfig.from_dict(data.get("config", {}))
    except ValueError as e:
        raise ValueError(f"{str(path)!r}: {e}") from e


def _state_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    state, seen = {}, set()
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        state[key] = tensor.clone() if ptr in seen else tensor  # safetensors refuses shared storage
        seen.add(ptr)
    return state


def _is_replaceable(folder: Path) -> bool:
    """True when ``folder`` is absent, empty, or an earlier RFNet save (never someone else's files)."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    if not any(folder.iterdir()):
        return True
    try:
        read_config(folder)
    except ValueError:
        return False
    return True


def run_metrics(folder: Path) -> dict[str, dict]:
    """The eval metrics of the `rfnet train` run that saves its model into ``folder`` (OUT/model): its
    OUT/eval/{test,val}/metrics.json, written just before the save (rfnet/train.py, finish)."""
    found = {}
    for split in ("test", "val"):
        metrics = read_json(folder.parent / "eval" / split / "metrics.json")
        if metrics and metrics.get("n"):
            found[split] = metrics
    return found


def model_card(model: torch.nn.Module, metrics: dict[str, dict] | None = None):
    """The Hub model card of a saved RFNet: its classes, inputs and, when given, the training run's
    eval ``metrics`` (split -> rfnet eval's metrics.json); see reliable_ad.training.model_card."""
    config: RFNetConfig = model.config
    inputs = ", ".join(config.modalities.enabled())
    classes = "\n".join(f"{i}. {name}" for i, name in enumerate(model.class_names))
    usage = (
        "```python\nfrom reliable_ad.rfnet import load_rfnet\n\n"
        "model, processor = load_rfnet(\"OWNER/NAME\")  # this repository, or its local folder\n"
        "batch = processor(captions, product=..., generated=..., depth=..., salience=...)\n"
        "probs = model.predict_proba(**batch)  # columns in the class order above\n```\n\n"
        "`reliable-ad inspect RUN --rfnet OWNER/NAME` judges a generation run with it; "
        "`reliable-ad run ... --rfnet OWNER/NAME` regenerates until the ads are Available."
    )
    info = CardInfo(
        model_name="RFNet", library_name="reliable-ad", task="image-classification",
        summary=(f"RFNet, the reliable-feedback network of reliable-ad (docs/method.md §3): it judges whether a "
                 f"generated e-commerce ad is usable. Inputs: {inputs}; images resized to "
                 f"{config.image_size} px; temperature {config.temperature:g}."),
        base_model=hub_ids(config.image_encoder.pretrained, config.text_encoder.name_or_path),
        tags=["rfnet", "e-commerce", "advertising", "image-classification", "multimodal"],
        metrics=[m for split, values in (metrics or {}).items() for m in finite_metrics(values, CARD_METRICS, split)],
        sections={"Classes": classes, "Usage": usage,
                  "Files": "`config.json` (architecture, classes, preprocessing), `model.safetensors` (weights), "
                           "`tokenizer/` (caption tokenizer), `modalities.json` (depth and salience estimators "
                           "to use) and `training.json` (data and split) when trained with `rfnet train`."},
    )
    return build_card(info)


def save_pretrained(
    model: torch.nn.Module, folder: str | os.PathLike, processor=None, *, extra_files: dict[str, str] | None = None,
    metrics: dict[str, dict] | None = None,
) -> Path:
    """Write ``model`` to ``folder``: config.json, model.safetensors, (caption on) tokenizer/ and a Hub
    model card README.md.

    ``extra_files`` (name -> text, e.g. modalities.json) are written into the same atomic save.
    ``processor`` gives the tokenizer to save; without it the config's tokenizer is rebuilt (tiny)
    or loaded from ``text_encoder.name_or_path``. ``metrics`` (split -> rfnet eval's metrics.json)
    go into the card; when a training run saves (``extra_files`` has training.json) they default to
    the run's own eval (:func:`run_metrics`). An existing earlier save is replaced as a whole;
    a folder holding anything else is refused.
    """
    folder = Path(folder).expanduser()
    if not _is_replaceable(folder):
        raise ValueError(
            f"{str(folder)!r} exists and is not an RFNet save; refusing to overwrite it; pass a new or empty folder"
        )
    config: RFNetConfig = model.config
    if config.modalities.caption:
        if processor is None:
            processor = model.default_processor()
        if processor.tokenizer is None:
            raise ValueError("the model reads captions but processor has no tokenizer; pass RFNetProcessor.from_config")
        if len(processor.tokenizer) > model.text_encoder.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(processor.tokenizer)} tokens but the caption encoder only "
                f"{model.text_encoder.vocab_size}; pass the tokenizer that belongs to this model"
            )
    header = {
        "model_type": MODEL_TYPE,
        "format_version": FORMAT_VERSION,
        "class_names": list(model.class_names),
        "config": config.to_dict(),
    }
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(header, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        save_file(_state_for_saving(model), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if config.modalities.caption:
            processor.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        if metrics is None and TRAINING_FILE in (extra_files or {}):
            metrics = run_metrics(folder)
        (tmp / CARD_NAME).write_text(str(model_card(model, metrics)), encoding="utf-8")
        if folder.exists():
            os.rename(folder, old)
        try:
            os.rename(tmp, folder)
        except BaseException:
            if old.exists():
                os.rename(old, folder)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {shape}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    if missing or unexpected or wrong:
        found = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        parts = [f"{name}: {len(items)} (e.g. {items[:3]})" for name, items in found if items]
        raise ValueError(
            f"{str(where)!r} does not fit the model its {CONFIG_NAME} describes ({'; '.join(parts)}); "
            "the folder is damaged or was edited by hand; re-save it with save_pretrained"
        )


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of a saved RFNet folder (``model.safetensors``)."""
    from safetensors.torch import load_file

    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{str(folder)!r} has {CONFIG_NAME} but no {WEIGHTS_NAME}; re-save the model")
    return load_file(str(weights))


def check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Refuse a state dict that does not fit ``model`` (missing, unexpected or misshapen tensors)."""
    _check_state(model, state, folder / WEIGHTS_NAME)
