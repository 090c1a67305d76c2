"""RFFT (docs/method.md §5): fine-tune the generator's ControlNet (or LoRA adapters) with RFNet's feedback,
regularised by the Consistent Condition, so that more ads are usable on the first attempt.

    sampler = ControlNetInpaintSampler(pipe)            # the pipeline's loop, open for gradients
    step = sampler.rollout(sampler.prepare(...), t)     # steps 0..t-1 without grad, step t with grad
    summary = RFFTTrainer.from_config(RFFTConfig(...), out_dir).train()   # or `reliable-ad rfft train`

Names are imported lazily, so `reliable_ad.rfft.config` loads without diffusers.
"""

from __future__ import annotations

from reliable_ad.core.lazy import lazy_exports

_EXPORTS = {
    "ControlNetInpaintSampler": "sampler",
    "GradedStep": "sampler",
    "SamplingState": "sampler",
    "RFFTConfig": "config",
    "RFFTTrainer": "trainer",
    "TrainSummary": "trainer",
    "RFNetJudge": "feedback",
    "WeightedReward": "losses",
    "consistent_condition_loss": "losses",
    "feedback_loss": "losses",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
