"""Write diffusers components as ONE checkpoint in the original Stable Diffusion (LDM) key layout.

Users bring single `.safetensors` files such as majicMIX realistic v7 (keys `model.diffusion_model.*`,
`first_stage_model.*`, `cond_stage_model.transformer.*`) and ControlNets keyed `control_model.*`.
None can be downloaded offline, so the tests make one: the inverse of diffusers' LDM-to-diffusers
conversion, written here by name from the two layouts, and checked against diffusers' own forward
conversion (`check_roundtrip`) so that a wrong inversion cannot pass silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
CONTROLNET_PREFIX = "control_model."

# diffusers ResnetBlock2D (UNet/ControlNet) -> LDM ResBlock
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
# top-level UNet/ControlNet layers
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_TOP = {"conv_norm_out": "norm_out"}  # encoder./decoder. conv_in, conv_out and (post_)quant_conv keep names
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _split(key: str) -> tuple[str, str]:
    """'down_blocks.1.resnets.0.conv1.weight' -> ('down_blocks.1.resnets.0.conv1', 'weight')."""
    head, _, leaf = key.rpartition(".")
    return head, leaf


def _resnet_tail(tail: str) -> str:
    """'conv1.weight' -> 'in_layers.2.weight' (UNet ResBlock naming)."""
    name, _, rest = tail.partition(".")
    return f"{_UNET_RESNET[name]}.{rest}"


def _unet_key(key: str, layers_per_block: int, *, controlnet: bool = False) -> str:
    """One diffusers UNet2DConditionModel / ControlNetModel key -> its LDM key (without prefix)."""
    per = layers_per_block + 1  # LDM input block slots per level: the resnets, then the downsampler
    for d, ldm in _UNET_TOP.items():
        if key.startswith(d + "."):
            return ldm + key[len(d):]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, tail = int(m[1]), m[2], int(m[3]), m[4]
        slot = 1 + b * per + j
        return f"input_blocks.{slot}.0.{_resnet_tail(tail)}" if kind == "resnets" else f"input_blocks.{slot}.1.{tail}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * per + layers_per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet_tail(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if controlnet:
        if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
            return f"zero_convs.{m[1]}.0.{m[2]}"
        if m := re.fullmatch(r"controlnet_mid_block\.(.+)", key):
            return f"middle_block_out.0.{m[1]}"
        # the hint encoder is one Sequential of convs with SiLUs between: conv_in at 0, blocks at 2, 4, ...,
        # conv_out at 14 (SD1.5 ControlNets have 6 blocks; the layout keeps 14 for conv_out)
        if m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(.+)", key):
            return f"input_hint_block.0.{m[1]}"
        if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", key):
            return f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        if m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(.+)", key):
            return f"input_hint_block.14.{m[1]}"
    else:
        if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            b, kind, j, tail = int(m[1]), m[2], int(m[3]), m[4]
            slot = b * per + j
            return f"output_blocks.{slot}.0.{_resnet_tail(tail)}" if kind == "resnets" else f"output_blocks.{slot}.1.{tail}"
    raise KeyError(f"no LDM name for diffusers key {key!r}")


def unet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    out = {}
    # the upsampler sits after the last resnet of its level: index 1 without attention, 2 with it
    with_attn = {int(k.split(".")[1]) for k in state if re.match(r"up_blocks\.\d+\.attentions\.", k)}
    for key, value in state.items():
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            b = int(m[1])
            name = f"output_blocks.{b * (layers_per_block + 1) + layers_per_block}.{2 if b in with_attn else 1}.conv.{m[2]}"
        else:
            name = _unet_key(key, layers_per_block)
        out[UNET_PREFIX + name] = value
    return out


def controlnet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    return {CONTROLNET_PREFIX + _unet_key(k, layers_per_block, controlnet=True): v for k, v in state.items()}


def _vae_key(key: str, n_levels: int) -> str:
    part, _, rest = key.partition(".")  # encoder / decoder / quant_conv / post_quant_conv
    if part in ("quant_conv", "post_quant_conv"):
        return key
    for d, ldm in _VAE_TOP.items():
        if rest.startswith(d + "."):
            return f"{part}.{ldm}{rest[len(d):]}"
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        level = int(m[2]) if m[1] == "down" else n_levels - 1 - int(m[2])  # LDM numbers decoder levels bottom-up
        return f"{part}.{m[1]}.{level}.block.{m[3]}.{m[4].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", rest):
        return f"{part}.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", rest):
        return f"{part}.up.{n_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)\.(weight|bias)", rest):
        return f"{part}.mid.attn_1.{_VAE_ATTN[m[1]]}.{m[2]}"
    if rest.split(".")[0] in ("conv_in", "conv_out"):
        return key
    raise KeyError(f"no LDM name for diffusers VAE key {key!r}")


def vae_to_ldm(state: dict[str, torch.Tensor], n_levels: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        name = _vae_key(key, n_levels)
        if ".mid.attn_1." in name and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out[VAE_PREFIX + name] = value
    return out


def clip_to_ldm(state: dict[str, torch.Tensor], *, position_ids: bool = True) -> dict[str, torch.Tensor]:
    """transformers' CLIPTextModel (flat in transformers >= 5.6, `text_model.`-wrapped before) -> LDM."""
    out = {CLIP_PREFIX + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}
    if position_ids:  # SD1.x checkpoints carry this buffer (real files do; loaders must tolerate it)
        n = next(v for k, v in state.items() if k.endswith("position_embedding.weight")).shape[0]
        out[CLIP_PREFIX + "text_model.embeddings.position_ids"] = torch.arange(n)[None]
    return out


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def base_to_ldm(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """The base model's three components as one LDM-layout state dict (what an SD1.5 .safetensors holds)."""
    return _contiguous({
        **unet_to_ldm(unet.state_dict(), unet.config.layers_per_block),
        **vae_to_ldm(vae.state_dict(), len(vae.config.down_block_types)),
        **clip_to_ldm(text_encoder.state_dict()),
    })


def check_roundtrip(ldm: dict[str, torch.Tensor], *, unet=None, vae=None, text_encoder=None, controlnet=None) -> None:
    """Convert ``ldm`` back with diffusers' own converters and assert every tensor equals the original's.

    Raises AssertionError naming the first missing/extra/different key.
    """
    from diffusers.loaders import single_file_utils as sfu

    def same(name: str, got: dict, want: dict) -> None:
        got = {k.removeprefix("text_model.") if name == "text_encoder" else k: v for k, v in got.items()}
        want = {k.removeprefix("text_model.") if name == "text_encoder" else k: v for k, v in want.items()}
        got.pop("embeddings.position_ids", None)
        want.pop("embeddings.position_ids", None)
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        assert not missing and not extra, f"{name}: diffusers' conversion misses {missing[:5]}, adds {extra[:5]}"
        for k, v in want.items():
            assert got[k] is not None and got[k].shape == v.shape and torch.equal(got[k], v), f"{name}: {k} differs"

    if unet is not None:
        same("unet", sfu.convert_ldm_unet_checkpoint(ldm, dict(unet.config)), unet.state_dict())
    if vae is not None:
        same("vae", sfu.convert_ldm_vae_checkpoint(ldm, dict(vae.config)), vae.state_dict())
    if text_encoder is not None:
        assert sfu.is_clip_model(ldm), "diffusers does not recognise the text encoder in the LDM dict"
        same("text_encoder", sfu.convert_ldm_clip_checkpoint(ldm), text_encoder.state_dict())
    if controlnet is not None:
        same("controlnet", sfu.convert_controlnet_checkpoint(ldm, dict(controlnet.config)), controlnet.state_dict())


def write_base_checkpoint(folder: str | Path, path: str | Path) -> Path:
    """Read a diffusers base folder (unet/, vae/, text_encoder/) and write it as one LDM `.safetensors`;
    the conversion is checked against diffusers' forward conversion before anything is written."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    te = CLIPTextModel.from_pretrained(folder / "text_encoder")
    ldm = base_to_ldm(unet, vae, te)
    check_roundtrip(ldm, unet=unet, vae=vae, text_encoder=te)
    save_file(ldm, str(path))
    return Path(path)


def write_controlnet_checkpoint(folder: str | Path, path: str | Path) -> Path:
    """A diffusers ControlNet folder as one `control_model.*` `.safetensors` (round trip checked)."""
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    cn = ControlNetModel.from_pretrained(folder)
    ldm = _contiguous(controlnet_to_ldm(cn.state_dict(), cn.config.layers_per_block))
    check_roundtrip(ldm, controlnet=cn)
    save_file(ldm, str(path))
    return Path(path)


def config_only_copy(folder: str | Path, dest: str | Path) -> Path:
    """A copy of a diffusers folder without weight files: what `--base-config` needs, and proof that
    the weights a single-file load ends up with came from the file, not the folder."""
    import shutil

    folder, dest = Path(folder), Path(dest)
    weights = {".safetensors", ".bin", ".ckpt", ".pt", ".msgpack", ".onnx"}
    shutil.copytree(folder, dest, ignore=lambda d, names: [n for n in names if Path(n).suffix in weights])
    return dest
