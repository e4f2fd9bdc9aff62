"""Networks of GoalFlow for pedestrians: scene encoder, goal-conditioned velocity transformer, goal scorer.

All inputs are in the *agent frame* (origin at the last observed position, x axis along the recent heading) and
divided by the model's position scale (see :class:`~flowsci.domains.trajectories.flow.GoalFlow`).

* :class:`SceneEncoder`: the agent's history (positions and step displacements, MLP) and its neighbours (one MLP
  token per neighbour, attended to by the agent token; a learned "nobody" key keeps the attention defined when
  no neighbour is within the radius). Output: an agent token and a social token.
* :class:`GoalFlowNet`: the velocity field :math:`v_\\theta(x_t, t \\mid \\text{scene}, g)`. Tokens =
  [agent, social, goal, ``pred_len`` waypoints]; the goal token is a 2-D sinusoidal embedding of :math:`g` (or a
  learned null token when the goal is absent, flag 0); the time embedding is concatenated to every token and
  projected back (GoalFlow / Diffusion-ES); a pre-norm transformer encoder; the waypoint tokens give the velocity.
  GoalFlow's banded attention mask and rotary encoding are replaced by full attention with learned positions
  (14-token sequences: the band saves nothing here).
* the goal scorer (:meth:`GoalFlowNet.score_goals`, its own encoder, so the modules stay decoupled as in the
  paper): for every vocabulary point a distance logit :math:`s^{dis}_i` and a clearance logit :math:`s^{col}_i`
  (the pedestrian stand-in for GoalFlow's drivable-area score, see ``flow.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowsci.nets import SinusoidalEmbedding

__all__ = ["GoalFlowNet", "SceneEncoder", "sinusoidal_2d"]


def sinusoidal_2d(xy: Tensor, dim: int, max_period: float = 100.0) -> Tensor:
    """GoalFlow's ``pos2posemb2d``: sinusoidal features of x and y concatenated, ``[..., 2] -> [..., dim]``.

    Args:
        xy: Points (normalised units).
        dim: Output size (a multiple of 4).
        max_period: Longest period (normalised units).

    """
    if dim % 4:
        raise ValueError(f"sinusoidal_2d needs dim divisible by 4, got {dim}")
    half = dim // 4
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=xy.device, dtype=xy.dtype) / half)
    arg = xy.unsqueeze(-1) * freqs * (2 * math.pi)  # [..., 2, half]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)  # [..., 2, 2 half]
    return emb.flatten(-2)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


class SceneEncoder(nn.Module):
    """Agent history + neighbours -> two tokens ``[B, 2, d]`` (agent, social).

    Args:
        obs_len: Observed steps.
        d_model: Token width.
        num_heads: Heads of the neighbour attention.

    """

    def __init__(self, obs_len: int = 8, d_model: int = 64, num_heads: int = 4) -> None:
        super().__init__()
        feat = obs_len * 2 + (obs_len - 1) * 2
        self.agent = _mlp(feat, 2 * d_model, d_model)
        self.neighbour = _mlp(feat + 2, 2 * d_model, d_model)
        self.nobody = nn.Parameter(torch.zeros(1, 1, d_model))
        self.attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)

    @staticmethod
    def _features(track: Tensor) -> Tensor:
        """Positions and step displacements of ``[..., L, 2]`` tracks, flattened."""
        return torch.cat([track.flatten(-2), torch.diff(track, dim=-2).flatten(-2)], dim=-1)

    def forward(self, hist: Tensor, nbr: Tensor, nbr_mask: Tensor) -> Tensor:
        """Encode ``hist [B, L, 2]``, ``nbr [B, M, L, 2]``, ``nbr_mask [B, M]`` (1. = real) to ``[B, 2, d]``."""
        a = self.agent(self._features(hist))  # [B, d]
        rel = nbr[..., -1, :] - hist[:, None, -1, :]  # neighbour's last position relative to the agent's
        n = self.neighbour(torch.cat([self._features(nbr), rel], dim=-1))  # [B, M, d]
        keys = torch.cat([self.nobody.expand(n.shape[0], 1, -1), n], dim=1)
        pad = torch.cat([torch.zeros_like(nbr_mask[:, :1]), nbr_mask], dim=1) < 0.5  # True = ignore
        s, _ = self.attn(a[:, None], keys, keys, key_padding_mask=pad, need_weights=False)
        return torch.stack([a, self.norm(s[:, 0])], dim=1)


class GoalFlowNet(nn.Module):
    """Goal-conditioned velocity network and goal scorer (see the module docstring).

    Called as ``net(x_t, t, hist=..., nbr=..., nbr_mask=..., goal=...)``: ``x_t [B, pred_len, 2]``, ``t [B]``,
    ``hist [B, obs_len, 2]``, ``nbr [B, M, obs_len, 2]``, ``nbr_mask [B, M]`` (float 0/1), ``goal [B, 3]`` =
    ``(g_x, g_y, flag)`` with ``flag = 0`` meaning "no goal" (the null condition of classifier-free guidance).

    Args:
        obs_len: Observed steps.
        pred_len: Predicted steps.
        d_model: Token width.
        num_layers: Transformer layers.
        num_heads: Attention heads.
        ff_mult: Feed-forward width multiplier.
        time_dim: Size of the sinusoidal time embedding.
        scorer_d_model: Width of the goal scorer.
        goal_offsets: Give the goal scorer a third head that regresses a 2-D offset per vocabulary point (TNT's
            target refinement), so chosen goals are not limited to the vocabulary's grid.

    """

    def __init__(
        self,
        obs_len: int = 8,
        pred_len: int = 12,
        d_model: int = 64,
        num_layers: int = 3,
        num_heads: int = 4,
        ff_mult: int = 4,
        time_dim: int = 64,
        scorer_d_model: int = 64,
        goal_offsets: bool = False,
    ) -> None:
        super().__init__()
        self.config = {
            "obs_len": obs_len,
            "pred_len": pred_len,
            "d_model": d_model,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "ff_mult": ff_mult,
            "time_dim": time_dim,
            "scorer_d_model": scorer_d_model,
            "goal_offsets": goal_offsets,
        }
        self.obs_len, self.pred_len, self.d_model = obs_len, pred_len, d_model
        self.encoder = SceneEncoder(obs_len, d_model, num_heads)
        self.goal_embed = _mlp(d_model, 2 * d_model, d_model)
        self.null_goal = nn.Parameter(torch.zeros(d_model))
        self.waypoint = nn.Linear(2, d_model)
        self.positions = nn.Parameter(torch.randn(3 + pred_len, d_model) * 0.02)  # token index + type
        self.time_embed = nn.Sequential(SinusoidalEmbedding(time_dim, scale=100.0), _mlp(time_dim, d_model, d_model))
        self.fuse = nn.Linear(2 * d_model, d_model)  # [token, time] concatenated, then projected (GoalFlow)
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, ff_mult * d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 2))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)
        # goal scorer (own encoder, as GoalFlow trains its goal module separately from the planner)
        ds = scorer_d_model
        self.scorer_encoder = SceneEncoder(obs_len, ds, num_heads)
        self.scorer_goal = _mlp(ds, 2 * ds, ds)
        self.scorer_scene = nn.Linear(2 * ds, ds)
        self.scorer_head = nn.Sequential(nn.SiLU(), nn.Linear(ds, 2 * ds), nn.SiLU(), nn.Linear(2 * ds, 2))
        self.scorer_offset: nn.Module | None = None
        if goal_offsets:
            self.scorer_offset = nn.Sequential(nn.SiLU(), nn.Linear(ds, 2 * ds), nn.SiLU(), nn.Linear(2 * ds, 2))
            nn.init.zeros_(self.scorer_offset[3].weight)
            nn.init.zeros_(self.scorer_offset[3].bias)

    def goal_token(self, goal: Tensor) -> Tensor:
        """``goal [B, 3]`` -> ``[B, d]``: embedding of ``(g_x, g_y)`` where ``flag > 0.5``, else the null token."""
        emb = self.goal_embed(sinusoidal_2d(goal[:, :2], self.d_model))
        present = goal[:, 2:3] > 0.5
        return torch.where(present, emb, self.null_goal.to(emb.dtype).expand_as(emb))

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        hist: Tensor | None = None,
        nbr: Tensor | None = None,
        nbr_mask: Tensor | None = None,
        goal: Tensor | None = None,
        scene: Tensor | None = None,
    ) -> Tensor:
        """Velocity ``[B, pred_len, 2]`` at ``x_t`` and time ``t`` (shapes in the class docstring).

        ``scene [B, 2, d]`` (from :meth:`encode`) replaces ``hist``/``nbr``/``nbr_mask``: samplers encode each
        scene once instead of at every step and for every sample.
        """
        b = x_t.shape[0]
        if goal is None:
            goal = torch.zeros(b, 3, dtype=x_t.dtype, device=x_t.device)
        if scene is None:
            if hist is None or nbr is None or nbr_mask is None:
                raise ValueError("GoalFlowNet needs hist, nbr and nbr_mask, or precomputed scene tokens")
            scene = self.encode(hist, nbr, nbr_mask)
        tokens = torch.cat([scene, self.goal_token(goal)[:, None], self.waypoint(x_t)], dim=1) + self.positions
        temb = self.time_embed(t.to(x_t.dtype).expand(b))[:, None].expand(-1, tokens.shape[1], -1)
        h = self.transformer(self.fuse(torch.cat([tokens, temb], dim=-1)))
        return self.out(h[:, 3:])

    def encode(self, hist: Tensor, nbr: Tensor, nbr_mask: Tensor) -> Tensor:
        """Scene tokens ``[B, 2, d]`` of the velocity network (agent, social)."""
        return self.encoder(hist, nbr, nbr_mask)

    def score_goals(self, hist: Tensor, nbr: Tensor, nbr_mask: Tensor, goals: Tensor) -> tuple[Tensor, Tensor]:
        """Logits of every vocabulary point.

        Args:
            hist: ``[B, obs_len, 2]``.
            nbr: ``[B, M, obs_len, 2]``.
            nbr_mask: ``[B, M]``.
            goals: Vocabulary ``[G, 2]`` (normalised agent-frame units).

        Returns:
            ``(s_dis, s_col)``, each ``[B, G]``: distance-score logits (softmax over the vocabulary) and
            clearance-score logits (sigmoid: the goal is free of other pedestrians).

        """
        logits = self.scorer_head(self._scorer_features(hist, nbr, nbr_mask, goals))  # [B, G, 2]
        return logits[..., 0], logits[..., 1]

    def _scorer_features(self, hist: Tensor, nbr: Tensor, nbr_mask: Tensor, goals: Tensor) -> Tensor:
        """Scene + goal features ``[B, G, scorer_d_model]`` shared by the scorer's heads."""
        scene = self.scorer_scene(self.scorer_encoder(hist, nbr, nbr_mask).flatten(1))  # [B, d]
        g = self.scorer_goal(sinusoidal_2d(goals.to(scene.dtype), self.config["scorer_d_model"]))  # [G, d]
        return scene[:, None] + g[None]

    def offset_goals(self, hist: Tensor, nbr: Tensor, nbr_mask: Tensor, goals: Tensor) -> Tensor:
        """Refined goals ``[B, G, 2]`` = vocabulary point + regressed offset (normalised units; shapes as in
        :meth:`score_goals`); the vocabulary itself, broadcast, when the net has no offset head.
        """
        base = goals.to(hist.dtype)[None].expand(hist.shape[0], -1, -1)
        if self.scorer_offset is None:
            return base
        return base + self.scorer_offset(self._scorer_features(hist, nbr, nbr_mask, goals))
