"""Turns RFNet's raw inputs into the tensors `RFNet.forward` takes: caption token ids, resized images.

Lives outside the nn.Module because tokenizers are files (I/O). The tiny preset's tokenizer is built
in memory from a fixed WordPiece vocabulary: ASCII letters and digits, punctuation, and a few hundred
common Chinese characters one token each (others become [UNK]), so it is deterministic and offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from reliable_ad.rfnet.config import RFNetConfig
from reliable_ad.rfnet.encoders import fetch_pretrained
from reliable_ad.rfnet.io import read_config, resolve_folder
from reliable_ad.rfnet.vocab import tiny_vocab

TOKENIZER_FOLDER = "tokenizer"  # subfolder of a saved RFNet
def build_tiny_tokenizer(max_length: int = 64):
    """A BERT WordPiece tokenizer over `tiny_vocab`: every ASCII word tokenizes, CJK per character."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab=dict(tiny_vocab()), do_lower_case=True, model_max_length=max_length)


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    return fetch_pretrained("text_encoder.name_or_path (tokenizer)", name_or_path, AutoTokenizer.from_pretrained)


def _check_images(name: str, images, channels: int) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, {channels}, H, W) in [0, 1], got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(
            f"{name} has dtype {images.dtype}; RFNet takes float images in [0, 1] (for uint8 use images / 255)"
        )
    if images.ndim != 4 or images.shape[1] != channels:
        raise ValueError(f"{name} has shape {tuple(images.shape)}; expected (B, {channels}, H, W)")
    return images


class RFNetProcessor:
    """Captions -> ``input_ids``/``attention_mask``; images -> (B, C, S, S) at the model's image size.

    ``processor(captions=..., product=..., generated=..., depth=..., salience=...)`` returns a dict to
    pass as ``model(**batch)``. Images are float tensors in [0, 1]: product and generated (B, 3, H, W),
    depth and salience (B, 1, H, W); they are resized (bilinear, antialiased) to ``image_size`` square.
    """

    def __init__(self, tokenizer=None, *, image_size: int = 384, max_length: int = 64):
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.max_length = int(max_length)

    @classmethod
    def from_config(cls, config: RFNetConfig, tokenizer=None) -> RFNetProcessor:
        """The processor for ``config``; loads the named model's tokenizer unless one is given (I/O)."""
        if tokenizer is None and config.modalities.caption:
            name = config.text_encoder.name_or_path
            tokenizer = build_tiny_tokenizer(config.text_encoder.max_length) if name is None else load_tokenizer(name)
        return cls(tokenizer, image_size=config.image_size, max_length=config.text_encoder.max_length)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> RFNetProcessor:
        """The processor of a saved RFNet folder (its config and its ``tokenizer/`` subfolder)."""
        folder = resolve_folder(folder)
        config = read_config(folder)
        tokenizer = None
        if config.modalities.caption:
            tok_dir = folder / TOKENIZER_FOLDER
            if not tok_dir.is_dir():
                raise ValueError(f"{str(folder)!r} has no {TOKENIZER_FOLDER}/ folder; re-save it with save_pretrained")
            tokenizer = load_tokenizer(str(tok_dir))
        return cls(tokenizer, image_size=config.image_size, max_length=config.text_encoder.max_length)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the tokenizer into ``folder/tokenizer`` (non-atomic; io.save_pretrained wraps it)."""
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(Path(folder) / TOKENIZER_FOLDER))

    def tokenize(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError(f"captions must be a list of strings (one per image), got {captions!r:.80}")
        if self.tokenizer is None:
            raise ValueError("this processor has no tokenizer (its model has the caption off); pass captions=None")
        enc = self.tokenizer(
            list(captions), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        if tuple(images.shape[-2:]) == size:
            return images
        return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)

    def __call__(
        self,
        captions: Sequence[str] | None = None,
        *,
        product: torch.Tensor | None = None,
        generated: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
        salience: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, images, channels in (
            ("product", product, 3),
            ("generated", generated, 3),
            ("depth", depth, 1),
            ("salience", salience, 1),
        ):
            if images is not None:
                out[name] = self.resize(_check_images(name, images, channels))
        if captions is not None:
            out.update(self.tokenize(captions))
        return out
