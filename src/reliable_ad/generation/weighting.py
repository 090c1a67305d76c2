"""A1111-style weighted prompts ("(low quality:1.4)", BREAK, prompts past 75 tokens) -> prompt embeddings.

The authors wrote their presets for the A1111 web UI, whose attention syntax diffusers does not parse
(and compel parses a different syntax), so a small parser and encoder of our own reproduce it here:
fragments are tokenised separately, packed into 75-token chunks, encoded chunk by chunk, weighted and
re-scaled with A1111's default ("Original") emphasis. Deliberate deviations from A1111 are listed in
`parse_weighted_prompt` and `encode_weighted_prompts`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Sequence

import torch

logger = logging.getLogger(__name__)

ROUND_MULTIPLIER = 1.1  # "(text)": A1111's attention multiplier
SQUARE_MULTIPLIER = 1 / 1.1  # "[text]"
BREAK_TEXT = "BREAK"
BREAK_WEIGHT = -1.0  # A1111's marker: a BREAK fragment is ("BREAK", -1.0) in parse_weighted_prompt's output
COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack: move the words after a late comma to the next chunk

# A1111's tokeniser for the attention syntax (modules/prompt_parser.py), alternative by alternative.
_RE_ATTENTION = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes: \( \) \[ \] \\ and a lone backslash (dropped)
    \(|\[|                        # openers
    :\s*([+-]?[.\d]+)\s*\)|       # ":1.4)" closes a "(" with an explicit weight
    \)|]|                         # closers
    [^\\()\[\]:]+|                # plain text
    :                             # a colon that is not a weight
    """,
    re.X,
)
_RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


@dataclass
class _Fragment:
    text: str
    weight: float
    is_break: bool = False


def _parse(text: str) -> list[_Fragment]:
    if not isinstance(text, str):
        raise TypeError(f"a prompt must be a str, got {type(text).__name__} {text!r}")
    res: list[_Fragment] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for frag in res[start:]:
            if not frag.is_break:
                frag.weight *= multiplier

    for m in _RE_ATTENTION.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append(_Fragment(token[1:], 1.0))
        elif token == "(":
            round_open.append(len(res))
        elif token == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            try:
                value = float(weight)
            except ValueError:
                raise ValueError(
                    f"prompt weight {weight!r} in {text!r} is not a number; write e.g. '(text:1.2)', "
                    r"or escape literal brackets as '\(' and '\)'"
                ) from None
            multiply_from(round_open.pop(), value)
        elif token == ")" and round_open:
            multiply_from(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
        else:  # text, or a stray closer / colon, which A1111 keeps as literal text
            for i, part in enumerate(_RE_BREAK.split(token)):
                if i > 0:
                    res.append(_Fragment(BREAK_TEXT, BREAK_WEIGHT, is_break=True))
                res.append(_Fragment(part, 1.0))

    # Unclosed brackets apply to the rest of the prompt, as in A1111.
    for start in round_open:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_from(start, SQUARE_MULTIPLIER)

    merged: list[_Fragment] = []
    for frag in res:
        if not frag.is_break and not frag.text:
            continue
        prev = merged[-1] if merged else None
        if prev is not None and not prev.is_break and not frag.is_break and prev.weight == frag.weight:
            prev.text += frag.text
        else:
            merged.append(frag)
    return merged or [_Fragment("", 1.0)]


def parse_weighted_prompt(text: str) -> list[tuple[str, float]]:
    """Split an A1111 prompt into (text, weight) fragments.

    `(text:1.4)` sets a weight, `(text)` multiplies by 1.1, `[text]` divides by 1.1, nesting multiplies;
    `\\(`, `\\)`, `\\[`, `\\]` are literal brackets; an unclosed bracket applies to the rest of the prompt
    and a stray closer is literal text, as in A1111. The keyword BREAK becomes ("BREAK", -1.0) and
    starts a new 75-token chunk. Adjacent fragments of equal weight are merged; empty ones dropped.

    Deviation from A1111: a BREAK inside brackets still breaks (A1111 multiplies its marker weight
    and then encodes the word "BREAK" with a negative weight).

    >>> parse_weighted_prompt("a (red:1.5) car, [blurry]")
    [('a ', 1.0), ('red', 1.5), (' car, ', 1.0), ('blurry', 0.9090909090909091)]
    """
    return [(f.text, f.weight) for f in _parse(text)]


def has_weighting(text: str) -> bool:
    """True if `text` uses any attention syntax (weights, brackets, escapes, BREAK).

    Where this is False the parsed prompt is the text itself at weight 1, so diffusers' own encoding
    of the plain string is the same as ours (for prompts of at most 75 tokens).
    """
    return [(f.text, f.weight, f.is_break) for f in _parse(text)] != [(text, 1.0, False)]


# --- tokenisation into chunks -------------------------------------------------------------------


def _chunk_length(tokenizer, text_encoder) -> int:
    length = int(tokenizer.model_max_length)
    max_positions = getattr(text_encoder.config, "max_position_embeddings", length)
    if not 3 <= length <= max_positions:
        raise ValueError(
            f"tokenizer.model_max_length={length} does not fit the text encoder "
            f"(max_position_embeddings={max_positions}); load the tokenizer that belongs to the model"
        )
    return length


def _tokenize_chunks(tokenizer, text: str, content_length: int) -> list[tuple[list[int], list[float]]]:
    """Pack the prompt's tokens into chunks of at most `content_length` (A1111's tokenize_line)."""
    fragments = _parse(text)
    texts = [f.text for f in fragments]
    token_lists = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    comma = tokenizer.get_vocab().get(",</w>")

    chunks: list[tuple[list[int], list[float]]] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close_chunk() -> None:
        nonlocal tokens, weights, last_comma
        chunks.append((tokens, weights))
        tokens, weights, last_comma = [], [], -1

    for frag, ids in zip(fragments, token_lists):
        if frag.is_break:
            close_chunk()
            continue
        for token in ids:
            if token == comma:
                last_comma = len(tokens)
            elif len(tokens) == content_length and last_comma != -1 and len(tokens) - last_comma <= COMMA_BACKTRACK:
                # Break after the last comma rather than mid-phrase; the rest moves to the next chunk.
                moved_tokens, moved_weights = tokens[last_comma + 1 :], weights[last_comma + 1 :]
                tokens, weights = tokens[: last_comma + 1], weights[: last_comma + 1]
                close_chunk()
                tokens, weights = moved_tokens, moved_weights
            if len(tokens) == content_length:
                close_chunk()
            tokens.append(token)
            weights.append(frag.weight)
    if tokens or not chunks:
        close_chunk()
    return chunks


def _frame_chunk(tokenizer, tokens: list[int], weights: list[float], length: int):
    """[BOS] + tokens + [EOS] + padding, exactly as the tokenizer frames a short prompt for diffusers."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n_pad = length - len(tokens) - 2
    ids = [tokenizer.bos_token_id, *tokens, tokenizer.eos_token_id] + [pad] * n_pad
    mults = [1.0, *weights, 1.0] + [1.0] * n_pad
    mask = [1] * (len(tokens) + 2) + [0] * n_pad
    return ids, mults, mask


# --- encoding -----------------------------------------------------------------------------------


def _check_clip_skip(text_encoder, clip_skip: int | None) -> None:
    if clip_skip is None:
        return
    n_layers = getattr(text_encoder.config, "num_hidden_layers", None)
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or clip_skip < 0 or (
        n_layers is not None and clip_skip >= n_layers
    ):
        raise ValueError(
            f"clip_skip={clip_skip!r} must be None or an int in [0, {n_layers}) (diffusers convention: "
            "None = last layer, 1 = penultimate; A1111's 'clip skip 2' is 1)"
        )


def _run_text_encoder(text_encoder, ids: torch.Tensor, mask: torch.Tensor, clip_skip: int | None) -> torch.Tensor:
    """Hidden states (B, L, D) as diffusers' StableDiffusionPipeline.encode_prompt computes them."""
    # diffusers passes the attention mask only to encoders configured to use one (not SD1.5's CLIP).
    attention_mask = mask if getattr(text_encoder.config, "use_attention_mask", False) else None
    if clip_skip is None:
        return text_encoder(ids, attention_mask=attention_mask)[0]
    out = text_encoder(ids, attention_mask=attention_mask, output_hidden_states=True)
    hidden = out.hidden_states[-(clip_skip + 1)]
    # transformers 5 dropped CLIPTextModel.text_model (diffusers 0.42's clip_skip path still uses it,
    # huggingface/diffusers#14124); the final LayerNorm lives on the model itself there.
    final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    return final_norm(hidden)


def _emphasis(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis on one chunk per prompt: z (B, L, D), multipliers (B, L).

    Each token's embedding is multiplied by its weight, then the chunk is rescaled so its mean equals
    the unweighted mean. Deviation: A1111 takes the mean over the whole batch; we take it per prompt,
    so a prompt's encoding does not depend on what it is batched with.
    """
    out = z.clone()
    for b in range(z.shape[0]):
        if bool((multipliers[b] == 1.0).all()):
            continue  # unweighted: bit-identical to the plain encoding
        zb = z[b].float()
        weighted = zb * multipliers[b].float().unsqueeze(-1)
        old_mean, new_mean = zb.mean(), weighted.mean()
        scale = zb.abs().mean()
        if old_mean.abs() <= 1e-4 * scale or new_mean.abs() <= 1e-4 * scale:
            # A zero-mean encoder (e.g. an untrained final LayerNorm) makes the ratio meaningless.
            logger.warning("chunk mean is ~0; prompt weights applied without A1111's mean rescale")
        else:
            weighted = weighted * (old_mean / new_mean)
        out[b] = weighted.to(z.dtype)
    return out


def _encode_framed(text_encoder, ids, mults, masks, clip_skip, device) -> torch.Tensor:
    ids_t = torch.tensor(ids, dtype=torch.long, device=device)
    mask_t = torch.tensor(masks, dtype=torch.long, device=device)
    z = _run_text_encoder(text_encoder, ids_t, mask_t, clip_skip)
    return _emphasis(z, torch.tensor(mults, dtype=torch.float32, device=z.device))


def _as_list(prompts: str | Sequence[str], what: str) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"{what} must be a str or a non-empty list of str, got {prompts!r}")
    return prompts


def encode_weighted_prompts(
    tokenizer,
    text_encoder,
    prompts: str | Sequence[str],
    *,
    clip_skip: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    grad: bool = False,
) -> torch.Tensor:
    """Encode A1111-style prompts into `prompt_embeds` (B, 77 * n_chunks, D) for a diffusers pipeline.

    Each prompt is packed into chunks of 75 tokens (breaking after a late comma, and at BREAK), each
    framed as [BOS] tokens [EOS] padding and encoded on its own; nothing is truncated. Chunks are
    weighted with A1111's "Original" emphasis (see `_emphasis`) and concatenated along the sequence.
    Prompts with fewer chunks are padded with encodings of the empty prompt. An unweighted prompt of at
    most 75 tokens gives exactly diffusers' `encode_prompt` output.

    `clip_skip` follows diffusers (None = last layer, 1 = penultimate hidden state + final LayerNorm).
    Textual-inversion tokens with several vectors must be expanded first
    (`pipe.maybe_convert_prompt(text, pipe.tokenizer)`), as diffusers does. `grad=True` keeps the
    graph, for training the text encoder on exactly the encoding inference uses.
    """
    with torch.set_grad_enabled(grad):
        return _encode_weighted(tokenizer, text_encoder, _as_list(prompts, "prompts"), clip_skip, device, dtype)


def _encode_weighted(tokenizer, text_encoder, prompts: list[str], clip_skip, device, dtype) -> torch.Tensor:
    _check_clip_skip(text_encoder, clip_skip)
    length = _chunk_length(tokenizer, text_encoder)
    encoder_device = device if device is not None else text_encoder.device

    per_prompt = [_tokenize_chunks(tokenizer, p, length - 2) for p in prompts]
    n_chunks = max(len(c) for c in per_prompt)
    if n_chunks > 1:
        logger.debug("prompt encoded in %d chunks of %d tokens: %r", n_chunks, length, prompts)
    empty = ([], [])
    pieces = []
    for i in range(n_chunks):  # one encoder call per chunk position, as A1111 does
        framed = [_frame_chunk(tokenizer, *(c[i] if i < len(c) else empty), length) for c in per_prompt]
        ids, mults, masks = (list(x) for x in zip(*framed))
        pieces.append(_encode_framed(text_encoder, ids, mults, masks, clip_skip, encoder_device))
    embeds = torch.cat(pieces, dim=1)
    return embeds.to(device=embeds.device if device is None else device, dtype=dtype or text_encoder.dtype)


def _pad_with_empty(embeds: torch.Tensor, n_tokens: int, empty_chunk: torch.Tensor) -> torch.Tensor:
    missing = n_tokens - embeds.shape[1]
    if missing == 0:
        return embeds
    reps = missing // empty_chunk.shape[1]
    pad = empty_chunk.to(embeds).expand(embeds.shape[0], -1, -1).repeat(1, reps, 1)
    return torch.cat([embeds, pad], dim=1)


def encode_prompt_pair(
    tokenizer,
    text_encoder,
    prompts: str | Sequence[str],
    negative_prompts: str | Sequence[str] | None = None,
    *,
    clip_skip: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`prompt_embeds` and `negative_prompt_embeds` of equal shape (B, 77 * n, D) for a pipeline call.

    The shorter side is padded with empty-prompt chunks (A1111's "pad prompt/negative prompt"), since
    classifier-free guidance batches both. `negative_prompts` None means the empty prompt. Unlike
    diffusers' `encode_prompt`, which encodes the negative prompt from the last layer whatever
    `clip_skip` says, clip skip applies to both sides here, as in A1111.
    """
    prompts = _as_list(prompts, "prompts")
    if negative_prompts is None:
        negative_prompts = [""] * len(prompts)
    negative_prompts = _as_list(negative_prompts, "negative_prompts")
    if len(negative_prompts) == 1 and len(prompts) > 1:
        negative_prompts = negative_prompts * len(prompts)
    if len(negative_prompts) != len(prompts):
        raise ValueError(
            f"got {len(prompts)} prompts but {len(negative_prompts)} negative prompts; "
            "give one negative prompt, or one per prompt"
        )
    kwargs = dict(clip_skip=clip_skip, device=device, dtype=dtype)
    positive = encode_weighted_prompts(tokenizer, text_encoder, prompts, **kwargs)
    negative = encode_weighted_prompts(tokenizer, text_encoder, negative_prompts, **kwargs)
    if positive.shape[1] != negative.shape[1]:
        empty_chunk = encode_weighted_prompts(tokenizer, text_encoder, [""], **kwargs)
        n_tokens = max(positive.shape[1], negative.shape[1])
        positive = _pad_with_empty(positive, n_tokens, empty_chunk)
        negative = _pad_with_empty(negative, n_tokens, empty_chunk)
    return positive, negative


def needs_custom_encoding(
    prompts: str | Sequence[str | None] | None,
    *,
    tokenizer=None,
    clip_skip: int | None = None,
) -> bool:
    """True if these prompts must go through `encode_prompt_pair` rather than diffusers as plain strings.

    That is the case when any prompt uses attention syntax, is longer than 75 tokens (diffusers would
    truncate it), or `clip_skip` is set (diffusers 0.42 with transformers 5 fails on clip_skip,
    huggingface/diffusers#14124, and it never applies clip skip to the negative prompt). Without a
    `tokenizer` the length check is conservative: a CLIP token covers at least one non-space
    character, so only prompts of at most 75 such characters are known to fit.
    """
    if clip_skip is not None:
        return True
    if prompts is None:
        return False
    items = [prompts] if isinstance(prompts, str) else [p for p in prompts if p is not None]
    for text in items:
        if has_weighting(text):
            return True
        if tokenizer is None:
            if len("".join(text.split())) > 75:
                return True
        elif len(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]) > (
            tokenizer.model_max_length - 2
        ):
            return True
    return False
