"""What changes between attempts: plain reseeding (the paper) or defect-aware retries (ours).

Defect-aware retries read RFNet's verdict on the previous attempt and change the input that most
plausibly caused the defect; changes accumulate over attempts and are recorded in the manifest:
- Size Mismatch       -> another image_scale (multipliers tried in turn),
- Indistinctiveness   -> another background: each background slot of the preset
                         (`PromptPreset.background_slots`, e.g. the wall colour) steps to the value after
                         the one the failing attempt used; other slots (clutter) are left to the seed.
                         A preset without background slots moves to the next alternate preset,
- Space Mismatch, Shape Hallucination -> fresh noise only (our placement is already centred on the
                         canvas; moving the product is left to a later policy).
Every choice is a pure function of (run seed, product, attempt, past verdicts, the slot values the
previous attempt used), so a resumed run plans exactly the attempts an uninterrupted one would.
"""

from __future__ import annotations

from reliable_ad.generation.seeds import derive_seed
from reliable_ad.recurrent.config import RecurrentConfig
from reliable_ad.recurrent.loop import Attempt, Outcome

SIZE_MISMATCH = "Size Mismatch"
INDISTINCTIVE = "Indistinctiveness"


def plan_attempt(
    product_key: str,
    k: int,
    history: list[Outcome],
    *,
    run_seed: int,
    config: RecurrentConfig,
    base_scale: float,
    slots: dict[str, tuple[str, ...]] | None = None,
    previous_slot_values: dict[str, str] | None = None,
) -> Attempt:
    """Attempt `k` (0-based) of a product, given its judged attempts `history` (in order).

    `slots`: the preset's background slots only, name -> values (the policy steps every slot it is
    given). `previous_slot_values`: the slot values attempt k-1 actually used (its manifest record's
    `slots`); a stepped slot moves to the value after that one, cyclically. A slot whose previous value
    is unknown continues from the variation's value, else starts at its first value.
    """
    seed = derive_seed(run_seed, product_key, k)
    if config.retry_policy == "reseed" or not history:
        return Attempt(product_key, k, seed, {})
    variation = dict(history[-1].attempt.variation)
    last = history[-1].label
    if last == SIZE_MISMATCH:
        n = sum(o.label == SIZE_MISMATCH for o in history)
        factor = config.scale_steps[(n - 1) % len(config.scale_steps)]
        variation["image_scale"] = round(min(0.95, max(0.2, base_scale * factor)), 4)
    elif last == INDISTINCTIVE:
        n = sum(o.label == INDISTINCTIVE for o in history)
        if slots:
            current = {**variation.get("slot_values", {}), **(previous_slot_values or {})}
            variation["slot_values"] = {name: _successor(values, current.get(name)) for name, values in slots.items()}
        elif config.alternate_presets:
            variation["preset"] = config.alternate_presets[(n - 1) % len(config.alternate_presets)]
    return Attempt(product_key, k, seed, variation)


def _successor(values: tuple[str, ...], current: str | None) -> str:
    """The value after `current` in `values`, cyclically; the first one when `current` is not among them."""
    if current in values:
        return values[(values.index(current) + 1) % len(values)]
    return values[0]
