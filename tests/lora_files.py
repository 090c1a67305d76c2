"""Write a random LoRA for the tiny model, the same weights in the two file formats users bring.

- diffusers/peft: what `StableDiffusionPipeline.save_lora_weights` writes from peft adapters, keys
  `unet.<module>.lora_A.weight` / `.lora_B.weight` and `text_encoder.<module>.lora_A.weight` ...
- kohya/A1111 (sd-scripts, Civitai downloads): one key per module, the diffusers module name with dots
  turned into underscores under `lora_unet_` / `lora_te_`, weights `.lora_down.weight` (= lora_A),
  `.lora_up.weight` (= lora_B) and a scalar `.alpha`; the delta is (alpha / rank) * up @ down.

`LoraWeights.delta` gives the update a module gets at scale 1, for checks by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
# one Linear layer of each model, checked by hand in the tests
UNET_LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
TEXT_LAYER = "text_model.encoder.layers.0.self_attn.q_proj"


@dataclass
class LoraWeights:
    """lora_A (down) and lora_B (up) per module, keyed `unet.<module>` / `text_encoder.<module>`."""

    down: dict[str, torch.Tensor]
    up: dict[str, torch.Tensor]
    rank: int

    def delta(self, module: str) -> torch.Tensor:
        """The weight update of a Linear ``module`` at scale 1: up @ down (alpha = rank)."""
        return self.up[module].flatten(1) @ self.down[module].flatten(1)


def make_lora(base_folder: str | Path, *, rank: int = 4, seed: int = 0, std: float = 0.3) -> LoraWeights:
    """Random LoRA weights for the tiny base model's UNet and text encoder, made with peft adapters."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel

    base_folder = Path(base_folder)
    down: dict[str, torch.Tensor] = {}
    up: dict[str, torch.Tensor] = {}
    g = torch.Generator().manual_seed(seed)
    for prefix, model, targets in (
        ("unet", UNet2DConditionModel.from_pretrained(base_folder / "unet"), UNET_TARGETS),
        ("text_encoder", CLIPTextModel.from_pretrained(base_folder / "text_encoder"), TEXT_TARGETS),
    ):
        config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets)
        inject_adapter_in_model(config, model, adapter_name="made")
        state = get_peft_model_state_dict(model, adapter_name="made")
        for key, value in state.items():
            module, _, kind = key.rpartition(".lora_")  # 'x.to_q', 'A.weight'
            tensor = torch.randn(value.shape, generator=g) * std  # lora_B is 0 at init: randomise both
            if prefix == "text_encoder" and not module.startswith("text_model."):
                # transformers >= 5 drops CLIPTextModel's `text_model.` level; files made with older
                # versions (every LoRA in circulation) keep it, so the files here do too
                module = f"text_model.{module}"
            (down if kind.startswith("A") else up)[f"{prefix}.{module}"] = tensor
    assert down.keys() == up.keys() and down, "no LoRA layers were made"
    return LoraWeights(down, up, rank)


def write_diffusers(lora: LoraWeights, path: Path) -> Path:
    """The diffusers/peft format, through diffusers' own writer."""
    from diffusers import StableDiffusionPipeline

    layers: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "text_encoder": {}}
    for key in lora.down:
        prefix, _, module = key.partition(".")
        layers[prefix][f"{module}.lora_A.weight"] = lora.down[key]
        layers[prefix][f"{module}.lora_B.weight"] = lora.up[key]
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=layers["unet"],
                                              text_encoder_lora_layers=layers["text_encoder"], weight_name=path.name)
    return path


KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_"}


def kohya_key(key: str) -> str:
    """'unet.down_blocks.1.attentions.0.proj_in' -> 'lora_unet_down_blocks_1_attentions_0_proj_in'."""
    prefix, _, module = key.partition(".")
    return KOHYA_PREFIX[prefix] + module.replace(".", "_")


def write_kohya(lora: LoraWeights, path: Path, *, alpha: float | None = None) -> Path:
    """The kohya/A1111 format. ``alpha`` (default: rank) is stored per module and the up weights are
    rescaled by rank / alpha, so the file holds the same deltas whatever alpha is."""
    alpha = float(alpha or lora.rank)
    sd = {}
    for key in lora.down:
        k = kohya_key(key)
        sd[f"{k}.lora_down.weight"] = lora.down[key].contiguous()
        sd[f"{k}.lora_up.weight"] = (lora.up[key] * (lora.rank / alpha)).contiguous()
        sd[f"{k}.alpha"] = torch.tensor(alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(lora.rank),
                                       "ss_network_alpha": str(alpha)})
    return path
