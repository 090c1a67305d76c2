"""RFFT's loss terms (docs/method.md §5): the feedback loss F_AC, the Consistent Condition L_CC, and the
regularisers compared against it (none = ReFL, a KL-style penalty, the denoising loss on real ads),
plus extra rewards given as injected callables.

Ranges are named: `images01` are (B, 3, H, W) in [0, 1]; eps tensors are noise predictions
(B, 4, h, w) on the latent grid. Every function here is pure tensor maths, free of models and I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reliable_ad.rfft.config import REGULARIZERS  # noqa: F401 - re-exported; defined torch-free there
from reliable_ad.core.labels import AVAILABLE_INDEX

# A reward scores ads: images (B, 3, H, W) in [0, 1] -> (B,) higher = better, differentiable.
Reward = Callable[[torch.Tensor], torch.Tensor]


def available_log_prob(log_probs: torch.Tensor, index: int = AVAILABLE_INDEX) -> torch.Tensor:
    """log p(Available) (B,) from RFNet's log-probabilities (B, num_classes)."""
    if log_probs.ndim != 2 or not 0 <= index < log_probs.shape[1]:
        raise ValueError(
            f"log_probs has shape {tuple(log_probs.shape)}; expected (B, num_classes) with column {index} = Available"
        )
    return log_probs[:, index]


def feedback_loss(log_p_available: torch.Tensor) -> torch.Tensor:
    """F_AC = mean over the batch of -log p(Available); `log_p_available` is (B,)."""
    if log_p_available.ndim != 1:
        raise ValueError(f"log_p_available has shape {tuple(log_p_available.shape)}; expected (B,)")
    return -log_p_available.mean()


def guidance_direction(eps_text: torch.Tensor, eps_uncond: torch.Tensor) -> torch.Tensor:
    """d = eps(x_t, text, control) - eps(x_t, empty text, control): where the prompt pushes the image."""
    return eps_text - eps_uncond


def consistent_condition_loss(direction_student: torch.Tensor, direction_teacher: torch.Tensor) -> torch.Tensor:
    """L_CC = mean of (d_student - d_teacher)^2; the teacher side never carries gradient.

    It leaves the image free to change (the unconditional prediction may move) but keeps the direction
    in which the prompt moves it, so the prompt keeps control of the background style.
    """
    if direction_student.shape != direction_teacher.shape:
        raise ValueError(
            f"guidance directions differ in shape: student {tuple(direction_student.shape)}, "
            f"teacher {tuple(direction_teacher.shape)}"
        )
    return (direction_student - direction_teacher.detach()).pow(2).mean()


def kl_penalty(eps_student: torch.Tensor, eps_teacher: torch.Tensor) -> torch.Tensor:
    """KL-style penalty: mean of (eps_student - eps_teacher)^2 of the guided noise predictions.

    For one DDIM/DDPM step the student's and teacher's next-latent distributions are Gaussians of equal
    variance whose means differ by a constant times the eps difference, so their KL is proportional
    to this squared distance. Unlike L_CC it pulls the whole prediction back, feedback included.
    """
    if eps_student.shape != eps_teacher.shape:
        raise ValueError(f"eps shapes differ: student {tuple(eps_student.shape)}, teacher {tuple(eps_teacher.shape)}")
    return (eps_student - eps_teacher.detach()).pow(2).mean()


def denoising_loss(model_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The diffusion training loss on real ads: mean squared error to the noise (or v) target."""
    return F.mse_loss(model_output.float(), target.float())


@dataclass(frozen=True)
class WeightedReward:
    """An extra reward and its weight: the loss gains -weight * mean(reward(images01))."""

    name: str
    fn: Reward
    weight: float = 1.0


def reward_terms(images01: torch.Tensor, rewards: Sequence[WeightedReward]) -> dict[str, torch.Tensor]:
    """Mean reward per name (each a scalar tensor with gradient) for images (B, 3, H, W) in [0, 1]."""
    out: dict[str, torch.Tensor] = {}
    for r in rewards:
        scores = r.fn(images01)
        if not isinstance(scores, torch.Tensor) or scores.shape != images01.shape[:1]:
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(
                f"reward {r.name!r} returned {got}; a reward maps images (B, 3, H, W) in [0, 1] to a (B,) tensor"
            )
        out[r.name] = scores.float().mean()
    return out


def total_loss(
    f_ac: torch.Tensor | None,
    *,
    available_weight: float = 1.0,
    regularizer: torch.Tensor | None = None,
    beta: float = 0.0,
    rewards: dict[str, torch.Tensor] | None = None,
    reward_weights: dict[str, float] | None = None,
) -> torch.Tensor:
    """available_weight * F_AC + beta * regulariser - sum_k w_k * reward_k (docs/method.md §5: F_AC + beta * L_CC)."""
    terms = []
    if f_ac is not None and available_weight:
        terms.append(available_weight * f_ac)
    if regularizer is not None and beta:
        terms.append(beta * regularizer)
    for name, value in (rewards or {}).items():
        terms.append(-(reward_weights or {}).get(name, 1.0) * value)
    if not terms:
        raise ValueError("the RFFT loss has no terms: set loss.available_weight > 0, a regulariser, or a reward")
    return torch.stack([t.float() for t in terms]).sum()
