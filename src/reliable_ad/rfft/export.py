"""The export of a trained RFFT run, where `reliable-ad generate` and `run` can use it (docs/method.md §5).

Each exported folder is written under a temporary name and renamed into place, with a Hub model card
(README.md: library diffusers, base models, the run's last validation as metrics); export.json records
the step and what was written. Checkpoints (for resume) are `reliable_ad.training.checkpoint`'s.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

from reliable_ad.core.io import atomic_write_json, read_jsonl
from reliable_ad.rfft.trainable import ADAPTER
from reliable_ad.training.checkpoint import replace_dir
from reliable_ad.training.model_card import CardInfo, finite_metrics, hub_ids, write_card
from reliable_ad.training.runlog import LOGS, METRICS

EXPORT = "export"
# a "validation" record of logs/metrics.jsonl (trainer.run_validation) -> (Hub metric type, display name)
CARD_METRICS = {"available_rate": ("available_rate", "RFNet Available rate"),
                "original_available_rate": ("available_rate", "RFNet Available rate of the original model"),
                "diversity_ratio": ("diversity_ratio", "background diversity / original's"),
                "distance_to_original": ("distance", "background distance to the original model")}
USAGE = {
    "controlnet": "`reliable-ad generate ... --controlnet OWNER/NAME` (or this folder), or in diffusers: "
                  "`ControlNetModel.from_pretrained(\"OWNER/NAME\")` in a StableDiffusionControlNetInpaintPipeline.",
    "lora/controlnet": "The LoRA adapter of the ControlNet (PEFT format): `controlnet.load_lora_adapter(PATH)`. "
                       "The merged ControlNet is exported beside it.",
    "lora/unet": "A UNet LoRA in diffusers' format: `reliable-ad generate ... --lora OWNER/NAME --lora-scale 1.0`, "
                 "or `pipe.load_lora_weights(\"OWNER/NAME\")` (trained at scale 1).",
}


def last_validation(out_dir: Path) -> tuple[int | None, dict]:
    """(step, values) of the run's newest validation record in logs/metrics.jsonl; (None, {}) when none."""
    records = [r for r in read_jsonl(Path(out_dir) / LOGS / METRICS) if r.get("kind") == "validation"]
    return (records[-1].get("step"), records[-1]) if records else (None, {})


def card_info(name: str, info: dict, *, step: int, validation: tuple[int | None, dict]) -> CardInfo:
    """The model card of one exported folder (``name`` as in :func:`export_trained`'s result)."""
    val_step, values = validation
    lora = name.startswith("lora/")
    return CardInfo(
        model_name=f"RFFT {name}", library_name="diffusers", task="image-to-image",
        summary=(f"A ControlNet-inpainting ad generator fine-tuned with RFFT, reliable-ad's reliable feedback "
                 f"fine-tuning (docs/method.md §5), for {step} steps: RFNet's feedback steers the backgrounds "
                 "generated around e-commerce product cut-outs towards usable ads."),
        base_model=hub_ids(info.get("controlnet"), info.get("base")),
        tags=["diffusers", "controlnet", "stable-diffusion", "inpainting", "rfft", "e-commerce", "advertising",
              *(["lora"] if lora else [])],
        metrics=finite_metrics(values, CARD_METRICS, f"validation (step {val_step})" if values else None),
        dataset="held-out validation products of the RFFT run",
        sections={"Usage": USAGE[name]},
    )


def export_trained(out_dir: Path, trainable, *, step: int, info: dict) -> dict[str, str]:
    """Write the trained model where `reliable-ad generate` can use it; returns {what: folder}.

    ControlNet target: `export/controlnet/`, a diffusers folder (`--controlnet PATH`).
    LoRA on the ControlNet: the adapter (`export/lora/controlnet/`) and the ControlNet with it merged
    (`export/controlnet/`, for `--controlnet PATH`). LoRA on the UNet: `export/lora/unet/` in the
    diffusers LoRA format (`--lora PATH --lora-scale 1.0`: it was trained at scale 1).
    """
    root = Path(out_dir) / EXPORT
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    validation = last_validation(out_dir)

    def into(name: str, write) -> None:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            write(tmp)
            write_card(tmp, card_info(name, info, step=step, validation=validation))
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        written[name] = str(target)

    controlnet = trainable.modules.get("controlnet")
    if not trainable.lora:
        into("controlnet", lambda d: controlnet.save_pretrained(d, safe_serialization=True))
    else:
        if controlnet is not None:
            into("lora/controlnet", lambda d: controlnet.save_lora_adapter(d, adapter_name=ADAPTER))
            merged = copy.deepcopy(controlnet)
            merged.fuse_lora(lora_scale=1.0, adapter_names=[ADAPTER])
            merged.unload_lora()
            into("controlnet", lambda d: merged.save_pretrained(d, safe_serialization=True))
        unet = trainable.modules.get("unet")
        if unet is not None:
            from diffusers import StableDiffusionPipeline
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=ADAPTER))
            into("lora/unet", lambda d: StableDiffusionPipeline.save_lora_weights(d, unet_lora_layers=layers))
    atomic_write_json(root / "export.json", {"step": step, "written": written, "model": info})
    return written
