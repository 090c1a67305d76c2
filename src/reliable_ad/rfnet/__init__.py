"""RFNet (docs/method.md §3): the multimodal classifier that judges whether a generated ad is usable.

    model, processor = load_rfnet("tiny")          # or "rfnet-r50", a saved folder, a hub id
    batch = processor(captions, product=..., generated=..., depth=..., salience=...)
    probs = model.predict_proba(**batch)           # (B, 5), columns in CLASS_NAMES order

Names are imported lazily, so `reliable_ad.rfnet.config` loads without torch.
"""

from __future__ import annotations

from reliable_ad.core.lazy import lazy_exports

_EXPORTS = {
    "FusionConfig": "config",
    "ImageEncoderConfig": "config",
    "ModalityConfig": "config",
    "RFNetConfig": "config",
    "TextEncoderConfig": "config",
    "FeatureFilterModule": "ffm",
    "image_backbone_spec": "encoders",
    "RFNet": "model",
    "RFNetProcessor": "processor",
    "build_tiny_tokenizer": "processor",
    "PRESETS": "presets",
    "build_rfnet": "presets",
    "list_presets": "presets",
    "load_rfnet": "presets",
    "rfnet_config": "presets",
    "save_pretrained": "io",
    "Inspector": "inspector",
    "Verdict": "inspector",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
