"""The frame network: an Invariant Point Attention (IPA) trunk that predicts clean residue frames.

Architecture (FrameFlow/ReQFlow's trunk, restated; Jumper et al. 2021, Alg. 22 for IPA):

* Node features: sinusoidal embedding of the residue index and of t, plus the residue mask → Linear → ``c_s``.
* Edge features: one-hot relative position (clipped at ±``relpos_k``), one-hot binned CA–CA distances of
  :math:`x_t` and of the self-conditioning prediction :math:`\\hat x_1` (``num_dist_bins`` bins up to 20 Å),
  and
  the pair of projected node features → MLP → ``c_z``.
* ``num_blocks`` blocks of: IPA (pair bias + scalar + point attention in the residue frames) → residual +
  LayerNorm → sequence transformer (``seq_tfmr_layers`` layers) → node transition → backbone update (a
  quaternion ``(1, b, c, d)`` and a translation in the local frame, composed onto the current frames) → edge
  transition (all but the last block).

Equivariance: every feature the trunk reads from the frames is invariant (distances, frame-local points), and
the only frame outputs are updates composed on the right, so for a global rigid motion :math:`g` applied to
:math:`x_t` (and to :math:`\\hat x_1^{sc}`) the predicted frames are :math:`g \\circ \\hat T`; tested in
``tests/domains/proteins/test_model.py``.

Input/Output: ``x_t [B, L, 7]`` = translation (nm, centred) ‖ unit quaternion ``(w, x, y, z)``; the output has
the same layout and is the predicted clean frame :math:`\\hat T_1`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowsci.domains.proteins.geometry import apply_rigid, invert_apply_rigid
from flowsci.manifolds import quaternion_multiply, quaternion_normalize, quaternion_to_matrix
from flowsci.nets import sinusoidal_features

__all__ = ["LENGTH_FEATS", "IPAFrameNet", "InvariantPointAttention", "length_features"]

LENGTH_FEATS = 9
"""Node-input columns added by ``IPAFrameNet(length_feats=True)``: log(L / 100) and 8 sinusoids of L."""


def length_features(mask: Tensor) -> Tensor:
    r"""Chain-length node features ``[B, L, LENGTH_FEATS]`` from a residue mask ``[B, L]``.

    Every residue of chain b gets the same row: :math:`\log(N_b / 100)` and ``sinusoidal_features(N_b, 8)``
    (periods 2π to 2π·10³ residues), with :math:`N_b` the number of real residues (the mask's sum, so padding
    does not change them). Padding rows are zeroed.
    """
    n = mask.sum(-1).clamp_min(1)  # [B]
    feats = torch.cat(
        [
            torch.log(n / 100.0)[:, None],
            sinusoidal_features(n, LENGTH_FEATS - 1, compute_dtype=torch.float64).to(mask.dtype),
        ],
        dim=-1,
    )
    return feats[:, None, :] * mask[..., None]


def _distogram(ca: Tensor, num_bins: int, max_dist: float) -> Tensor:
    """One-hot binned pair distances ``[B, L, L, num_bins]`` of CA positions ``[B, L, 3]`` (Å)."""
    d = torch.cdist(ca, ca)
    edges = torch.linspace(0.0, max_dist, num_bins, device=ca.device, dtype=ca.dtype)[1:]
    idx = torch.bucketize(d.detach().contiguous(), edges)
    return F.one_hot(idx, num_bins).to(ca.dtype)


class InvariantPointAttention(nn.Module):
    """Invariant Point Attention (AlphaFold2, Alg. 22), invariant to global rigid motions of the frames.

    Args:
        c_s: Node channels.
        c_z: Edge channels.
        c_hidden: Scalar query/key/value channels per head.
        num_heads: Heads.
        num_qk_points: Query/key points per head.
        num_v_points: Value points per head.
        pair_down: Edge channels after the down-projection used in the pair output (FrameFlow uses c_z/4).
    """

    def __init__(
        self,
        c_s: int,
        c_z: int,
        c_hidden: int,
        num_heads: int,
        num_qk_points: int,
        num_v_points: int,
        pair_down: int | None = None,
    ) -> None:
        super().__init__()
        self.h, self.c, self.pq, self.pv = num_heads, c_hidden, num_qk_points, num_v_points
        self.lin_q = nn.Linear(c_s, num_heads * c_hidden)
        self.lin_kv = nn.Linear(c_s, 2 * num_heads * c_hidden)
        self.lin_q_pts = nn.Linear(c_s, num_heads * num_qk_points * 3)
        self.lin_kv_pts = nn.Linear(c_s, num_heads * (num_qk_points + num_v_points) * 3)
        self.lin_b = nn.Linear(c_z, num_heads)
        self.c_zo = pair_down or c_z
        self.down_z = nn.Linear(c_z, self.c_zo)
        self.head_weights = nn.Parameter(torch.full((num_heads,), math.log(math.e - 1.0)))  # softplus -> 1
        concat = num_heads * (self.c_zo + c_hidden + num_v_points * 4)
        self.lin_out = nn.Linear(concat, c_s)

    def forward(self, s: Tensor, z: Tensor, rot: Tensor, trans: Tensor, mask: Tensor) -> Tensor:
        """Update node features.

        Args:
            s: Nodes ``[B, L, c_s]``.
            z: Edges ``[B, L, L, c_z]``.
            rot: Frame rotations ``[B, L, 3, 3]``.
            trans: Frame translations ``[B, L, 3]`` (nm).
            mask: Residue mask ``[B, L]``.

        Returns:
            ``[B, L, c_s]``.
        """
        b, n, _ = s.shape
        h, c, pq, pv = self.h, self.c, self.pq, self.pv
        q = self.lin_q(s).view(b, n, h, c)
        k, v = self.lin_kv(s).view(b, n, h, 2 * c).split(c, dim=-1)
        rot_e, trans_e = rot[:, :, None, None], trans[:, :, None, None]
        q_pts = apply_rigid(rot_e, trans_e, self.lin_q_pts(s).view(b, n, h, pq, 3))
        kv_pts = apply_rigid(rot_e, trans_e, self.lin_kv_pts(s).view(b, n, h, pq + pv, 3))
        k_pts, v_pts = kv_pts.split([pq, pv], dim=-2)

        w_l = math.sqrt(1.0 / 3.0)
        w_c = math.sqrt(2.0 / (9.0 * pq))
        gamma = F.softplus(self.head_weights).view(1, 1, 1, h)
        logits = torch.einsum("bihc,bjhc->bijh", q, k) / math.sqrt(c) + self.lin_b(z)
        d2 = ((q_pts[:, :, None] - k_pts[:, None]) ** 2).sum(-1).sum(-1)  # [B, L, L, H]
        logits = w_l * (logits - 0.5 * w_c * gamma * d2)
        pair_mask = mask[:, :, None] * mask[:, None, :]
        logits = logits.masked_fill(pair_mask[..., None] < 0.5, torch.finfo(logits.dtype).min / 2)
        a = torch.softmax(logits, dim=2)  # over j

        o = torch.einsum("bijh,bjhc->bihc", a, v).reshape(b, n, h * c)
        o_pts = torch.einsum("bijh,bjhpx->bihpx", a, v_pts)
        o_pts = invert_apply_rigid(rot_e, trans_e, o_pts)  # back to the local frame of i
        o_norm = torch.sqrt((o_pts**2).sum(-1) + 1e-8).reshape(b, n, h * pv)
        o_pair = torch.einsum("bijh,bijc->bihc", a, self.down_z(z)).reshape(b, n, h * self.c_zo)
        out = torch.cat([o, o_pts.reshape(b, n, h * pv * 3), o_norm, o_pair], dim=-1)
        return self.lin_out(out)


class _Transition(nn.Module):
    def __init__(self, c: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or c
        self.net = nn.Sequential(
            nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, c)
        )
        self.ln = nn.LayerNorm(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(x + self.net(x))


class _EdgeTransition(nn.Module):
    def __init__(self, c_s: int, c_z: int, c_bias: int) -> None:
        super().__init__()
        self.proj = nn.Linear(c_s, c_bias)
        hidden = 2 * c_bias + c_z
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, c_z)
        self.ln = nn.LayerNorm(c_z)

    def forward(self, s: Tensor, z: Tensor) -> Tensor:
        p = self.proj(s)
        n = s.shape[1]
        x = torch.cat([z, p[:, :, None].expand(-1, -1, n, -1), p[:, None].expand(-1, n, -1, -1)], dim=-1)
        return self.ln(self.out(self.net(x) + x))


class _Block(nn.Module):
    def __init__(
        self,
        c_s,
        c_z,
        c_hidden,
        num_heads,
        num_qk_points,
        num_v_points,
        pair_down,
        seq_tfmr_layers,
        seq_tfmr_heads,
        edge_transition: bool,
    ) -> None:
        super().__init__()
        self.ipa = InvariantPointAttention(c_s, c_z, c_hidden, num_heads, num_qk_points, num_v_points, pair_down)
        self.ipa_ln = nn.LayerNorm(c_s)
        layer = nn.TransformerEncoderLayer(
            c_s, seq_tfmr_heads, dim_feedforward=c_s, dropout=0.0, batch_first=True, norm_first=False
        )
        self.seq_tfmr = nn.TransformerEncoder(layer, seq_tfmr_layers, enable_nested_tensor=False)
        self.post_tfmr = nn.Linear(c_s, c_s)
        self.node_transition = _Transition(c_s)
        self.bb_update = nn.Linear(c_s, 6)
        nn.init.zeros_(self.bb_update.weight)
        nn.init.zeros_(self.bb_update.bias)
        self.edge_transition = _EdgeTransition(c_s, c_z, c_z // 2) if edge_transition else None


class IPAFrameNet(nn.Module):
    """IPA trunk predicting clean residue frames from noisy frames; called as ``net(x_t, t, **cond)``.

    Args:
        c_s: Node channels.
        c_z: Edge channels.
        c_hidden: IPA scalar channels per head.
        num_heads: IPA heads.
        num_qk_points: IPA query/key points.
        num_v_points: IPA value points.
        num_blocks: Trunk blocks.
        seq_tfmr_layers: Transformer-encoder layers per block.
        seq_tfmr_heads: Transformer heads.
        c_pos_emb: Residue-index embedding size.
        c_time_emb: Time embedding size.
        relpos_k: Relative positions are clipped to ``[-relpos_k, relpos_k]``.
        num_dist_bins: CA–CA distance bins (up to ``max_dist`` Å).
        max_dist: Last distance bin edge (Å).
        pair_down: Edge channels in the IPA pair output (default ``c_z // 4``).
        centroid_feats: Add to each residue's node input the vector from it to the chain's centroid in its own
            frame, :math:`R_i^\top(\bar x - x_i)` (nm), and its length (invariant to rigid motions). Not in
            FrameFlow/ReQFlow: a residue otherwise sees the chain's centre only through attention.
        length_feats: Add to each residue's node input the chain's length (:func:`length_features`: log(N/100) and
            8 sinusoids of the number N of real residues). Not in FrameFlow/ReQFlow: there a residue sees N only
            through attention sums (the index sinusoid, clipped relative positions and the mask do not give it).
    """

    def __init__(
        self,
        c_s: int = 64,
        c_z: int = 32,
        c_hidden: int = 16,
        num_heads: int = 4,
        num_qk_points: int = 4,
        num_v_points: int = 8,
        num_blocks: int = 2,
        seq_tfmr_layers: int = 1,
        seq_tfmr_heads: int = 4,
        c_pos_emb: int = 64,
        c_time_emb: int = 64,
        relpos_k: int = 32,
        num_dist_bins: int = 22,
        max_dist: float = 20.0,
        pair_down: int | None = None,
        centroid_feats: bool = False,
        length_feats: bool = False,
    ) -> None:
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.config = config
        self.c_pos_emb, self.c_time_emb = c_pos_emb, c_time_emb
        self.relpos_k, self.num_dist_bins, self.max_dist = relpos_k, num_dist_bins, max_dist
        self.centroid_feats, self.length_feats = centroid_feats, length_feats
        self.node_embed = nn.Linear(sum(hi - lo for lo, hi in self._node_columns().values()), c_s)
        self.node_pair = nn.Linear(c_s, c_z // 2)
        n_edge_in = (2 * relpos_k + 1) + 2 * num_dist_bins + 2 * (c_z // 2)
        self.edge_embed = nn.Sequential(
            nn.Linear(n_edge_in, c_z),
            nn.ReLU(),
            nn.Linear(c_z, c_z),
            nn.ReLU(),
            nn.Linear(c_z, c_z),
            nn.LayerNorm(c_z),
        )
        self.blocks = nn.ModuleList(
            _Block(
                c_s,
                c_z,
                c_hidden,
                num_heads,
                num_qk_points,
                num_v_points,
                pair_down or max(c_z // 4, 1),
                seq_tfmr_layers,
                seq_tfmr_heads,
                edge_transition=i < num_blocks - 1,
            )
            for i in range(num_blocks)
        )

    @classmethod
    def tiny(cls) -> IPAFrameNet:
        """CPU config (~0.3 M parameters): c_s 64, c_z 32, 2 blocks."""
        return cls()

    @classmethod
    def paper(cls) -> IPAFrameNet:
        """FrameFlow/ReQFlow config: c_s 256, c_z 128, 6 blocks, 8 heads, 8 qk / 12 v points, 2 transformer
        layers (4 heads), relpos 64, 22 distance bins, 128-d index and time embeddings.
        """
        return cls(
            c_s=256,
            c_z=128,
            c_hidden=128,
            num_heads=8,
            num_qk_points=8,
            num_v_points=12,
            num_blocks=6,
            seq_tfmr_layers=2,
            seq_tfmr_heads=4,
            c_pos_emb=128,
            c_time_emb=128,
            relpos_k=64,
        )

    def _node_columns(self) -> dict[str, tuple[int, int]]:
        """Column ranges ``[lo, hi)`` of the node-embedding input: ``base`` (index, time, mask), ``centroid`` and
        ``length`` (empty when the option is off), in the order ``forward`` concatenates them.
        """
        widths = {
            "base": self.c_pos_emb + self.c_time_emb + 1,
            "centroid": 4 * self.centroid_feats,
            "length": LENGTH_FEATS * self.length_feats,
        }
        cols, lo = {}, 0
        for name, w in widths.items():
            cols[name] = (lo, lo + w)
            lo += w
        return cols

    def grown(
        self,
        num_blocks: int | None = None,
        relpos_k: int | None = None,
        max_dist: float | None = None,
        centroid_feats: bool | None = None,
        length_feats: bool | None = None,
    ) -> IPAFrameNet:
        """A larger copy that computes exactly the same function (function-preserving growth, for warm starts).

        * ``relpos_k`` (≥ the current): the one-hot columns of the new offsets beyond ±``self.relpos_k`` copy the
          current clip columns, so every offset maps to the same edge input as before until training separates them.
        * ``max_dist`` (Å, ≥ the current, at the same bin width ``max_dist / (num_dist_bins − 1)``, which must divide
          it): the bins beyond the current last edge copy the current overflow bin (both distograms, of x_t and of
          the self-conditioning prediction).
        * ``num_blocks`` (≥ the current): the new blocks are appended with the constructor's zero-initialised
          backbone update, so they change nodes and edges but not the predicted frames; the former last block
          gets a (fresh) edge transition, whose output only the new blocks read.
        * ``centroid_feats=True`` / ``length_feats=True``: the new node inputs (the centroid vector and its length;
          the chain-length features) get zero weights.

        Args:
            num_blocks: Trunk blocks of the copy (default: the current).
            relpos_k: Relative-position clip of the copy (default: the current).
            max_dist: Last distance-bin edge of the copy in Å (default: the current).
            centroid_feats: Centroid node features in the copy (default: as now; cannot be switched off).
            length_feats: Chain-length node features in the copy (default: as now; cannot be switched off).

        Returns:
            A new :class:`IPAFrameNet` whose ``forward`` equals this one's (up to float rounding at bin edges).
        """
        cfg = dict(self.config)
        k0, nb0, m0 = self.relpos_k, self.num_dist_bins, self.max_dist
        k1 = k0 if relpos_k is None else int(relpos_k)
        m1 = m0 if max_dist is None else float(max_dist)
        width = m0 / (nb0 - 1)
        nb1 = round(m1 / width) + 1
        if k1 < k0 or m1 < m0 or abs((nb1 - 1) * width - m1) > 1e-6 * m1:
            raise ValueError(
                f"grown() only enlarges: relpos_k {k1} < {k0}, or max_dist {m1} < {m0} or not a multiple of the bin "
                f"width {width:g} Å"
            )
        nblk = len(self.blocks) if num_blocks is None else int(num_blocks)
        if nblk < len(self.blocks):
            raise ValueError(f"grown() only enlarges: num_blocks {nblk} < {len(self.blocks)}")
        cen = self.centroid_feats if centroid_feats is None else bool(centroid_feats)
        if self.centroid_feats and not cen:
            raise ValueError("grown() only enlarges: centroid_feats cannot be switched off")
        lfe = self.length_feats if length_feats is None else bool(length_feats)
        if self.length_feats and not lfe:
            raise ValueError("grown() only enlarges: length_feats cannot be switched off")
        cfg.update(num_blocks=nblk, relpos_k=k1, num_dist_bins=nb1, max_dist=m1, centroid_feats=cen, length_feats=lfe)
        new = IPAFrameNet(**cfg).to(next(self.parameters()))
        state = {k: v for k, v in self.state_dict().items() if not k.startswith(("edge_embed.0.", "node_embed."))}
        new.load_state_dict(state, strict=False)  # missing: edge_embed.0 (below) and the new blocks' parameters
        # old columns -> new columns of the edge-embedding input (rel ‖ d_t ‖ d_sc ‖ node pairs)
        rel = [min(max(d, -k0), k0) + k0 for d in range(-k1, k1 + 1)]
        dist = [min(b, nb0 - 1) for b in range(nb1)]
        off_t, off_sc = 2 * k0 + 1, 2 * k0 + 1 + nb0
        rest = list(range(off_sc + nb0, self.edge_embed[0].in_features))
        cols = rel + [off_t + b for b in dist] + [off_sc + b for b in dist] + rest
        with torch.no_grad():
            new.edge_embed[0].weight.copy_(self.edge_embed[0].weight[:, cols])
            new.edge_embed[0].bias.copy_(self.edge_embed[0].bias)
            new.node_embed.weight.zero_()
            new_cols = new._node_columns()
            for name, (lo, hi) in self._node_columns().items():
                new_lo = new_cols[name][0]
                new.node_embed.weight[:, new_lo : new_lo + hi - lo].copy_(self.node_embed.weight[:, lo:hi])
            new.node_embed.bias.copy_(self.node_embed.bias)
        return new

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        mask: Tensor | None = None,
        res_idx: Tensor | None = None,
        x_sc: Tensor | None = None,
        **unused: Tensor,
    ) -> Tensor:
        """Predict clean frames.

        Args:
            x_t: Noisy frames ``[B, L, 7]``: translation (nm) ‖ quaternion.
            t: Times ``[B]``.
            mask: Residue mask ``[B, L]`` (default all ones).
            res_idx: Residue indices ``[B, L]`` (default 0..L-1).
            x_sc: Self-conditioning translations ``[B, L, 3]`` (nm) from a previous prediction, or None
                (zeros).
            **unused: Other conditioning keywords (ignored).

        Returns:
            Predicted clean frames ``[B, L, 7]`` (translation nm ‖ unit quaternion).
        """
        b, n, _ = x_t.shape
        dtype = x_t.dtype
        if mask is None:
            mask = torch.ones(b, n, dtype=dtype, device=x_t.device)
        mask = mask.to(dtype)
        if res_idx is None:
            res_idx = torch.arange(n, device=x_t.device).expand(b, n)
        trans = x_t[..., :3]
        quat = quaternion_normalize(x_t[..., 3:])

        t_emb = sinusoidal_features(t.to(dtype) * 1000.0, self.c_time_emb, compute_dtype=torch.float64).to(dtype)
        node_in = torch.cat(
            [
                sinusoidal_features(res_idx.to(dtype), self.c_pos_emb, compute_dtype=torch.float64).to(dtype),
                t_emb[:, None].expand(b, n, -1),
                mask[..., None],
            ],
            dim=-1,
        )
        if self.centroid_feats:
            centre = (trans * mask[..., None]).sum(1, keepdim=True) / mask.sum(1).clamp_min(1)[:, None, None]
            local = invert_apply_rigid(quaternion_to_matrix(quat), trans, centre.expand_as(trans))
            node_in = torch.cat([node_in, local, local.norm(dim=-1, keepdim=True)], dim=-1)
        if self.length_feats:
            node_in = torch.cat([node_in, length_features(mask)], dim=-1)
        s = self.node_embed(node_in) * mask[..., None]

        rel = (res_idx[:, None, :] - res_idx[:, :, None]).clamp(-self.relpos_k, self.relpos_k) + self.relpos_k
        rel = F.one_hot(rel.long(), 2 * self.relpos_k + 1).to(dtype)
        d_t = _distogram(trans * 10.0, self.num_dist_bins, self.max_dist)  # nm -> Å
        if x_sc is None:
            d_sc = torch.zeros_like(d_t)
        else:
            d_sc = _distogram(x_sc.to(dtype) * 10.0, self.num_dist_bins, self.max_dist)
        p = self.node_pair(s)
        z = torch.cat([rel, d_t, d_sc, p[:, :, None].expand(-1, -1, n, -1), p[:, None].expand(-1, n, -1, -1)], -1)
        pair_mask = (mask[:, :, None] * mask[:, None, :])[..., None]
        z = self.edge_embed(z) * pair_mask

        pad = mask < 0.5
        for blk in self.blocks:
            rot = quaternion_to_matrix(quat)
            s = blk.ipa_ln(s + blk.ipa(s, z, rot, trans, mask) * mask[..., None])
            s = s + blk.post_tfmr(blk.seq_tfmr(s, src_key_padding_mask=pad))
            s = blk.node_transition(s) * mask[..., None]
            upd = blk.bb_update(s) * mask[..., None]
            dq = torch.cat([torch.ones_like(upd[..., :1]), upd[..., :3]], dim=-1)
            dq = quaternion_normalize(dq)
            trans = apply_rigid(rot, trans, upd[..., 3:])
            quat = quaternion_normalize(quaternion_multiply(quat, dq))
            if blk.edge_transition is not None:
                z = blk.edge_transition(s, z) * pair_mask
        return torch.cat([trans, quat], dim=-1)
