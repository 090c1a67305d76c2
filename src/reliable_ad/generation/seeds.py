"""One explicit seed per image, derived from (run seed, product, attempt).

Any image can be regenerated alone from its manifest record, whatever batch it was made in.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(run_seed: int, product_key: str, attempt: int) -> int:
    """A 63-bit seed that depends only on the run seed, the product's key and the attempt index."""
    if not isinstance(run_seed, int) or isinstance(run_seed, bool):
        raise TypeError(f"run_seed must be an int, got {run_seed!r}")
    digest = hashlib.sha256(f"reliable-ad/{run_seed}/{product_key}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def torch_generator(seed: int) -> torch.Generator:
    """A CPU generator: the same seed gives the same initial noise on every device."""
    return torch.Generator(device="cpu").manual_seed(int(seed))
