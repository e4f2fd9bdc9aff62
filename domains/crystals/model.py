"""CSPNet-style periodic GNN (DiffCSP's design, as reused by CrysBFN), on torch-geometric message passing.

Per crystal the graph is fully connected (no self loops). With node features ``h_i``, lattice ``L`` (rows =
lattice vectors) and fractional coordinates ``f_i``, one layer is

.. math::

    m_{ij} = φ_m\\big(h_i, h_j, \\mathrm{vec}(L L^\\top), ψ(f_j - f_i)\\big),\\qquad
    h_i \\leftarrow h_i + φ_h\\big(h_i, \\tfrac{1}{|N(i)|}\\textstyle\\sum_j m_{ij}\\big),

where ``ψ(d) = [sin(2π k d), cos(2π k d)]_{k=1..K}`` per axis (periodic, so integer shifts of ``f`` change
nothing) and ``L Lᵀ`` is invariant to rotations ``L → L Rᵀ``. Heads:

* coordinates: ``Linear(h_i) ∈ R³`` per atom, in fractional units (invariant);
* lattice: ``M(\\bar h) L`` with ``M ∈ R^{3×3}`` from the mean-pooled node features — rotation EQUIVARIANT
  (``(M L) Rᵀ``, ``lattice_head="equivariant"``, DiffCSP) — or ``W \\bar h`` (``"invariant"``: nine numbers in the
  canonical orientation every crystal is put in);
* types: logits ``∈ R^K`` per atom (invariant).

Atoms are permutation-equivariant (message passing + mean pooling). Conditioning inputs: a sinusoidal embedding of
``t`` per crystal and, optionally (``cond_entropy=True``, CrysBFN), three per-atom scalars (the normalised
log-concentration of the periodic Bayesian flow for each coordinate); ``cond_entropy=False`` is the paper's
time-only ablation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowsci.nets import SinusoidalEmbedding

__all__ = ["CSPNet", "FracCoordEmbedding", "fully_connected_edges", "CSPNET_CONFIGS"]

#: Named sizes: "tiny" for CPU minutes, "small" for the quick benchmark, "paper" = DiffCSP/CrysBFN (6 × 512).
CSPNET_CONFIGS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_dim": 64, "num_layers": 3, "num_freqs": 8, "time_dim": 32},
    "small": {"hidden_dim": 128, "num_layers": 4, "num_freqs": 16, "time_dim": 64},
    "paper": {"hidden_dim": 512, "num_layers": 6, "num_freqs": 128, "time_dim": 128},
}


class FracCoordEmbedding(nn.Module):
    """Periodic features ``[sin(2πk d), cos(2πk d)]`` for ``k = 1..num_freqs`` of ``d ∈ R^{E×3}`` → ``[E, 6K]``."""

    def __init__(self, num_freqs: int) -> None:
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.arange(1, num_freqs + 1, dtype=torch.float32))
        self.out_dim = 6 * num_freqs

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        arg = d[:, :, None] * self.freqs.to(d.dtype)[None, None]
        return torch.cat([arg.sin(), arg.cos()], dim=-1).reshape(d.shape[0], -1)


def fully_connected_edges(num_atoms: torch.Tensor) -> torch.Tensor:
    """All ordered pairs ``(j → i)``, ``i ≠ j``, within each crystal of a batch.

    Args:
        num_atoms: ``[B]`` atoms per crystal (consecutive in the node ordering).

    Returns:
        ``edge_index [2, Σ n_b (n_b − 1)]`` with row 0 = source ``j``, row 1 = target ``i``.
    """
    dev = num_atoms.device
    n = num_atoms.long()
    offsets = torch.cumsum(n, 0) - n
    n2 = n * n
    g = torch.repeat_interleave(torch.arange(len(n), device=dev), n2)
    local = torch.arange(int(n2.sum()), device=dev) - torch.repeat_interleave(torch.cumsum(n2, 0) - n2, n2)
    i = local // n[g]
    j = local % n[g]
    keep = i != j
    return torch.stack([(offsets[g] + j)[keep], (offsets[g] + i)[keep]])


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out), nn.SiLU())


def _make_layer(hidden_dim: int, num_freqs: int) -> nn.Module:
    from torch_geometric.nn import MessagePassing

    class CSPLayer(MessagePassing):
        """One CSPNet layer (mean aggregation over the fully connected cell graph, pre-LayerNorm, residual)."""

        def __init__(self) -> None:
            super().__init__(aggr="mean")
            self.frac_emb = FracCoordEmbedding(num_freqs)
            self.edge_mlp = _mlp(2 * hidden_dim + 9 + self.frac_emb.out_dim, hidden_dim, hidden_dim)
            self.node_mlp = _mlp(2 * hidden_dim, hidden_dim, hidden_dim)
            self.norm = nn.LayerNorm(hidden_dim)

        def forward(
            self,
            h: torch.Tensor,
            frac: torch.Tensor,
            lat_ip: torch.Tensor,
            edge_index: torch.Tensor,
            edge_graph: torch.Tensor,
        ) -> torch.Tensor:
            x = self.norm(h)
            agg = self.propagate(edge_index, x=x, frac=frac, lat_ip=lat_ip[edge_graph], size=(len(h), len(h)))
            return h + self.node_mlp(torch.cat([x, agg], dim=-1))

        def message(
            self,
            x_i: torch.Tensor,
            x_j: torch.Tensor,
            frac_i: torch.Tensor,
            frac_j: torch.Tensor,
            lat_ip: torch.Tensor,
        ) -> torch.Tensor:
            return self.edge_mlp(torch.cat([x_i, x_j, lat_ip, self.frac_emb(frac_j - frac_i)], dim=-1))

    return CSPLayer()


class CSPNet(nn.Module):
    """Periodic, rotation/permutation/translation-consistent GNN for crystals (DiffCSP CSPNet design).

    Args:
        num_types: size ``K`` of the atom-type input/output (index ``k`` ↔ atomic number ``k + 1``).
        hidden_dim: node feature width (paper 512).
        num_layers: message-passing layers (paper 6).
        num_freqs: frequencies of the fractional-difference embedding (paper 128).
        time_dim: width of the sinusoidal time embedding (paper 128).
        cond_entropy: take the 3 per-atom accuracy (log-concentration) inputs (CrysBFN); ``False`` = time-only.
        lattice_head: ``"equivariant"`` (DiffCSP: ``M(h̄) L``, rotates with ``L``) or ``"invariant"`` (``W h̄``, nine
            numbers from invariant features: the lattice in the fixed orientation of ``Lattice.from_parameters``
            that :func:`~flowsci.domains.crystals.data.canonicalize` gives every crystal). The equivariant head
            cannot express a canonical orientation from a noisy, near-isotropic early belief and shrinks the lattice
            at few steps; the invariant head is the default.
        config: a key of :data:`CSPNET_CONFIGS` overriding the four sizes above (``None``: use them).
    """

    def __init__(
        self,
        num_types: int = 100,
        hidden_dim: int = 128,
        num_layers: int = 4,
        num_freqs: int = 16,
        time_dim: int = 64,
        cond_entropy: bool = True,
        lattice_head: str = "invariant",
        config: str | None = None,
    ) -> None:
        super().__init__()
        if config is not None:
            c = CSPNET_CONFIGS[config]
            hidden_dim, num_layers, num_freqs, time_dim = (
                c["hidden_dim"],
                c["num_layers"],
                c["num_freqs"],
                c["time_dim"],
            )
        if lattice_head not in ("equivariant", "invariant"):
            raise ValueError(f"lattice_head must be 'equivariant' or 'invariant', got {lattice_head!r}")
        self.num_types = num_types
        self.cond_entropy = cond_entropy
        self.lattice_head = lattice_head
        #: constructor arguments, stored in checkpoints so that models can be rebuilt without a config
        self.config = {
            "num_types": num_types,
            "hidden_dim": hidden_dim,
            "num_layers": num_layers,
            "num_freqs": num_freqs,
            "time_dim": time_dim,
            "cond_entropy": cond_entropy,
            "lattice_head": lattice_head,
        }
        self.time_emb = SinusoidalEmbedding(time_dim)
        self.type_emb = nn.Linear(num_types, hidden_dim)
        self.atom_in = nn.Linear(hidden_dim + time_dim + (3 if cond_entropy else 0), hidden_dim)
        self.layers = nn.ModuleList([_make_layer(hidden_dim, num_freqs) for _ in range(num_layers)])
        self.final_norm = nn.LayerNorm(hidden_dim)
        self.coord_out = nn.Linear(hidden_dim, 3, bias=False)
        self.lattice_out = nn.Linear(hidden_dim, 9, bias=False)
        self.type_out = nn.Linear(hidden_dim, num_types)

    def forward(
        self,
        types: torch.Tensor,
        frac_coords: torch.Tensor,
        lattice: torch.Tensor,
        t: torch.Tensor,
        num_atoms: torch.Tensor,
        coord_cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the network.

        Args:
            types: ``[N, K]`` type representation (one-hot for CSP, ``2θ − 1`` of the discrete BFN).
            frac_coords: ``[N, 3]`` fractional coordinates (any real values; only ``f mod 1`` matters).
            lattice: ``[B, 3, 3]`` (rows = lattice vectors; any consistent scale, e.g. standardised).
            t: ``[B]`` time in ``[0, 1]``.
            num_atoms: ``[B]`` atoms per crystal; atoms of crystal ``b`` are consecutive.
            coord_cond: ``[N, 3]`` accuracy conditioning in [0, 1] (required iff ``cond_entropy``).

        Returns:
            ``(coord_out [N, 3], lattice_out [B, 3, 3], type_logits [N, K])``.
        """
        batch = torch.repeat_interleave(torch.arange(len(num_atoms), device=types.device), num_atoms)
        edge_index = fully_connected_edges(num_atoms)
        edge_graph = batch[edge_index[1]]
        lat_ip = (lattice @ lattice.transpose(-1, -2)).reshape(-1, 9)
        parts = [self.type_emb(types), self.time_emb(t.to(types.dtype))[batch]]
        if self.cond_entropy:
            if coord_cond is None:
                raise ValueError("CSPNet(cond_entropy=True) needs coord_cond [N, 3]")
            parts.append(coord_cond.to(types.dtype))
        h = self.atom_in(torch.cat(parts, dim=-1))
        for layer in self.layers:
            h = layer(h, frac_coords, lat_ip, edge_index, edge_graph)
        h = self.final_norm(h)
        pooled = torch.zeros(len(num_atoms), h.shape[-1], dtype=h.dtype, device=h.device).index_add_(0, batch, h)
        pooled = pooled / num_atoms.to(h.dtype)[:, None]
        lattice_out = self.lattice_out(pooled).reshape(-1, 3, 3)
        if self.lattice_head == "equivariant":
            lattice_out = lattice_out @ lattice
        return self.coord_out(h), lattice_out, self.type_out(h)
