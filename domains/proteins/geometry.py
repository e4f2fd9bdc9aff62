"""Residue-frame geometry: frames from N, CA, C and idealised backbone atoms back from frames.

Conventions (used everywhere in :mod:`flowsci.domains.proteins`):

* A residue frame is a rigid transform :math:`T_i = (R_i, x_i)` with origin :math:`x_i` = CA and rotation
  :math:`R_i \\in SO(3)` whose columns are the local axes expressed in the global frame:
  :math:`e_1 = \\mathrm{normalise}(C - CA)`, :math:`e_2` = Gram–Schmidt of :math:`N - CA` against
  :math:`e_1`, :math:`e_3 = e_1 \\times e_2`. A local point :math:`p` maps to :math:`R_i p + x_i`.
* Quaternions (conversions in :mod:`flowsci.manifolds`) are unit, scalar first ``(w, x, y, z)``.
* Idealised geometry (Engh & Huber 1991): N–CA 1.458 Å, CA–C 1.525 Å, C–N 1.329 Å, C=O 1.231 Å,
  angles N–CA–C 111.2°, CA–C–O 120.5°, so in the local frame C = (1.525, 0, 0) and
  N = 1.458 (cos 111.2°, sin 111.2°, 0).

All functions are batched over arbitrary leading axes and differentiable.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "IDEAL",
    "IDEAL_LOCAL_N",
    "IDEAL_LOCAL_C",
    "frames_from_backbone",
    "backbone_from_frames",
    "place_atom",
    "apply_rigid",
    "invert_apply_rigid",
    "compose_rigid",
    "ca_restraint_energy",
    "relax_ca_trace",
]

#: Idealised backbone geometry (Å and degrees), Engh & Huber (1991).
IDEAL: dict[str, float] = {
    "N_CA": 1.458,
    "CA_C": 1.525,
    "C_N": 1.329,
    "C_O": 1.231,
    "CA_CA": 3.80,
    "N_CA_C": 111.2,
    "CA_C_N": 116.2,
    "C_N_CA": 121.7,
    "CA_C_O": 120.5,
}

_ANG = math.radians(IDEAL["N_CA_C"])
#: Local coordinates of N and C in a residue frame (Å).
IDEAL_LOCAL_N: tuple[float, float, float] = (
    IDEAL["N_CA"] * math.cos(_ANG),
    IDEAL["N_CA"] * math.sin(_ANG),
    0.0,
)
IDEAL_LOCAL_C: tuple[float, float, float] = (IDEAL["CA_C"], 0.0, 0.0)


def _normalise(v: Tensor, eps: float = 1e-8) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def frames_from_backbone(n: Tensor, ca: Tensor, c: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Residue frames by Gram–Schmidt on (C − CA, N − CA), origin CA.

    Args:
        n: N positions ``[..., 3]``.
        ca: CA positions ``[..., 3]``.
        c: C positions ``[..., 3]``.
        eps: Floor on vector norms.

    Returns:
        ``(R, x)``: rotations ``[..., 3, 3]`` (columns = local axes) and translations ``[..., 3]`` (= CA).
    """
    e1 = _normalise(c - ca, eps)
    u2 = n - ca
    e2 = _normalise(u2 - (u2 * e1).sum(-1, keepdim=True) * e1, eps)
    e3 = torch.cross(e1, e2, dim=-1)
    return torch.stack([e1, e2, e3], dim=-1), ca


def apply_rigid(rot: Tensor, trans: Tensor, p: Tensor) -> Tensor:
    """Map local points to global coordinates, :math:`R p + x`.

    Args:
        rot: ``[..., 3, 3]``.
        trans: ``[..., 3]``.
        p: Local points ``[..., 3]`` (broadcast against ``trans``).

    Returns:
        Global points ``[..., 3]``.
    """
    return (rot @ p.unsqueeze(-1)).squeeze(-1) + trans


def invert_apply_rigid(rot: Tensor, trans: Tensor, p: Tensor) -> Tensor:
    """Map global points into the local frame, :math:`R^\\top (p - x)`; shapes as :func:`apply_rigid`."""
    return (rot.transpose(-1, -2) @ (p - trans).unsqueeze(-1)).squeeze(-1)


def compose_rigid(rot1: Tensor, trans1: Tensor, rot2: Tensor, trans2: Tensor) -> tuple[Tensor, Tensor]:
    """Composition :math:`T_1 \\circ T_2 = (R_1 R_2, R_1 x_2 + x_1)`."""
    return rot1 @ rot2, apply_rigid(rot1, trans1, trans2)


def place_atom(a: Tensor, b: Tensor, c: Tensor, bond: float, angle_deg: float, torsion_deg: float) -> Tensor:
    """Place atom d from a, b, c by internal coordinates (NeRF).

    :math:`|cd|` = ``bond``, angle(b, c, d) = ``angle_deg``, dihedral(a, b, c, d) = ``torsion_deg``.

    Args:
        a: First reference atom ``[..., 3]`` (defines the dihedral).
        b: Second reference atom ``[..., 3]``.
        c: Atom bonded to d ``[..., 3]``.
        bond: Bond length c–d (Å).
        angle_deg: Bond angle b–c–d (degrees).
        torsion_deg: Dihedral a–b–c–d (degrees).

    Returns:
        Position of d ``[..., 3]``.
    """
    ang, tor = math.radians(angle_deg), math.radians(torsion_deg)
    bc = _normalise(c - b)
    nrm = _normalise(torch.cross(b - a, bc, dim=-1))
    m = torch.cross(nrm, bc, dim=-1)
    d_local = (
        -bond * math.cos(ang),
        bond * math.sin(ang) * math.cos(tor),
        bond * math.sin(ang) * math.sin(tor),
    )
    return c + d_local[0] * bc + d_local[1] * m + d_local[2] * nrm


def backbone_from_frames(rot: Tensor, trans: Tensor, mask: Tensor | None = None) -> Tensor:
    """Idealised N, CA, C, O atoms from residue frames; O is placed from the next residue's N.

    O_i lies in the peptide plane (CA_i, C_i, N_{i+1}) at 1.231 Å from C_i with angle CA–C–O 120.5°, trans to
    N_{i+1}. For the last residue of a chain (or before a masked residue) the dihedral N–CA–C–O is 180°
    (psi = 0).

    Args:
        rot: Rotations ``[..., L, 3, 3]``.
        trans: CA positions ``[..., L, 3]`` (Å).
        mask: Optional residue mask ``[..., L]``; residue i uses N_{i+1} only when mask[i+1] is set.

    Returns:
        Backbone atoms ``[..., L, 4, 3]`` in the order N, CA, C, O.
    """
    loc_n = trans.new_tensor(IDEAL_LOCAL_N)
    loc_c = trans.new_tensor(IDEAL_LOCAL_C)
    n = apply_rigid(rot, trans, loc_n.expand_as(trans))
    c = apply_rigid(rot, trans, loc_c.expand_as(trans))
    ca = trans
    o_last = place_atom(n, ca, c, IDEAL["C_O"], IDEAL["CA_C_O"], 180.0)
    if trans.shape[-2] > 1:
        n_next = torch.cat([n[..., 1:, :], n[..., -1:, :]], dim=-2)
        o_next = place_atom(n_next, ca, c, IDEAL["C_O"], IDEAL["CA_C_O"], 180.0)
        has_next = torch.ones(trans.shape[:-1], dtype=torch.bool, device=trans.device)
        has_next[..., -1] = False
        if mask is not None:
            nxt = torch.cat([mask[..., 1:], torch.zeros_like(mask[..., :1])], dim=-1).bool()
            has_next = has_next & nxt
        o = torch.where(has_next.unsqueeze(-1), o_next, o_last)
    else:
        o = o_last
    return torch.stack([n, ca, c, o], dim=-2)


def ca_restraint_energy(ca: Tensor, mask: Tensor, bond: float = 0.38, clash: float = 0.38) -> Tensor:
    """Chain restraint on a CA trace: ``Σ_i (|x_{i+1} − x_i| − bond)² + Σ_{|i−j|≥2, i<j} relu(clash − |x_i − x_j|)²``.

    Args:
        ca: ``[B, L, 3]`` CA positions (same length unit as ``bond`` / ``clash``; nm by default: 3.8 Å).
        mask: ``[B, L]`` residue mask.
        bond: Target distance of consecutive CAs.
        clash: Non-bonded CAs (sequence separation ≥ 2; real i, i+2 pairs are 5–7 Å apart) closer than this are
            penalised.

    Returns:
        ``[B]`` energies.
    """
    m = mask.to(ca.dtype)
    d_bond = (ca[:, 1:] - ca[:, :-1]).norm(dim=-1)
    e_bond = ((d_bond - bond) ** 2 * m[:, 1:] * m[:, :-1]).sum(-1)
    idx = torch.arange(ca.shape[1], device=ca.device)
    far = ((idx[None, :] - idx[:, None]).abs() >= 2).to(ca.dtype)
    pair = m[:, :, None] * m[:, None, :] * far
    e_clash = (torch.relu(clash - torch.cdist(ca, ca)) ** 2 * pair).sum((-1, -2)) / 2
    return e_bond + e_clash


def relax_ca_trace(ca: Tensor, mask: Tensor, step: float = 0.2, iters: int = 20) -> Tensor:
    """``iters`` gradient steps of size ``step`` on :func:`ca_restraint_energy` (nm), a sampling-time conditioner.

    Returns:
        ``[B, L, 3]`` relaxed positions (detached; padding unchanged).
    """
    x = ca.detach()
    for _ in range(iters):
        with torch.enable_grad():
            x = x.requires_grad_(True)
            (grad,) = torch.autograd.grad(ca_restraint_energy(x, mask).sum(), x)
        x = (x - step * grad * mask[..., None].to(x.dtype)).detach()
    return x
