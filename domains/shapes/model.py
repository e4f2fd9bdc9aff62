r"""Set transformer for mosaic matrices (and the baselines' point sets / grid patches).

:class:`SetTransformer` maps tokens ``[B, L, d]`` to velocities ``[B, L, d]``: a linear embedding ``d -> width``,
``depth`` pre-norm transformer blocks whose layer norms are modulated by the conditioning vector
:math:`c = \mathrm{MLP}(\mathrm{sinusoidal}(t)) + E[y]` (adaLN-Zero, as DiT: every block starts as the identity),
and a modulated linear read-out. Without ``num_positions`` there is **no positional encoding**, so the network is
permutation-equivariant over tokens, :math:`f(P x) = P f(x)`, and the flow's density is permutation-invariant
(Mosaic-SDF's rows are a set). The dense-grid baseline passes ``num_positions`` to add a learned embedding per
patch position (a grid is not a set).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowsci.nets import SinusoidalEmbedding

__all__ = ["SetTransformer"]


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        s1, g1, a1, s2, g2, a2 = self.ada(nn.functional.silu(c)).chunk(6, dim=-1)
        h = _modulate(self.norm1(x), s1, g1)
        x = x + a1[:, None] * self.attn(h, h, h, need_weights=False)[0]
        return x + a2[:, None] * self.mlp(_modulate(self.norm2(x), s2, g2))


class SetTransformer(nn.Module):
    """Permutation-equivariant transformer velocity network ``net(x_t, t, y=None) -> [B, L, d]``.

    Args:
        dim: Token size ``d`` (mosaic rows: ``4 + k^3``; points: 3; grid patches: ``p^3``).
        width: Hidden width.
        depth: Transformer blocks.
        heads: Attention heads.
        mlp_ratio: MLP hidden size / width.
        num_classes: Class labels ``y`` in ``0..num_classes-1``; index ``num_classes`` is the null label of
            classifier-free guidance. 0: unconditional.
        num_positions: Learned positional embeddings (0: none, the set model).
        dropout: Attention dropout.

    """

    def __init__(
        self,
        dim: int = 129,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        num_positions: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.config: dict[str, Any] = {
            "dim": dim,
            "width": width,
            "depth": depth,
            "heads": heads,
            "mlp_ratio": mlp_ratio,
            "num_classes": num_classes,
            "num_positions": num_positions,
            "dropout": dropout,
        }
        self.dim, self.num_classes = dim, num_classes
        self.embed = nn.Linear(dim, width)
        self.time = nn.Sequential(
            SinusoidalEmbedding(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.pos = nn.Parameter(torch.zeros(1, num_positions, width)) if num_positions else None
        if self.pos is not None:
            nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(_Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, dim)
        for layer in (self.ada, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, **_: Any) -> Tensor:
        """Velocity at ``x`` ``[B, L, d]``, times ``t`` ``[B]`` (or scalar), labels ``y`` ``[B]`` -> ``[B, L, d]``."""
        b = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
        c = self.time(t)
        if self.label is not None:
            if y is None:
                y = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
            c = c + self.label(y.reshape(-1).long())
        h = self.embed(x)
        if self.pos is not None:
            h = h + self.pos[:, : h.shape[1]]
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada(nn.functional.silu(c)).chunk(2, dim=-1)
        return self.out(_modulate(self.norm(h), shift, scale))
