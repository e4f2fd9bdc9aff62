r"""The White-Box Diffusion Transformer (WBDiT, Cui et al. 2024) over gene patches, and its DiT ablation.

An expression vector :math:`x \in \mathbb R^G` is cut into :math:`N = \lceil G/P \rceil` contiguous patches of
:math:`P` genes (zero-padded), each embedded linearly to width :math:`d`, plus fixed 1-D sin-cos positions of the
patch index. Conditioning :math:`c = \mathrm{MLP}(\mathrm{emb}(t)) + E[y]` (time, and the cell type with a null
index for classifier-free guidance) modulates every block through adaLN-Zero (Peebles & Xie, 2023).

**CRATE block** (Yu et al., 2023; the paper's "white-box" block), with :math:`h = \mathrm{mod}(\mathrm{LN}(x))`:

.. math::
    x \leftarrow x + g_1\,\mathrm{MSSA}(h_1),\qquad x \leftarrow x + g_2\,\mathrm{ISTA}(h_2)

* MSSA with one projection :math:`U` shared by query, key and value: per head :math:`w_k = h U_k`,
  :math:`\mathrm{head}_k = \mathrm{softmax}(w_k w_k^\top / \sqrt{d_h})\, w_k`, heads concatenated and mixed by an
  output projection.
* ISTA: one proximal-gradient step of non-negative LASSO with a learnable square dictionary :math:`D`,
  :math:`\mathrm{ISTA}(z) = \mathrm{ReLU}(z + \eta D^\top(z - Dz) - \eta\lambda)`, :math:`\eta = \lambda = 0.1`.

**DiT block** (the ablation, same width and depth): standard multi-head attention (separate Q, K, V) and a
:math:`4\times` GELU MLP.

The network is called as ``net(x_t, t, y=None) -> [B, G]``; ``t`` in ``[0, 1]`` (flows) or ``t/T`` (DDPM).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowsci.nets import SinusoidalEmbedding

__all__ = ["BLOCKS", "CrateBlock", "DiTBlock", "WBDiT", "sincos_positions"]

BLOCKS = ("crate", "dit")


def sincos_positions(num: int, dim: int) -> Tensor:
    r"""Fixed 1-D sin-cos embedding of positions ``0..num-1``: ``[num, dim]`` (Vaswani et al., 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / max(half, 1))
    arg = torch.arange(num, dtype=torch.float64)[:, None] * freqs[None]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros(num, 1, dtype=torch.float64)], dim=1)
    return emb.float()


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class _AdaLNBlock(nn.Module):
    """Pre-norm block with adaLN-Zero: two gated residual branches ``attn`` and ``ff``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def attn(self, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def ff(self, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """``x`` ``[B, N, d]`` tokens, ``c`` ``[B, d]`` conditioning."""
        s1, a1, g1, s2, a2, g2 = self.ada(c).chunk(6, dim=-1)
        x = x + g1[:, None] * self.attn(_modulate(self.norm1(x), s1, a1))
        return x + g2[:, None] * self.ff(_modulate(self.norm2(x), s2, a2))


class CrateBlock(_AdaLNBlock):
    r"""CRATE block: tied-QKV multi-head subspace self-attention (MSSA) + one ISTA step, adaLN-Zero gated.

    Args:
        dim: Width :math:`d`.
        heads: Heads :math:`K` (subspaces), ``dim % heads == 0``.
        step: ISTA step :math:`\eta`.
        lam: ISTA sparsity :math:`\lambda`.

    """

    def __init__(self, dim: int, heads: int, step: float = 0.1, lam: float = 0.1) -> None:
        super().__init__(dim)
        self.heads, self.step, self.lam = heads, step, lam
        self.proj = nn.Linear(dim, dim, bias=False)  # U: shared by query, key and value
        self.out = nn.Linear(dim, dim)
        self.dictionary = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.dictionary, a=math.sqrt(5))

    def attn(self, h: Tensor) -> Tensor:
        """MSSA: ``softmax(w w^T / sqrt(d_h)) w`` per head, ``w = h U_k``."""
        b, n, d = h.shape
        w = self.proj(h).reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(w, w, w)
        return self.out(out.transpose(1, 2).reshape(b, n, d))

    def ff(self, h: Tensor) -> Tensor:
        r"""ISTA: :math:`\mathrm{ReLU}(z + \eta D^\top(z - Dz) - \eta\lambda)` (row vectors: ``z D^T`` is ``Dz``)."""
        dz = h @ self.dictionary.T
        return F.relu(h + self.step * ((h - dz) @ self.dictionary) - self.step * self.lam)


class DiTBlock(_AdaLNBlock):
    """DiT block: multi-head self-attention (separate Q, K, V) + 4x GELU MLP, adaLN-Zero gated.

    Args:
        dim: Width.
        heads: Heads.
        mlp_ratio: Hidden width of the MLP relative to ``dim``.

    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__(dim)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def attn(self, h: Tensor) -> Tensor:
        """Scaled dot-product attention with separate projections."""
        b, n, d = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out(out.transpose(1, 2).reshape(b, n, d))

    def ff(self, h: Tensor) -> Tensor:
        """The MLP."""
        return self.mlp(h)


class WBDiT(nn.Module):
    """Gene-patch transformer denoiser/velocity network with CRATE (``block="crate"``) or DiT blocks.

    Args:
        n_genes: Genes ``G`` of the input vector.
        num_classes: Cell types (0: unconditional); index ``num_classes`` is the null label of CFG.
        patch: Genes per patch ``P`` (tokens ``ceil(G / P)``).
        hidden: Width ``d``.
        depth: Blocks.
        heads: Attention heads.
        block: ``"crate"`` (WBDiT) or ``"dit"``.
        freq_dim: Sinusoidal frequencies of the time embedding.
        ista_step: ISTA step :math:`\\eta`.
        ista_lambda: ISTA sparsity :math:`\\lambda`.
        mlp_ratio: MLP width ratio of DiT blocks.

    """

    def __init__(
        self,
        n_genes: int = 765,
        num_classes: int = 0,
        patch: int = 15,
        hidden: int = 64,
        depth: int = 2,
        heads: int = 4,
        block: str = "crate",
        freq_dim: int = 128,
        ista_step: float = 0.1,
        ista_lambda: float = 0.1,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        if n_genes < 1 or patch < 1:
            raise ValueError(f"n_genes and patch must be >= 1, got {n_genes}, {patch}")
        self.config = {
            "n_genes": n_genes,
            "num_classes": num_classes,
            "patch": patch,
            "hidden": hidden,
            "depth": depth,
            "heads": heads,
            "block": block,
            "freq_dim": freq_dim,
            "ista_step": ista_step,
            "ista_lambda": ista_lambda,
            "mlp_ratio": mlp_ratio,
        }
        self.n_genes, self.num_classes, self.patch = n_genes, num_classes, patch
        self.tokens = -(-n_genes // patch)
        self.embed = nn.Linear(patch, hidden)
        self.register_buffer("pos", sincos_positions(self.tokens, hidden)[None], persistent=False)
        self.time_embed = nn.Sequential(
            SinusoidalEmbedding(freq_dim), nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.label_embed = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        if block == "crate":
            self.blocks = nn.ModuleList(CrateBlock(hidden, heads, ista_step, ista_lambda) for _ in range(depth))
        else:
            self.blocks = nn.ModuleList(DiTBlock(hidden, heads, mlp_ratio) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.head = nn.Linear(hidden, patch)
        for layer in (self.final_ada[1], self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Predict for ``x`` ``[B, G]``, ``t`` ``[B]`` (or scalar) and cell types ``y`` ``[B]`` (long) -> ``[B, G]``."""
        b, g = x.shape
        if g != self.n_genes:
            raise ValueError(f"WBDiT built for {self.n_genes} genes got {g}")
        pad = self.tokens * self.patch - g
        tokens = F.pad(x, (0, pad)).reshape(b, self.tokens, self.patch)
        h = self.embed(tokens) + self.pos
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype).reshape(-1).expand(b)
        c = self.time_embed(t).to(x.dtype)
        if self.label_embed is not None:
            if y is None:
                y = torch.full((b,), self.num_classes, device=x.device, dtype=torch.long)
            c = c + self.label_embed(y)
        for blk in self.blocks:
            h = blk(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        out = self.head(_modulate(self.final_norm(h), shift, scale))
        return out.reshape(b, self.tokens * self.patch)[:, :g]
