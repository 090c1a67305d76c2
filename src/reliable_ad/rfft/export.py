"""The export of a trained RFFT run, where `reliable-ad generate` and `run` can use it (docs/method.md §5).

Each exported folder is written under a temporary name and renamed into place; export.json records
the step and what was written. Checkpoints (for resume) are `reliable_ad.training.checkpoint`'s.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

from reliable_ad.core.io import atomic_write_json
from reliable_ad.rfft.trainable import ADAPTER
from reliable_ad.training.checkpoint import replace_dir

EXPORT = "export"


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

    def into(name: str, write) -> None:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            write(tmp)
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
