"""The `tiny` model preset: SD1.5-shaped components at toy size, built from configs with fixed seeds.

Nothing is downloaded. The components are written to a local folder in the layout a user's checkpoint
has (a diffusers base-model folder and a ControlNet folder) and then loaded through the same code path
as real weights, so tests exercise the loader too. The images it makes are noise-like: it is for
tests and for a first run on a fresh machine, not for ads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

TINY_VERSION = "3"
TEXT_DIM = 32


def _byte_vocab() -> dict[str, int]:
    # CLIP's byte-to-unicode table: every byte gets a printable symbol, so any text tokenizes.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    symbols = [chr(c) for c in cs]
    vocab = {s: i for i, s in enumerate(symbols)}
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def build_tiny_tokenizer(words: Sequence[str] = ()):
    """A deterministic byte-level CLIP tokenizer: every character is a token, and each of ``words``
    (lower-case ASCII letters) is one token of its own, as a real CLIP vocabulary has "pink" and "sofa".

    The merges are made, not learnt: for each word in turn, the pair of symbols that the merges so far
    leave first is merged next, until the word is one symbol. A merge added later only fires once
    every earlier one is used up, so words made before stay whole: the same words give the same
    tokenizer in any run, and other text still tokenizes, character by character where need be."""
    from transformers import CLIPTokenizer

    vocab, merges = _byte_vocab(), []
    for word in dict.fromkeys(words):
        if not (word.isascii() and word.isalpha() and word.islower()):
            raise ValueError(f"tokenizer word {word!r}: only lower-case ASCII letters make one token")
        while len(symbols := _bpe(word, merges)) > 1:
            merges.append((symbols[0], symbols[1]))
            vocab.setdefault(symbols[0] + symbols[1], len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    for word in words:
        if len(tokenizer.tokenize(word)) != 1:  # the simulation below must agree with CLIP's BPE
            raise AssertionError(f"{word!r} tokenizes to {tokenizer.tokenize(word)}")
    return tokenizer


def _bpe(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """CLIP's byte-pair encoding of one lower-case ASCII word: symbols are its characters (the last one
    marked "</w>"); the adjacent pair of lowest merge rank is merged, everywhere, until none is left."""
    rank = {pair: i for i, pair in enumerate(merges)}
    symbols = [*word[:-1], word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = [(rank.get(pair, len(rank)), pair) for pair in zip(symbols, symbols[1:])]
        best, pair = min(pairs)
        if best == len(rank):
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def build_tiny_components(*, inpaint_unet: bool = False, seed: int = 0, image_size: int = 128,
                          vae_scale_factor: int = 8, unet_channels: tuple[int, ...] = (32, 64),
                          words: Sequence[str] = ()) -> dict:
    """Random-weight components with SD1.5's structure (CLIP text encoder, 4/9-channel UNet, VAE with
    `vae_scale_factor` 8 as SD1.5's by default; 4 keeps 16x16 latents at 64 px, as SynthAd's generator).

    `unet_channels`: the UNet's and ControlNet's block widths; the first block has no attention, the
    others cross-attend to the prompt, as SD1.5's lower-resolution blocks do.
    """
    if vae_scale_factor not in (2, 4, 8, 16) or image_size % vae_scale_factor:
        raise ValueError(f"vae_scale_factor={vae_scale_factor} must be 2, 4, 8 or 16 and divide image_size={image_size}")
    levels = vae_scale_factor.bit_length()  # VAE blocks: log2(factor) + 1
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer(words)  # `words`: one token each (build_tiny_tokenizer)
    torch.manual_seed(seed)
    n = len(unet_channels)
    unet_kwargs = dict(
        block_out_channels=tuple(unet_channels),
        layers_per_block=1,
        sample_size=image_size // vae_scale_factor,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    unet = UNet2DConditionModel(in_channels=9 if inpaint_unet else 4, out_channels=4, **unet_kwargs)
    torch.manual_seed(seed + 1)
    # Built from a 4-channel config: the pipeline feeds the ControlNet plain latents even for 9-ch UNets.
    controlnet = ControlNetModel(
        in_channels=4,
        block_out_channels=unet_kwargs["block_out_channels"],
        layers_per_block=1,
        down_block_types=unet_kwargs["down_block_types"],
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
        conditioning_embedding_out_channels=(8, 16, 16, 16, 16)[:levels],  # log2(vae factor) + 1 entries
    )
    # A fresh ControlNet's zero convolutions make the control image irrelevant; give them small
    # random values so the tiny model's output depends on the control image, as a trained one does.
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        zero_init = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out]
        for module in zero_init:
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.5)
    torch.manual_seed(seed + 3)
    vae = AutoencoderKL(
        block_out_channels=(16, 16, 32, 32, 32)[:levels],
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=image_size,
    )
    torch.manual_seed(seed + 4)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=TEXT_DIM,
            intermediate_size=64,
            num_hidden_layers=3,  # >= 2 so that clip skip 2 means something
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=TEXT_DIM,
        )
    )
    # A trained CLIP's final LayerNorm has a non-zero bias; with the fresh zero bias every embedding has
    # mean 0 and A1111's emphasis rescale (which divides by the mean) would be undefined.
    with torch.no_grad():
        getattr(text_encoder, "text_model", text_encoder).final_layer_norm.bias.copy_(torch.randn(TEXT_DIM, generator=g) * 0.5)
    scheduler = DDIMScheduler(  # SD1.5's training schedule
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        controlnet=controlnet,
        scheduler=scheduler,
    )


def default_cache_dir() -> Path:
    root = os.environ.get("RELIABLE_AD_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "reliable-ad"
    )
    return Path(root) / "models"


def _complete(target: Path) -> bool:
    return (target / "base" / "model_index.json").exists() and (target / "controlnet" / "config.json").exists()


def ensure_tiny_checkpoint(root: str | os.PathLike | None = None, *, inpaint_unet: bool = False) -> tuple[Path, Path]:
    """Write the tiny checkpoint once (atomically) and return (base folder, controlnet folder)."""
    from diffusers import StableDiffusionPipeline

    root = Path(root) if root else default_cache_dir()
    name = f"tiny{'-inpaint' if inpaint_unet else ''}-v{TINY_VERSION}"
    target = root / name
    if not _complete(target):
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            parts = build_tiny_components(inpaint_unet=inpaint_unet)
            controlnet = parts.pop("controlnet")
            base = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            base.save_pretrained(tmp / "base")
            controlnet.save_pretrained(tmp / "controlnet")
            if _complete(target):  # another process finished first: keep its folder
                shutil.rmtree(tmp, ignore_errors=True)
                return target / "base", target / "controlnet"
            if target.exists():  # a half-built folder from an old crash (os.replace never leaves one)
                shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        except FileExistsError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if not _complete(target):
                raise RuntimeError(f"could not write the tiny checkpoint to {target}: {e}") from e
    return target / "base", target / "controlnet"


def build_tiny_safety_checker(flag: bool, *, seed: int = 0, image_size: int = 32):
    """diffusers' NSFW checker (`StableDiffusionSafetyChecker`, a CLIP vision tower with concept
    embeddings) at toy size, and the `CLIPImageProcessor` that feeds it: (safety_checker, feature_extractor).

    The checker flags an image when the cosine similarity of its embedding to a concept embedding exceeds
    that concept's threshold (``concept_embeds_weights``). Cosines lie in [-1, 1], so thresholds of -2 make
    it flag every image (``flag=True``) and thresholds of 2 flag none: tests of what happens to a flagged
    image do not depend on what random weights see.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    try:  # the PIL backend: CLIPImageProcessor itself falls back to it (with a warning) without torchvision
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4
        from transformers import CLIPImageProcessor as Processor

    tower = dict(hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=99, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(tower, image_size=image_size, patch_size=8),
        projection_dim=TEXT_DIM,
    )
    torch.manual_seed(seed + 5)
    checker = StableDiffusionSafetyChecker(config).eval()
    g = torch.Generator().manual_seed(seed + 6)
    threshold = -2.0 if flag else 2.0
    with torch.no_grad():
        checker.concept_embeds.copy_(torch.randn(checker.concept_embeds.shape, generator=g))
        checker.special_care_embeds.copy_(torch.randn(checker.special_care_embeds.shape, generator=g))
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
    processor = Processor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return checker, processor


def attach_tiny_safety_checker(pipe, flag: bool) -> None:
    """Give a loaded pipeline (the tiny model's has no checker) the tiny checker, as a real model ships one."""
    checker, processor = build_tiny_safety_checker(flag)
    pipe.register_modules(safety_checker=checker.to(pipe.device, pipe.unet.dtype), feature_extractor=processor)
    pipe.register_to_config(requires_safety_checker=True)


def write_tiny_safety_checker(base_folder: str | os.PathLike, flag: bool) -> None:
    """Add ``safety_checker/`` and ``feature_extractor/`` to a diffusers base-model folder, listed in its
    model_index.json as a Stable Diffusion 1.5 download lists them, so that the folder loads as one does."""
    import json

    folder = Path(base_folder)
    checker, processor = build_tiny_safety_checker(flag)
    checker.save_pretrained(folder / "safety_checker")
    processor.save_pretrained(folder / "feature_extractor")
    # a real folder names the class CLIPImageProcessor, whichever backend transformers picks for it
    pre = json.loads((folder / "feature_extractor" / "preprocessor_config.json").read_text())
    pre["image_processor_type"] = "CLIPImageProcessor"
    (folder / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    index = json.loads((folder / "model_index.json").read_text())
    index.update(safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                 feature_extractor=["transformers", "CLIPImageProcessor"], requires_safety_checker=True)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
