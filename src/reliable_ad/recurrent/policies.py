"""What changes between attempts: plain reseeding (the paper) or defect-aware retries (ours).

Defect-aware retries read RFNet's verdict on the previous attempt and change the input that most
plausibly caused the defect; changes accumulate over attempts and are recorded in the manifest:
- Size Mismatch       -> another image_scale (multipliers tried in turn),
- Indistinctiveness   -> another background: the next value of each prompt slot (e.g. wall colour),
                         or the next alternate preset when the preset has no slot,
- Space Mismatch, Shape Hallucination -> fresh noise only (our placement is already centred on the
                         canvas; moving the product is left to a later policy).
Every choice is a pure function of (run seed, product, attempt, past verdicts), so a resumed run plans
exactly the attempts an uninterrupted one would.
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
    base_slot_values: dict[str, str] | None = None,
) -> Attempt:
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
            current = {**(base_slot_values or {}), **variation.get("slot_values", {})}
            variation["slot_values"] = {
                name: values[(values.index(current[name]) + 1) % len(values)] if current.get(name) in values else values[0]
                for name, values in slots.items()
            }
        elif config.alternate_presets:
            variation["preset"] = config.alternate_presets[(n - 1) % len(config.alternate_presets)]
    return Attempt(product_key, k, seed, variation)
