"""The Feature Filter Module (FFM, docs/method.md §3): the product's tokens attend to the caption's tokens.

    e_f = Conv(Conv(CrossAttn(q=e_o, kv=e_c)) * Conv(e_o)) + e_o

Every "Conv" is a 1x1 convolution, i.e. a linear layer applied to each token. Deviation from the bare
formula: queries and keys/values are layer-normalised first (pre-norm, as in the fusion layers), which
keeps the element-wise gate well scaled at initialisation; the residual still adds the raw e_o.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureFilterModule(nn.Module):
    def __init__(self, width: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm_product = nn.LayerNorm(width)
        self.norm_caption = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
        self.attn_conv = nn.Linear(width, width)  # Conv(CrossAttn(...))
        self.product_conv = nn.Linear(width, width)  # Conv(e_o)
        self.out_conv = nn.Linear(width, width)  # the outer Conv
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, product_tokens: torch.Tensor, caption_tokens: torch.Tensor, caption_padding: torch.Tensor
    ) -> torch.Tensor:
        """product_tokens (B, N, d), caption_tokens (B, L, d), caption_padding (B, L) bool, True = pad."""
        q = self.norm_product(product_tokens)
        kv = self.norm_caption(caption_tokens)
        attended, _ = self.cross_attn(q, kv, kv, key_padding_mask=caption_padding, need_weights=False)
        gated = self.attn_conv(attended) * self.product_conv(q)
        return product_tokens + self.dropout(self.out_conv(gated))
