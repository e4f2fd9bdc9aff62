"""Small reference networks: a time-conditioned MLP for vector data."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MLP", "SinusoidalEmbedding", "sinusoidal_features"]


def sinusoidal_features(
    x: Tensor, dim: int, max_period: float = 10_000.0, compute_dtype: torch.dtype | None = None
) -> Tensor:
    """Sinusoidal features :math:`[\\sin(\\omega_k x), \\cos(\\omega_k x)]` of a real tensor, ``[*S] -> [*S, dim]``.

    Frequencies are log-spaced, :math:`\\omega_k = \\text{max\\_period}^{-k/(d/2)}`, ``k = 0..d/2-1`` (the transformer
    positional encoding); an odd ``dim`` gets one zero column.

    Args:
        x: Values (times scaled by the caller, residue indices...).
        dim: Number of features.
        max_period: Longest period.
        compute_dtype: Dtype of the computation (e.g. ``torch.float64`` for large indices); the result has the
            input's floating dtype (the default dtype for integer input). ``None``: the input's floating dtype.

    """
    out_dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    dtype = compute_dtype or out_dtype
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=dtype) / half)
    arg = x.to(dtype)[..., None] * freqs
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb.to(out_dtype)


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal features of a scalar (:func:`sinusoidal_features` of ``scale * s``).

    Args:
        dim: Output size (even).
        max_period: Longest period; frequencies are :math:`\\omega_k = \\text{max\\_period}^{-k/(d/2)}`.
        scale: Multiplier applied to the input first (1000 for ``t`` in [0, 1], as in DDPM/ADM).

    """

    def __init__(self, dim: int = 64, max_period: float = 10_000.0, scale: float = 1000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"SinusoidalEmbedding needs an even dim, got {dim}")
        self.dim, self.max_period, self.scale = dim, max_period, scale

    def forward(self, s: Tensor) -> Tensor:
        """Embed ``s`` of shape ``[*S]`` to ``[*S, dim]``."""
        return sinusoidal_features(self.scale * s, self.dim, self.max_period)


class MLP(nn.Module):
    """Residual-free MLP on ``cat[x, emb(t), emb(y)]`` predicting a vector shaped like ``x``.

    Args:
        dim: Data dimension (input and output size).
        hidden: Hidden width.
        depth: Number of hidden layers.
        time_dim: Size of the sinusoidal time embedding (0 concatenates raw ``t``, as torchcfm's MLP).
        num_classes: Classes of an optional label ``y``; index ``num_classes`` is the "null" label used by
            classifier-free guidance. 0 disables labels.
        activation: ``"silu"``, ``"selu"`` or ``"gelu"``.

    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 256,
        depth: int = 3,
        time_dim: int = 0,
        num_classes: int = 0,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        acts = {"silu": nn.SiLU, "selu": nn.SELU, "gelu": nn.GELU}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        self.dim, self.num_classes = dim, num_classes
        self.config = {  # plain constructor arguments: the checkpoint loader rebuilds the network from them
            "dim": dim,
            "hidden": hidden,
            "depth": depth,
            "time_dim": time_dim,
            "num_classes": num_classes,
            "activation": activation,
        }
        self.time_embed = SinusoidalEmbedding(time_dim) if time_dim else None
        self.label_embed = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        width_in = dim + (time_dim or 1) + (hidden if num_classes else 0)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(width_in if i == 0 else hidden, hidden), acts[activation]()]
        layers.append(nn.Linear(hidden, dim))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Predict for ``x`` ``[B, dim]``, ``t`` ``[B]`` and optional labels ``y`` ``[B]`` (long)."""
        te = self.time_embed(t) if self.time_embed is not None else t.reshape(-1, 1)
        feats = [x, te.to(x.dtype).expand(x.shape[0], -1)]
        if self.label_embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            feats.append(self.label_embed(y))
        return self.body(torch.cat(feats, dim=-1))
