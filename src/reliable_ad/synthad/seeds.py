"""Seeds for everything a SynthAd run draws, from readable keys."""

from __future__ import annotations

import hashlib


def sub_seed(*keys: int | str) -> int:
    """A 63-bit seed from any tuple of ints and strings (so each study, product and attempt differs)."""
    digest = hashlib.sha256("/".join(str(k) for k in keys).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
