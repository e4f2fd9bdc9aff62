"""ReQFlow: rectified quaternion flow on residue frames, as a :class:`flowsci.module.FlowMatching` subclass.

State per residue: translation :math:`x \\in \\mathbb R^3` (nm, zero centre of mass) × rotation
:math:`q \\in SO(3)` (unit quaternion), i.e. points ``[B, L, 7]`` on ``Product([Euclidean(3), SO3()])`` with
tangents ``[B, L, 6]`` (translation velocity ‖ body angular velocity). The path is the core
:class:`~flowsci.paths.GeodesicPath`: straight lines for translations and SLERP in exponential form for
rotations,
:math:`q_t = q_0 \\otimes \\exp(t \\log(q_0^* \\otimes q_1))` (Yue et al., ICML 2025).

Priors: translations :math:`x_0 = \\sigma(L)(\\epsilon - \\bar\\epsilon)`, :math:`\\epsilon \\sim N(0, I)`, with
:math:`\\sigma = 1` nm (= 10 Å, the paper's; ``trans_prior="fixed"``, the default) or, with ``trans_prior="rg"``,
:math:`\\sigma(L) = R_g(L) / \\sqrt{3 (L - 1) / L}`, :math:`R_g(L) = 2.2 L^{0.38}` Å, so that the prior's mean
squared radius of gyration equals that of globular chains of length L (a fixed σ gives 17.3 Å at every L:
1.8× too large at 50 residues, right at 250) — used alike in training (L = crop length) and sampling;
rotations Haar-uniform (default, consistent at train and sample time) or, with ``train_rot_prior="igso3"``,
IGSO(3)
with σ = 1.5 around the data rotation during training only (ReQFlow/FrameFlow's mismatch, reproduced as an
option).

Loss (ReQFlow, with :math:`s(t) = 1 - \\min(t, 0.9)`, N residues, network predicting clean frames
:math:`(\\hat x_1, \\hat q_1)`):

.. math::
    L = 2\\,\\tfrac{1}{3N}\\sum_i \\Big\\|\\tfrac{x_1 - \\hat x_1}{s(t)}\\Big\\|^2
      + \\tfrac{1}{3N}\\sum_i \\Big\\|\\tfrac{\\log_{q_t} q_1 - \\log_{q_t} \\hat q_1}{s(t)}\\Big\\|^2
      + 1[t > 0.5]\\,(L_{bb} + L_{dist}),

with the backbone-atom loss :math:`L_{bb}` on idealised N, CA, C and the pairwise-distance loss
:math:`L_{dist}`
over all backbone atoms, both on atoms scaled by :math:`1/s(t)` (nm). Self-conditioning with probability 0.5.

Sampling (``final_step="euler"``, default): Euler on :math:`t_k` = linspace(0.01, 1, K+1) with translation velocity
:math:`(\\hat x_1 - x)/(1 - t)` and rotation velocity :math:`c(t) \\log_q \\hat q_1`, where
:math:`c = 1/(1-t)` ("linear") or :math:`c = 10` ("exp", the default inference annealing); each Euler step on
SO(3) is ``SO3.exp`` = SLERP toward :math:`\\hat q_1` by the fraction :math:`c\\,\\Delta t`. With
``final_step="x1"`` (the paper's sampler) the grid is linspace(0.01, 1, K), K − 1 Euler steps are taken and the
K-th network call at t = 1 gives the sample :math:`(\\hat x_1, \\hat q_1)` directly.

Mixed lengths in one call are integrated in length buckets (:func:`length_buckets`), so each chain costs about
what its own length costs; the prior is drawn once per call, so bucketing leaves every chain's noise unchanged.

Reflow (ReQFlow = QFlow + one rectification): :func:`make_reflow_pairs` stores (prior draw, generated
backbone)
pairs; training on a batch that carries ``x0`` uses the stored noise instead of a fresh prior draw.

Unrolled (trajectory-level) training, opt-in (``unroll_prob`` > 0; not part of ReQFlow): with that probability a
batch's loss is taken not at a training interpolant but at the state the sampler itself reaches from one,
k ≤ ``unroll_steps`` Euler steps of the NFE-``unroll_nfe`` grid later (:meth:`ReQFlow._unroll`), against the real
chain, so the network sees the drift of its own sampled trajectory (exposure bias).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from flowsci.contract import check_sample_args
from flowsci.couplings import Coupling, IndependentCoupling
from flowsci.domains.proteins.data import Backbone, write_pdb
from flowsci.domains.proteins.geometry import backbone_from_frames, relax_ca_trace
from flowsci.domains.proteins.model import IPAFrameNet
from flowsci.errors import InputError
from flowsci.manifolds import (
    SO3,
    Euclidean,
    Product,
    matrix_to_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
    remove_com,
    sample_igso3,
)
from flowsci.module import FlowMatching
from flowsci.paths import GeodesicPath
from flowsci.solvers import FIXED_STEP_METHODS, Solution, solve_ode
from flowsci.timesteps import TimeSampler, UniformTime

__all__ = [
    "ReQFlow",
    "BackboneSamples",
    "frame_manifold",
    "matrix_geodesic",
    "make_reflow_pairs",
    "length_buckets",
    "RepeatedSeedWarning",
    "ANG_PER_NM",
    "RG_PREFACTOR",
    "RG_EXPONENT",
    "translation_prior_std",
    "CPU_BATCH_PAIRS",
    "GPU_BATCH_PAIRS",
]

ANG_PER_NM = 10.0
#: Radius of gyration of globular chains, :math:`R_g(L) = 2.2\\,L^{0.38}` Å (the metrics' Rg ratio divides by it).
RG_PREFACTOR, RG_EXPONENT = 2.2, 0.38
TRANS_PRIORS = ("fixed", "rg")
ROT_SCHEDULES = ("exp", "linear")
FINAL_STEPS = ("x1", "euler")
#: Residue pairs (chains × longest length²) per sampler batch on a CPU: the tiny trunk on one thread is fastest per
#: backbone at about 4 chains of 60 or 1 chain of ≥ 100 residues (pair tensors beyond that leave the cache).
CPU_BATCH_PAIRS = 16_384
#: Residue pairs per sampler batch on CUDA (the paper config's training batches hold ≤ 5·10⁵ residue pairs).
GPU_BATCH_PAIRS = 500_000
#: Largest relative padding inside a length bucket: a chain joins a bucket whose longest chain is at most this much
#: longer (0.1 = 10 %).
BUCKET_PAD = 0.1
#: Earliest start time t0 of an unrolled training trajectory (``ReQFlow(unroll_prob=...)``): the sampled chains
#: drift from the training path after t ≈ 0.45, so the unroll starts a little before.
UNROLL_T_START = 0.3


class RepeatedSeedWarning(UserWarning):
    """A sampler call reuses a seed for a length that seed already produced with the same settings."""


def length_buckets(lengths: Sequence[int], max_pairs: int, pad: float = BUCKET_PAD) -> list[list[int]]:
    """Group chain indices into sampler batches whose cost follows each chain's own length.

    Chains are taken longest first; a chain joins the open bucket if the bucket's longest chain is at most
    ``pad`` (relative) longer and the bucket then holds at most ``max_pairs`` residue pairs (chains × longest
    length²); otherwise it opens a new bucket. A single chain always gets a bucket, however long.

    Args:
        lengths: Residues per chain.
        max_pairs: Residue-pair budget per bucket.
        pad: Largest relative padding within a bucket.

    Returns:
        Buckets of indices into ``lengths`` (each in increasing index order), longest bucket first.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    buckets: list[list[int]] = []
    lead = 0
    for i in order:
        n = int(lengths[i])
        if buckets and n >= (1 - pad) * lead and (len(buckets[-1]) + 1) * lead**2 <= max_pairs:
            buckets[-1].append(i)
        else:
            buckets.append([i])
            lead = n
    return [sorted(b) for b in buckets]


def translation_prior_std(lengths: Tensor, trans_prior: str = "rg") -> Tensor:
    """Per-axis standard deviation (nm) of the centred Gaussian translation prior of chains of ``lengths``.

    For :math:`x_i = \\sigma(\\epsilon_i - \\bar\\epsilon)`, :math:`\\epsilon_i \\sim N(0, I_3)`, i = 1..L, the
    expected squared radius of gyration is :math:`E[R_g^2] = 3\\sigma^2 (L - 1)/L`. ``"rg"`` sets it to the
    globular-chain value :math:`R_g(L)^2`, :math:`R_g(L) = 2.2 L^{0.38}` Å, i.e.
    :math:`\\sigma(L) = R_g(L)/\\sqrt{3 (L-1)/L}`; ``"fixed"`` is ReQFlow's σ = 1 nm at every length.

    Args:
        lengths: Residues per chain ``[B]`` (any shape; values ≥ 2).
        trans_prior: ``"rg"`` or ``"fixed"``.

    Returns:
        σ in nm (float64), same shape as ``lengths``.
    """
    n = lengths.to(torch.float64)
    if trans_prior == "fixed":
        return torch.ones_like(n)
    if trans_prior != "rg":
        raise ValueError(f"trans_prior must be one of {TRANS_PRIORS}, got {trans_prior!r}")
    n = n.clamp_min(2)
    rg_nm = RG_PREFACTOR * n**RG_EXPONENT / ANG_PER_NM
    return rg_nm / torch.sqrt(3 * (n - 1) / n)


def frame_manifold() -> Product:
    """``Product([Euclidean(3), SO3()])``: one residue frame (translation nm ‖ unit quaternion)."""
    return Product([Euclidean(3), SO3()])


# --------------------------------------------------------------------------- FrameFlow's matrix path
# (baseline)


def _skew(v: Tensor) -> Tensor:
    z = torch.zeros_like(v[..., 0])
    return torch.stack([z, -v[..., 2], v[..., 1], v[..., 2], z, -v[..., 0], -v[..., 1], v[..., 0], z], -1).reshape(
        *v.shape[:-1], 3, 3
    )


def _matrix_log_rotvec(r: Tensor) -> Tensor:
    """Rotation vector of ``r`` as FrameFlow computes it from the matrix: θ = atan2(|vee(R − Rᵀ)|/2,
    (tr R − 1)/2), ω = θ/(2 sin θ) · vee(R − Rᵀ) (Taylor series near 0). Near θ = π the axis is extracted
    from an
    antisymmetric part that vanishes, so precision is lost — kept to reproduce the baseline.
    """
    vee = torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    cos = (r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2] - 1) / 2
    theta = torch.atan2(vee.norm(dim=-1) / 2, cos)
    sin = torch.sin(theta)
    small = theta < 1e-3
    factor = torch.where(small, 0.5 + theta**2 / 12, theta / (2 * torch.where(small, torch.ones_like(sin), sin)))
    return factor[..., None] * vee


def matrix_geodesic(q0: Tensor, q1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """FrameFlow's SO(3) geodesic in matrix form, for comparison with the quaternion path.

    :math:`R_t = R_0 \\exp(t \\log(R_0^\\top R_1))` with the trace/skew matrix logarithm and Rodrigues'
    exponential,
    evaluated in the dtype of the inputs; returns ``(q_t, ω)`` with ω the body rotation vector of
    :math:`R_0^\\top R_1`.

    Args:
        q0: Start rotations, unit quaternions ``[..., 4]``.
        q1: End rotations, unit quaternions ``[..., 4]``.
        t: Times broadcastable to ``q0[..., :1]``.
    """
    r0, r1 = quaternion_to_matrix(q0), quaternion_to_matrix(q1)
    omega = _matrix_log_rotvec(r0.transpose(-1, -2) @ r1)
    v = omega * t
    th = v.norm(dim=-1, keepdim=True)[..., None]
    k = _skew(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    a = torch.where(th < 1e-4, 1 - th**2 / 6, torch.sin(th) / th.clamp_min(1e-12))
    b = torch.where(th < 1e-4, 0.5 - th**2 / 24, (1 - torch.cos(th)) / th.clamp_min(1e-12) ** 2)
    r_t = r0 @ (eye + a * k + b * (k @ k))
    return matrix_to_quaternion(r_t), omega


# --------------------------------------------------------------------------- samples


class BackboneSamples(Solution):
    """A :class:`~flowsci.solvers.Solution` that is also a sequence of :class:`Backbone` objects.

    ``x`` is ``[B, Lmax, 7]`` (nm ‖ quaternion, padded); ``extras["mask"]`` marks real residues.
    Iterating yields one :class:`Backbone` per sample (idealised N, CA, C, O in Å, poly-GLY), each with
    ``.to_pdb(dir)``.
    """

    backbones: list[Backbone]

    def __len__(self) -> int:
        return len(self.backbones)

    def __iter__(self) -> Iterator[Backbone]:
        return iter(self.backbones)

    def __getitem__(self, i: int) -> Backbone:
        return self.backbones[i]

    def to_pdb(self, out_dir: str | os.PathLike, residue: str = "GLY") -> list[Path]:
        """Write one PDB per backbone into ``out_dir``."""
        return [bb.to_pdb(out_dir, residue=residue) for bb in self.backbones]


def _frames_to_backbones(x: Tensor, mask: Tensor, seed: int | None, prefix: str, meta: dict) -> list[Backbone]:
    out = []
    for i in range(x.shape[0]):
        n = int(mask[i].sum())
        xi = x[i, :n].detach().double().cpu()
        trans = (xi[:, :3] - xi[:, :3].mean(0)) * ANG_PER_NM
        atoms = backbone_from_frames(quaternion_to_matrix(xi[:, 3:]), trans)
        out.append(Backbone(atoms.float().numpy(), name=f"{prefix}_len{n}_{i:03d}", seed=seed, meta=dict(meta)))
    return out


# --------------------------------------------------------------------------- the module


class ReQFlow(FlowMatching):
    """QFlow / ReQFlow: frame flow matching with quaternion SLERP paths, IPA network and ReQFlow's loss.

    Batches come from :class:`~flowsci.domains.proteins.data.ProteinDataModule` (``trans`` Å, ``quats``,
    ``mask``, ``res_idx``) or from reflow pairs (the same plus ``x0`` frames in nm ‖ quaternion).

    Args:
        net: Frame network (default :meth:`IPAFrameNet.tiny`), called as
            ``net(x_t, t, mask=, res_idx=, x_sc=)`` and returning clean frames ``[B, L, 7]``.
        time_sampler: Training times (default U[0.01, 0.99]).
        coupling: Coupling of translation noise and data within groups of equal length (default independent;
            :class:`~flowsci.couplings.MinibatchOTCoupling` gives FrameFlow's batch OT).
        optimizer: Optimizer factory (default AdamW, lr 1e-4 as in the paper; configs override).
        lr_scheduler: Optional scheduler factory.
        sample_steps: Default Euler steps (NFE).
        trans_weight: Weight of the translation loss (2.0).
        rot_weight: Weight of the rotation loss (1.0).
        aux_weight: Weight of backbone-atom + pairwise-distance losses (1.0).
        aux_t: The auxiliary losses apply when t > aux_t (0.5 for PDB, 0.25 for SCOPe).
        t_clip: Normalisation :math:`s(t) = 1 - \\min(t, t_{clip})`.
        loss_clamp: Per-sample clamp of the translation and auxiliary losses (5.0).
        self_condition_prob: Probability of a self-conditioning pass in training (0 disables).
        train_rot_prior: ``"uniform"`` (Haar, default) or ``"igso3"`` (IGSO(3)(σ) around the data; the paper).
        trans_prior: Translation prior scale, in training and sampling alike: ``"fixed"`` (σ = 1 nm = 10 Å per axis
            at every length; ReQFlow's, the default) or ``"rg"`` (σ(L) from :func:`translation_prior_std`, so the
            prior's radius of gyration is the globular value 2.2·L^0.38 Å at every length L).
        igso3_sigma: σ of the IGSO(3) training prior.
        rot_path: ``"quaternion"`` (SLERP-exp, ReQFlow) or ``"matrix"`` (FrameFlow's matrix exp/log) for the
            training path.
        rot_schedule: Sampling rotation schedule ``"exp"`` (rate ``exp_rate``) or ``"linear"``.
        exp_rate: Rate of the ``"exp"`` schedule (10).
        t_min: First time of the sampling grid (0.01).
        default_length: Residues per backbone when :meth:`sample` gets no ``lengths``.
        pdb_residue: Residue name written for generated backbones (``"GLY"`` or ``"ALA"``).
        final_step: ``"euler"`` (default): all ``steps`` calls are Euler steps on linspace(t_min, 1, steps + 1)
            (the last step lands exactly on the translation prediction :math:`\\hat x_1(t_{K-1})`);
            ``"x1"``: ReQFlow/FrameFlow's sampler, ``steps − 1`` Euler steps on linspace(t_min, 1, steps) and a
            last network call at t = 1 whose prediction is the sample. The effect of that call depends on the
            checkpoint (README: better CA–CA validity after 1600–2000 steps, much worse at NFE 10 after 2500),
            so the default stays the plain Euler sampler.
        dist_cutoff: If set (Å), the pairwise-distance loss only counts atom pairs whose true distance is below
            it (FrameDiff's proximity mask, 6 Å); None: all pairs (ReQFlow/FrameFlow).
        clash_weight: Weight of a steric-clash penalty on the predicted CA trace (:meth:`_clash_loss`), added to
            the auxiliary losses for t > ``clash_t``; 0 (default) = the paper's loss. Not part of ReQFlow.
        clash_dist: Clash distance of that penalty (Å) for CA pairs with |i − j| ≥ 3.
        clash_t: The clash penalty applies when t > ``clash_t`` (None: ``aux_t``).
        rg_weight: Weight of a chain-size loss :meth:`_rg_loss` (squared radius-of-gyration error of the predicted
            CA trace, scaled by 1/s(t) like the other terms), added for t > ``aux_t``; 0 (default) = the paper's
            loss. Not part of ReQFlow: it targets the one global mode (the chain's size) that a per-residue
            loss weights by 1/N.
        loss_chains: None (default): the batch loss is the mean of its chains' losses (the paper's). An integer N:
            their sum divided by N, so every chain weighs the same whatever else its batch holds (with length-aware
            batches of at most N chains a 250-residue chain otherwise fills a batch alone and weighs N times a
            short chain batched with N − 1 others). Not part of ReQFlow. Gradient-norm clipping below the
            gradients' norm (the suite's 1.0) rescales every batch to the same step and undoes this weight.
        unroll_prob: Probability per batch of a trajectory-level (unrolled) loss (:meth:`_unroll`); 0 (default) =
            the paper's per-step loss. Not part of ReQFlow: a remedy for exposure bias (the sampler's states drift
            from the training interpolants, and a per-step loss never sees the drift).
        unroll_steps: Largest number K of sampler steps unrolled (k is drawn uniformly from 1..K).
        unroll_nfe: The unrolled steps have the spacing Δ = (1 − t_min) / unroll_nfe of the Euler grid at that NFE.
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        time_sampler: TimeSampler | None = None,
        coupling: Coupling | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_steps: int = 100,
        trans_weight: float = 2.0,
        rot_weight: float = 1.0,
        aux_weight: float = 1.0,
        aux_t: float = 0.5,
        t_clip: float = 0.9,
        loss_clamp: float = 5.0,
        self_condition_prob: float = 0.5,
        train_rot_prior: str = "uniform",
        igso3_sigma: float = 1.5,
        rot_path: str = "quaternion",
        rot_schedule: str = "exp",
        exp_rate: float = 10.0,
        t_min: float = 0.01,
        default_length: int = 100,
        pdb_residue: str = "GLY",
        final_step: str = "euler",
        dist_cutoff: float | None = None,
        clash_weight: float = 0.0,
        clash_dist: float = 3.4,
        clash_t: float | None = None,
        trans_prior: str = "fixed",
        rg_weight: float = 0.0,
        loss_chains: int | None = None,
        unroll_prob: float = 0.0,
        unroll_steps: int = 4,
        unroll_nfe: int = 10,
    ) -> None:
        if trans_prior not in TRANS_PRIORS:
            raise ValueError(f"trans_prior must be one of {TRANS_PRIORS}, got {trans_prior!r}")
        if train_rot_prior not in ("uniform", "igso3"):
            raise ValueError(f"train_rot_prior must be 'uniform' or 'igso3', got {train_rot_prior!r}")
        if rot_path not in ("quaternion", "matrix"):
            raise ValueError(f"rot_path must be 'quaternion' or 'matrix', got {rot_path!r}")
        if rot_schedule not in ROT_SCHEDULES:
            raise ValueError(f"rot_schedule must be one of {ROT_SCHEDULES}, got {rot_schedule!r}")
        if coupling is not None and getattr(coupling, "candidates", 1) != 1:
            raise ValueError(
                f"ReQFlow couples translation noise one draw per chain; {type(coupling).__name__} needs "
                f"{coupling.candidates} candidates (use IndependentCoupling or MinibatchOTCoupling)"
            )
        net = net if net is not None else IPAFrameNet.tiny()
        super().__init__(
            net=net,
            path=GeodesicPath(frame_manifold()),
            time_sampler=time_sampler if time_sampler is not None else UniformTime(0.01, 0.99),
            coupling=coupling,
            prediction="velocity",
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            sample_steps=sample_steps,
            sample_solver="euler",
            data_shape=None,
        )
        self.manifold = self.path.manifold
        self.so3 = SO3()
        self.trans_weight, self.rot_weight, self.aux_weight = trans_weight, rot_weight, aux_weight
        self.aux_t, self.t_clip, self.loss_clamp = aux_t, t_clip, loss_clamp
        self.self_condition_prob = self_condition_prob
        self.train_rot_prior, self.igso3_sigma, self.rot_path = train_rot_prior, igso3_sigma, rot_path
        self.trans_prior = trans_prior
        self.rot_schedule, self.exp_rate, self.t_min = rot_schedule, exp_rate, t_min
        self.default_length = default_length
        if final_step not in FINAL_STEPS:
            raise ValueError(f"final_step must be one of {FINAL_STEPS}, got {final_step!r}")
        self.final_step = final_step
        self.dist_cutoff = dist_cutoff
        self.clash_weight, self.clash_dist, self.clash_t = clash_weight, clash_dist, clash_t
        self.rg_weight = rg_weight
        if loss_chains is not None and int(loss_chains) < 1:
            raise ValueError(f"loss_chains must be None or >= 1, got {loss_chains!r}")
        self.loss_chains = None if loss_chains is None else int(loss_chains)
        self.set_unroll(unroll_prob, unroll_steps, unroll_nfe)
        if pdb_residue not in ("GLY", "ALA"):
            raise ValueError(f"pdb_residue must be 'GLY' or 'ALA', got {pdb_residue!r}")
        self.pdb_residue = pdb_residue

    def set_unroll(self, prob: float, steps: int | None = None, nfe: int | None = None) -> None:
        """Set (and check) the unrolled-training options ``unroll_prob``, ``unroll_steps``, ``unroll_nfe``.

        Args:
            prob: Probability per batch of the unrolled loss, in [0, 1].
            steps: Largest number of unrolled sampler steps (None: keep the current).
            nfe: NFE whose Euler spacing the unroll uses (None: keep the current).

        Raises:
            ValueError: ``prob`` outside [0, 1], ``steps`` or ``nfe`` < 1, or ``steps`` + 1 steps of that spacing
                from ``UNROLL_T_START`` past t = 1.
        """
        steps = int(steps if steps is not None else self.unroll_steps)
        nfe = int(nfe if nfe is not None else self.unroll_nfe)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"unroll_prob must be in [0, 1], got {prob!r}")
        if steps < 1 or nfe < 1:
            raise ValueError(f"unroll_steps and unroll_nfe must be >= 1, got {steps!r}, {nfe!r}")
        if UNROLL_T_START + (steps + 1) * (1 - self.t_min) / nfe > 1 + 1e-9:
            raise ValueError(
                f"unroll_steps={steps} steps of (1 - t_min) / {nfe} from t = {UNROLL_T_START} overrun the last "
                "sampler call at t = 1 - (1 - t_min) / unroll_nfe; use fewer steps or a larger unroll_nfe"
            )
        self.unroll_prob, self.unroll_steps, self.unroll_nfe = float(prob), steps, nfe

    # ------------------------------------------------------------------ hooks
    def unpack_batch(self, batch: Any) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """``x1 [B, L, 7]`` (centred translation in nm ‖ quaternion), cond ``{mask, res_idx[, x0]}``, mask."""
        if not isinstance(batch, dict) or ("mask" not in batch and "x1" not in batch):
            raise TypeError(
                "ReQFlow expects dict batches from ProteinDataModule (keys trans, quats, mask, res_idx) "
                "or reflow pairs (x1, x0[, mask, res_idx])"
            )
        if "x1" in batch:
            x1 = batch["x1"]
            mask = batch.get("mask", torch.ones(x1.shape[:2], dtype=x1.dtype, device=x1.device))
            res_idx = batch.get("res_idx", torch.arange(x1.shape[1], device=x1.device).expand(x1.shape[:2]))
        else:
            mask, res_idx = batch["mask"], batch["res_idx"]
            trans = remove_com(batch["trans"] / ANG_PER_NM, mask.bool())
            x1 = torch.cat([trans, batch["quats"]], dim=-1)
        cond: dict[str, Any] = {"mask": mask, "res_idx": res_idx}
        if "x0" in batch:
            cond["x0"] = batch["x0"]
        return x1, cond, mask

    def sample_prior(self, n: int | Tensor, cond: dict[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """Prior frames ``[B, L, 7]``: centred Gaussian translations (nm; per-chain σ from ``trans_prior``, see
        :func:`translation_prior_std`) and Haar rotations (padding zeroed / identity). The mask comes from
        ``cond["mask"]`` (else ``n`` chains of ``default_length``, as the core reflow utilities call it); a tensor
        ``n`` gives the dtype.
        """
        dtype = n.dtype if isinstance(n, Tensor) else torch.get_default_dtype()
        if "mask" in cond:
            mask = cond["mask"]
        else:  # n chains of default_length (core utilities call sample_prior(n, {}))
            mask = torch.ones(int(n), self.default_length, dtype=dtype, device=self.device)
        b, length = mask.shape
        dev = mask.device
        eps = torch.randn((b, length, 3), generator=generator, device=dev, dtype=dtype)
        if self.trans_prior != "fixed":
            eps = eps * translation_prior_std(mask.sum(-1), self.trans_prior).to(eps)[:, None, None]
        trans = remove_com(eps, mask.bool())
        quat = self.so3.random_base((b, length), generator=generator, device=dev, dtype=dtype)
        quat = torch.where(mask.bool()[..., None], quat, self.so3.origin((b, length), device=dev, dtype=dtype))
        return torch.cat([trans, quat], dim=-1)

    def _training_prior(self, x1: Tensor, cond: dict[str, Any], generator: torch.Generator | None) -> Tensor:
        if "x0" in cond:  # reflow: stored noise
            return cond["x0"].to(x1)
        x0 = self.sample_prior(x1, cond, generator)
        mask = cond["mask"].bool()
        if self.train_rot_prior == "igso3":
            noise = sample_igso3(mask.shape, self.igso3_sigma, generator=generator, device=x1.device, dtype=x1.dtype)
            q0 = quaternion_multiply(x1[..., 3:], noise)  # R1 · R_noise
            x0 = torch.cat([x0[..., :3], torch.where(mask[..., None], q0, x0[..., 3:])], -1)
        x0 = self._couple_translations(x0, x1, mask)
        return x0

    def _couple_translations(self, x0: Tensor, x1: Tensor, mask: Tensor) -> Tensor:
        """Apply the coupling to translation noise within each group of equal-length chains."""
        if isinstance(self.coupling, IndependentCoupling):
            return x0
        lengths = mask.sum(-1)
        trans = x0[..., :3].clone()
        for n in lengths.unique():
            idx = torch.nonzero(lengths == n).flatten()
            if len(idx) < 2:
                continue
            n = int(n)
            t0, _ = self.coupling(x0[idx, :n, :3], x1[idx, :n, :3])
            trans[idx, :n] = t0
        return torch.cat([trans, x0[..., 3:]], dim=-1)

    def _interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        if self.rot_path == "quaternion":
            return self.path.sample(x0, x1, t).x_t
        tt = t[:, None, None]
        trans = (1 - tt) * x0[..., :3] + tt * x1[..., :3]
        q_t, _ = matrix_geodesic(x0[..., 3:], x1[..., 3:], tt)
        return torch.cat([trans, q_t], dim=-1)

    def _predict(self, x_t: Tensor, t: Tensor, mask: Tensor, res_idx: Tensor, x_sc: Tensor | None) -> Tensor:
        return self.net(x_t, t, mask=mask, res_idx=res_idx, x_sc=x_sc)

    def _rot_log(self, q_t: Tensor, q: Tensor) -> Tensor:
        if self.rot_path == "quaternion":
            return self.so3.log(q_t, q)
        return _matrix_log_rotvec(quaternion_to_matrix(q_t).transpose(-1, -2) @ quaternion_to_matrix(q))

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """ReQFlow's loss (module docstring); returns the batch mean and its parts for logging."""
        x1, cond, mask = self.unpack_batch(batch)
        mask_f = mask.to(x1.dtype)
        b = x1.shape[0]
        x0 = self._training_prior(x1, cond, generator)
        t = self.time_sampler.sample(b, device=x1.device, generator=generator).to(x1.dtype)
        x_t = self._interpolate(x0, x1, t)
        x_t = torch.where(mask.bool()[..., None], x_t, x1)

        x_sc = None
        u = torch.rand((), generator=generator, device=x1.device) if generator is not None else torch.rand(())
        if self.unroll_prob > 0 and float(torch.rand((), generator=generator, device=x1.device)) < self.unroll_prob:
            unrolled = self._unroll(x0, x1, mask_f, cond["res_idx"], generator)
            x_t, x_sc = unrolled["x_t"], unrolled["x_sc"]
            t = torch.full_like(t, float(unrolled["grid"][-1]))
        elif self.self_condition_prob > 0 and float(u) < self.self_condition_prob:
            with torch.no_grad():
                x_sc = self._predict(x_t, t, mask_f, cond["res_idx"], None)[..., :3]
        pred = self._predict(x_t, t, mask_f, cond["res_idx"], x_sc)

        s = (1 - t.clamp(max=self.t_clip))[:, None, None]
        n3 = 3 * mask_f.sum(-1).clamp_min(1)
        m3 = mask_f[..., None]
        trans_l = (((x1[..., :3] - pred[..., :3]) / s) ** 2 * m3).sum((-1, -2)) / n3
        trans_clamped = trans_l > self.loss_clamp
        trans_l = self.trans_weight * trans_l.clamp(max=self.loss_clamp)
        w_t = self._rot_log(x_t[..., 3:], x1[..., 3:])
        w_hat = self._rot_log(x_t[..., 3:], pred[..., 3:])
        rot_l = self.rot_weight * (((w_t - w_hat) / s) ** 2 * m3).sum((-1, -2)) / n3

        atoms_gt = self._atoms(x1)[..., :3, :] / s[..., None]  # [B, L, 3, 3] nm, N/CA/C
        atoms_pr = self._atoms(pred)[..., :3, :] / s[..., None]
        bb_l = (((atoms_gt - atoms_pr) ** 2).sum(-1) * m3).sum((-1, -2)) / n3
        dist_l = self._pair_distance_loss(
            atoms_gt.reshape(b, -1, 3), atoms_pr.reshape(b, -1, 3), mask_f.repeat_interleave(3, dim=-1), s
        )
        aux_raw = self.aux_weight * (bb_l + dist_l) * (t > self.aux_t).to(x1.dtype)
        aux_l = aux_raw.clamp(max=self.loss_clamp)
        if self.clash_weight > 0:  # clamped on its own, so a clash does not switch off the other terms
            clash_t = self.aux_t if self.clash_t is None else self.clash_t
            clash_l = self.clash_weight * self._clash_loss(pred[..., :3], mask_f, s) * (t > clash_t).to(x1.dtype)
            aux_l = aux_l + clash_l.clamp(max=self.loss_clamp)
        if self.rg_weight > 0:  # clamped on its own, like the clash penalty
            rg_l = self.rg_weight * self._rg_loss(x1[..., :3], pred[..., :3], mask_f, s) * (t > self.aux_t).to(x1.dtype)
            aux_l = aux_l + rg_l.clamp(max=self.loss_clamp)
        total = trans_l + rot_l + aux_l
        loss = total.mean() if self.loss_chains is None else total.sum() / self.loss_chains
        logs = {
            "loss": loss.detach(),
            "trans_loss": trans_l.mean().detach(),
            "rot_loss": rot_l.mean().detach(),
            "aux_loss": aux_l.mean().detach(),
            "aux_clamped": (aux_raw > self.loss_clamp).to(x1.dtype).mean().detach(),
            "trans_clamped": trans_clamped.to(x1.dtype).mean().detach(),
        }
        return loss, logs

    def _unroll(
        self, x0: Tensor, x1: Tensor, mask: Tensor, res_idx: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The sampler's own state a few steps past the training path (trajectory-level training).

        Draws k uniformly from 1..``unroll_steps`` and t0 uniformly from [``UNROLL_T_START``, 1 − (k + 1)Δ],
        Δ = (1 − t_min)/``unroll_nfe``; builds :math:`x_{t_0}` on the training path from the prior draw ``x0`` and
        the data ``x1``, and integrates it with the sampler's own code (:meth:`_integrate`: Euler, the module's
        rotation schedule, self-conditioning on, no restraint) over the grid t0, t0 + Δ, …, t0 + kΔ without
        gradients. The loss is then taken at the returned state and time against the real ``x1``; the network call
        there gets the self-conditioning input the sampler would give it (the last unrolled prediction). The last
        time is at most 1 − Δ, the latest time at which the NFE-``unroll_nfe`` sampler calls the network.

        Args:
            x0: Prior draw ``[B, L, 7]`` (nm ‖ quaternion).
            x1: Data frames ``[B, L, 7]``.
            mask: Residue mask ``[B, L]`` (float).
            res_idx: Residue indices ``[B, L]``.
            generator: Source of k and t0.

        Returns:
            ``x_t0`` and the unrolled ``x_t`` (``[B, L, 7]``; padding = ``x1``), ``x_sc`` (translations
            ``[B, L, 3]`` nm of the last unrolled prediction) and the float64 ``grid`` ``[k + 1]``.
        """
        dev, b = x1.device, x1.shape[0]
        dt = (1 - self.t_min) / self.unroll_nfe
        k = int(torch.randint(1, self.unroll_steps + 1, (), generator=generator, device=dev))
        hi = 1 - (k + 1) * dt
        t0 = UNROLL_T_START + (hi - UNROLL_T_START) * float(torch.rand((), generator=generator, device=dev))
        grid = t0 + dt * torch.arange(k + 1, dtype=torch.float64)
        keep = mask.bool()[..., None]
        x_t0 = torch.where(keep, self._interpolate(x0, x1, torch.full((b,), t0, dtype=x1.dtype, device=dev)), x1)
        with torch.no_grad():
            sol = self._integrate(
                x_t0, mask, res_idx, grid, None, "euler", self.rot_schedule, True, 0.0, 0, False, False
            )
        return {"x_t0": x_t0, "x_t": torch.where(keep, sol.x, x1), "x_sc": sol.extras["x_sc"], "grid": grid}

    def _pair_distance_loss(self, gt: Tensor, pr: Tensor, mask: Tensor, s: Tensor) -> Tensor:
        """Pairwise-distance loss ``[B]`` of atoms ``gt, pr [B, A, 3]`` already scaled by 1/s(t) (nm).

        Σ_ab m_ab (D_ab − D̂_ab)² / (Σ_ab m_ab + 1) with m_ab = mask_a · mask_b (all pairs, ReQFlow) times,
        with ``dist_cutoff``, 1[s(t) · D_ab < cutoff] (pairs closer than the cutoff in the true structure).

        Args:
            gt: True atoms ``[B, A, 3]`` divided by s(t).
            pr: Predicted atoms ``[B, A, 3]`` divided by s(t).
            mask: Atom mask ``[B, A]``.
            s: s(t) ``[B, 1, 1]``.
        """
        pair_m = mask[:, :, None] * mask[:, None, :]
        d_gt, d_pr = torch.cdist(gt, gt), torch.cdist(pr, pr)
        if self.dist_cutoff is not None:  # FrameDiff's proximity mask on the unscaled true distances
            pair_m = pair_m * (d_gt * s < self.dist_cutoff / ANG_PER_NM).to(pair_m.dtype)
        return (((d_gt - d_pr) ** 2) * pair_m).sum((-1, -2)) / (pair_m.sum((-1, -2)) + 1)

    def _clash_loss(self, ca: Tensor, mask: Tensor, s: Tensor) -> Tensor:
        """Steric-clash penalty ``[B]`` on predicted CA positions ``ca [B, L, 3]`` (nm).

        (1/N) Σ_{i<j, j−i≥3} (max(0, c − |x̂_i − x̂_j|) / s(t))², with c = ``clash_dist`` Å (in nm), N the number
        of residues and the same 1/s(t) scaling as the other auxiliary losses. It is zero on every real chain
        when c is below the smallest non-adjacent CA–CA distance of real proteins (3.45 Å in the bundled data).
        """
        n = ca.shape[1]
        d = torch.cdist(ca, ca)
        idx = torch.arange(n, device=ca.device)
        far = (idx[None, :] - idx[:, None]) >= 3  # i < j, |i - j| >= 3
        pm = mask[:, :, None] * mask[:, None, :] * far.to(ca.dtype)
        viol = ((self.clash_dist / ANG_PER_NM - d).clamp_min(0) / s) ** 2
        return (viol * pm).sum((-1, -2)) / mask.sum(-1).clamp_min(1)

    @staticmethod
    def _rg_loss(gt: Tensor, pr: Tensor, mask: Tensor, s: Tensor) -> Tensor:
        """Chain-size loss ``[B]``: ((R_g(x̂₁) − R_g(x₁)) / s(t))² (nm²) of CA positions ``gt, pr [B, L, 3]`` (nm).

        R_g = sqrt(mean_i |x_i − x̄|²) over the residues of ``mask [B, L]``; ``s [B, 1, 1]`` is s(t). Invariant to
        rigid motions of either trace; zero iff the two traces have the same size.
        """
        n = mask.sum(-1).clamp_min(1)

        def rg(x: Tensor) -> Tensor:
            c = (x * mask[..., None]).sum(-2, keepdim=True) / n[:, None, None]
            return ((((x - c) ** 2).sum(-1) * mask).sum(-1) / n + 1e-12).sqrt()

        return ((rg(pr) - rg(gt)) / s[:, 0, 0]) ** 2

    @staticmethod
    def _atoms(x: Tensor) -> Tensor:
        """Idealised backbone atoms ``[B, L, 4, 3]`` in nm from frames ``[B, L, 7]`` (nm ‖ quaternion)."""
        atoms = backbone_from_frames(quaternion_to_matrix(x[..., 3:]), x[..., :3] * ANG_PER_NM)
        return atoms / ANG_PER_NM

    def velocity_from_x1(
        self, x_t: Tensor, x1_hat: Tensor, t: Tensor, mask: Tensor, rot_schedule: str | None = None
    ) -> Tensor:
        """Tangent ``[B, L, 6]``: translation :math:`(\\hat x_1 - x_t)/(1-t)` (prediction re-centred) and
        rotation
        :math:`c(t)\\,\\log_{q_t}\\hat q_1` with c = 1/(1-t) ("linear") or ``exp_rate`` ("exp"); zero on
        padding.
        """
        sched = rot_schedule or self.rot_schedule
        one_minus = (1 - t).clamp_min(1e-3)[:, None, None]
        x1_c = remove_com(x1_hat[..., :3], mask.bool())
        v_trans = (x1_c - x_t[..., :3]) / one_minus
        rate = self.exp_rate if sched == "exp" else 1.0 / one_minus
        v_rot = rate * self._rot_log(x_t[..., 3:], x1_hat[..., 3:])
        v = torch.cat([v_trans, v_rot], dim=-1)
        return v * mask.to(v.dtype)[..., None]

    def velocity(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """Learned velocity; ``cond`` may hold ``mask``, ``res_idx`` (default: all residues) and ``x_sc``."""
        b, n = x_t.shape[:2]
        mask = cond.get("mask", torch.ones(b, n, device=x_t.device)).to(x_t.dtype)
        res_idx = cond.get("res_idx", torch.arange(n, device=x_t.device).expand(b, n))
        x1_hat = self._predict(x_t, t, mask, res_idx, cond.get("x_sc"))
        return self.velocity_from_x1(x_t, x1_hat, t, mask)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        num: int | None = None,
        steps: int | None = None,
        solver: str | None = None,
        cond: dict[str, Any] | None = None,
        seed: int | None = None,
        return_trajectory: bool = False,
        progress: bool | None = None,
        time_grid: Tensor | None = None,
        lengths: Sequence[int] | None = None,
        rot_schedule: str | None = None,
        self_condition: bool = True,
        final_step: str | None = None,
        restraint: float = 0.0,
        restraint_iters: int = 20,
        bucket: bool = True,
        max_batch_pairs: int | None = None,
    ) -> BackboneSamples:
        """Generate backbones of the given lengths with Euler steps from the prior.

        Seeds and chains: the prior of the whole call is one draw from ``torch.Generator().manual_seed(seed)``
        on a padded ``[len(lengths), max(lengths)]`` grid (all translations, then all rotations); chain ``i``
        takes row ``i``, residues ``0 .. lengths[i] − 1``. So the same ``lengths`` list and seed give the same
        chains, and how the chains are then batched (``bucket``) does not change any chain's draw. Each chain
        is integrated independently of the others (the network has no cross-chain terms), so bucketing changes
        a chain only by float rounding. Repeating a seed for the same length with the same sampler settings in
        a later call warns (:class:`RepeatedSeedWarning`): equal-length chains of such calls are identical or
        share their noise.

        Args:
            num: Number of backbones of ``default_length`` (when ``lengths`` is given too, it must match).
            steps: Euler steps (= NFE; default ``sample_steps``) on linspace(t_min, 1, steps + 1).
            solver: Fixed-step solver (``"euler"``, the paper's; others are allowed).
            cond: Optional ``{"mask": [B, L]}`` giving the lengths (used by the core reflow's
                ``generate_pairs``); ignored when ``lengths`` is given.
            seed: Seed of the prior draw (recorded in each backbone).
            return_trajectory: Keep the state at every step (``write_samples`` then writes a multi-model PDB).
            progress: Progress bar.
            time_grid: Custom grid overriding ``steps``.
            lengths: Residues per backbone, e.g. ``[100] * 8``.
            rot_schedule: ``"exp"`` or ``"linear"`` (default: the module's).
            self_condition: Feed the previous prediction back as self-conditioning.
            final_step: ``"x1"`` (ReQFlow/FrameFlow) or ``"euler"`` (default: the module's ``final_step``).
                With ``"x1"`` the grid is linspace(t_min, 1, steps): ``steps − 1`` Euler steps, then one network
                call at the last grid time whose prediction :math:`(\\hat x_1, \\hat q_1)` (translation
                re-centred) is the sample. With ``"euler"`` the grid is linspace(t_min, 1, steps + 1) and the
                sample is the state after the last Euler step. Both use ``steps`` network evaluations.
            restraint: If > 0, a sampling-time conditioner (not part of ReQFlow): every prediction x̂₁'s CA trace
                is relaxed by ``restraint_iters`` gradient steps of this size on
                :func:`~flowsci.domains.proteins.geometry.ca_restraint_energy` (CA–CA bonds at 3.8 Å, no
                non-bonded CA pair under 3.8 Å) before it is turned into a velocity; rotations are untouched.
                It enforces the very CA geometry the CA–CA and clash metrics score, so report it as its own row.
            restraint_iters: Gradient steps per prediction.
            bucket: Integrate chains in length buckets (:func:`length_buckets`) instead of one batch padded to
                the longest chain, so each chain costs about what its own length costs (mixed-length batches
                were ~4× slower per backbone padded on a CPU). ``False``: the former single padded batch.
            max_batch_pairs: Residue pairs (batch × longest length²) per network call when bucketing (default
                :data:`CPU_BATCH_PAIRS` on a CPU, :data:`GPU_BATCH_PAIRS` on CUDA).

        Returns:
            :class:`BackboneSamples` (a :class:`~flowsci.solvers.Solution` iterable over :class:`Backbone`);
            ``extras["batches"]`` lists the chain indices integrated together.
        """
        if num is not None:
            check_sample_args(num, steps, solver, solvers=[*FIXED_STEP_METHODS])
            if lengths is not None and num != len(lengths):
                raise InputError("num", f"asks for {num} backbones but lengths lists {len(lengths)}; give one of them")
        else:
            check_sample_args(1, steps, solver, solvers=[*FIXED_STEP_METHODS])
        sched = rot_schedule or self.rot_schedule
        if sched not in ROT_SCHEDULES:
            raise ValueError(f"rot_schedule must be one of {ROT_SCHEDULES}, got {sched!r}")
        final = final_step or self.final_step
        if final not in FINAL_STEPS:
            raise ValueError(f"final_step must be one of {FINAL_STEPS}, got {final!r}")
        if lengths is None and cond and "mask" in cond:
            lengths = [int(v) for v in cond["mask"].sum(-1).tolist()]
        if lengths is None:
            lengths = [self.default_length] * (num or 1)
        lengths = [int(n) for n in lengths]
        if not lengths or min(lengths) < 2:
            raise InputError("lengths", f"must be a non-empty list of integers >= 2, got {lengths}")
        b, lmax = len(lengths), max(lengths)
        dev = self.device
        dtype = next(self.net.parameters()).dtype
        mask = (torch.arange(lmax, device=dev)[None] < torch.tensor(lengths, device=dev)[:, None]).to(dtype)
        res_idx = torch.arange(lmax, device=dev).expand(b, lmax)
        generator = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
        x0 = self.sample_prior(torch.empty((), dtype=dtype), {"mask": mask}, generator=generator)
        n_steps = steps or self.sample_steps
        if time_grid is not None:
            grid = time_grid
        elif final == "x1":
            grid = torch.linspace(self.t_min, 1.0, n_steps, dtype=torch.float64)
        else:
            grid = torch.linspace(self.t_min, 1.0, n_steps + 1, dtype=torch.float64)
        settings = (tuple(float(t) for t in grid), final, sched, float(restraint), restraint_iters, self_condition)
        self._warn_repeated_seed(seed, lengths, (solver or "euler", *settings))
        if bucket:
            budget = max_batch_pairs or (GPU_BATCH_PAIRS if dev.type == "cuda" else CPU_BATCH_PAIRS)
            groups = length_buckets(lengths, budget)
        else:
            groups = [list(range(b))]

        was_training = self.training
        self.eval()
        x_fin, trajectory = x0.clone(), None
        for idx in groups:
            n = max(lengths[i] for i in idx)
            ix = torch.tensor(idx, device=dev)
            sol = self._integrate(
                x0[ix, :n],
                mask[ix, :n],
                res_idx[ix, :n],
                grid,
                solver,
                final,
                sched,
                self_condition,
                restraint,
                restraint_iters,
                return_trajectory,
                progress,
            )
            x_fin[ix, :n] = sol.x
            if sol.trajectory is not None:
                if trajectory is None:
                    trajectory = [x0.clone() for _ in sol.trajectory]
                for full, part in zip(trajectory, sol.trajectory, strict=True):
                    full[ix, :n] = part
        self.train(was_training)
        sol = Solution(x=x_fin, nfe=sol.nfe, times=sol.times, trajectory=trajectory)
        meta = {
            "nfe": sol.nfe,
            "rot_schedule": sched,
            "steps": len(grid) - 1,
            "final_step": final,
            **({"restraint": restraint} if restraint > 0 else {}),
        }
        out = BackboneSamples(
            x=sol.x,
            nfe=sol.nfe,
            times=sol.times,
            trajectory=sol.trajectory,
            seed=seed,
            extras={"mask": mask, "x0": x0, "lengths": lengths, "batches": groups, **meta},
        )
        out.backbones = _frames_to_backbones(sol.x, mask, seed, f"reqflow_s{seed if seed is not None else 'x'}", meta)
        return out

    def _integrate(
        self,
        x0: Tensor,
        mask: Tensor,
        res_idx: Tensor,
        grid: Tensor,
        solver: str | None,
        final: str,
        sched: str,
        self_condition: bool,
        restraint: float,
        restraint_iters: int,
        return_trajectory: bool,
        progress: bool | None,
    ) -> Solution:
        """Integrate one batch of chains from the prior draw ``x0 [B, L, 7]`` (the body of :meth:`sample`)."""
        b, dtype, dev = x0.shape[0], x0.dtype, x0.device
        state: dict[str, Tensor | None] = {"x_sc": None}

        def predict(x: Tensor, t: Tensor, mask: Tensor, res_idx: Tensor) -> Tensor:
            x1_hat = self._predict(x, t, mask, res_idx, state["x_sc"])
            if restraint > 0:
                ca = relax_ca_trace(x1_hat[..., :3], mask, step=restraint, iters=restraint_iters)
                x1_hat = torch.cat([ca, x1_hat[..., 3:]], -1)
            return x1_hat

        def vel(x: Tensor, t: Tensor, mask: Tensor, res_idx: Tensor) -> Tensor:
            x1_hat = predict(x, t, mask, res_idx)
            if self_condition:
                state["x_sc"] = x1_hat[..., :3]
            return self.velocity_from_x1(x, x1_hat, t, mask, sched)

        if len(grid) > 1:
            sol = solve_ode(
                vel,
                x0,
                method=solver or "euler",
                time_grid=grid,
                manifold=self.manifold,
                return_trajectory=return_trajectory,
                progress=progress,
                mask=mask,
                res_idx=res_idx,
            )
        else:  # a single network call (final_step="x1", steps=1)
            sol = Solution(x=x0, nfe=0, times=grid, trajectory=[x0] if return_trajectory else None)
        if final == "x1":
            t_end = torch.full((b,), float(grid[-1]), dtype=dtype, device=dev)
            x1_hat = predict(sol.x, t_end, mask, res_idx)
            x_fin = torch.cat([remove_com(x1_hat[..., :3], mask.bool()), self.so3.projx(x1_hat[..., 3:])], -1)
            x_fin = torch.where(mask.bool()[..., None], x_fin, sol.x)
            traj = None if sol.trajectory is None else [*sol.trajectory, x_fin]
            times = torch.cat([sol.times, sol.times[-1:]])
            sol = Solution(x=x_fin, nfe=sol.nfe + 1, times=times, trajectory=traj)
        sol.extras["x_sc"] = state["x_sc"]  # the self-conditioning input of the sampler's next network call
        return sol

    def _warn_repeated_seed(self, seed: int | None, lengths: Sequence[int], settings: tuple) -> None:
        """Warn when ``seed`` already sampled one of ``lengths`` with the same sampler ``settings`` (this model)."""
        if seed is None:
            return
        log = self.__dict__.setdefault("_seed_log", set())
        keys = {(int(seed), int(n), settings) for n in lengths}
        repeated = sorted(k[1] for k in keys & log)
        if repeated:
            warnings.warn(
                f"ReQFlow.sample: seed {seed} already sampled length(s) {repeated} with the same sampler settings "
                "in an earlier call; chains of equal length are then identical (same position, same lengths list) "
                "or share their prior noise, and evaluate() would count them twice. Use a new seed per call "
                "(e.g. seed + call index) or put all lengths in one call.",
                RepeatedSeedWarning,
                stacklevel=4,
            )
        if len(log) > 100_000:
            log.clear()
        log.update(keys)

    def write_samples(self, solution: Solution, out_dir: str | os.PathLike) -> list[Path]:
        """One PDB per backbone (N, CA, C, O; poly-GLY), with a trajectory one multi-model PDB per backbone
        (``*_traj.pdb``), and ``samples.png``: the samples against the 177 bundled real chains
        (:func:`~flowsci.domains.proteins.metrics.plot_samples`: six distribution panels, then three generated CA
        traces and the bundled chain closest to their median length, coloured by DSSP state, clash pairs marked
        with the tables' definition).
        """
        from flowsci.domains.proteins.data import bundled_backbones
        from flowsci.domains.proteins.metrics import plot_samples

        out = Path(out_dir)
        if not isinstance(solution, BackboneSamples):
            raise TypeError("ReQFlow.write_samples expects the BackboneSamples returned by ReQFlow.sample")
        written = solution.to_pdb(out, residue=self.pdb_residue)
        if solution.trajectory is not None:
            mask = solution.extras["mask"]
            for i, bb in enumerate(solution.backbones):
                models = [
                    _frames_to_backbones(x[i : i + 1], mask[i : i + 1], solution.seed, bb.name, {})[0]
                    for x in solution.trajectory
                ]
                written.append(write_pdb(models, out / f"{Path(written[i]).stem}_traj.pdb", residue=self.pdb_residue))
        n = len(solution.backbones)
        title = f"{n} samples, NFE {solution.nfe}, seed {solution.seed}"
        written.append(
            plot_samples(
                solution.backbones, bundled_backbones(), out / "samples.png", title, ("generated", "real (bundled)")
            )
        )
        return written

    # ------------------------------------------------------------------ checkpoints
    def init_options(self) -> dict[str, Any]:
        """The scalar constructor options (everything but net, samplers and optimizer factories)."""
        keys = (
            "sample_steps",
            "trans_weight",
            "rot_weight",
            "aux_weight",
            "aux_t",
            "t_clip",
            "loss_clamp",
            "self_condition_prob",
            "train_rot_prior",
            "igso3_sigma",
            "rot_path",
            "rot_schedule",
            "exp_rate",
            "t_min",
            "default_length",
            "pdb_residue",
            "final_step",
            "dist_cutoff",
            "clash_weight",
            "clash_dist",
            "clash_t",
            "trans_prior",
            "rg_weight",
            "loss_chains",
            "unroll_prob",
            "unroll_steps",
            "unroll_nfe",
        )
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def pretrained(cls, name: str = "reqflow_tiny") -> ReQFlow:
        """A small trained model shipped in ``sample_data`` (samples offline, no training needed).

        ``"reqflow_tiny"``: the quick suite's ReQFlow (tiny trunk, 1600 QFlow steps on 48-residue crops + one
        reflow, ``diagnostics pretrain``), grown to 4 blocks (:meth:`IPAFrameNet.grown`, 0.38 M parameters),
        fine-tuned for 450 steps on whole chains (40–251 residues) with the length-aware translation prior
        (``trans_prior="rg"``; ``diagnostics long``), then for 2700 more with the unrolled loss on a quarter of the
        batches (``unroll_prob=0.25, unroll_steps=2``). Not protein-like: CA–CA validity ~0.4–0.47 and almost no
        clash-free plain sample at 50–250 residues; median Rg ratio 0.9–1.1 per length bucket from 50 to 250
        residues at NFE 10 (the proteins page's tables and the quick suite's ``reqflow-shipped`` row).

        Raises:
            FileNotFoundError: no such shipped model.
        """
        return super().pretrained(name)


# --------------------------------------------------------------------------- reflow


def make_reflow_pairs(
    model: ReQFlow,
    lengths: Sequence[int],
    steps: int = 100,
    batch_size: int = 16,
    seed: int = 0,
    max_coil: float | None = 0.5,
    max_rg_factor: float | None = None,
):
    """Generate (prior draw, generated backbone) pairs with a trained QFlow for rectification (ReQFlow §1.8).

    Each pair is kept only if the generated backbone passes the same coil / Rg filters as real data (the
    length is
    chosen by the caller). The result is a core :class:`flowsci.reflow.ReflowPairs` padded to the longest
    length
    with ``cond = {"mask", "res_idx"}``, so :func:`flowsci.reflow.rectify` fine-tunes the model on it directly
    (its batches carry ``x0``, which :meth:`ReQFlow.compute_loss` uses instead of a fresh prior draw).

    Args:
        model: The trained base model.
        lengths: Lengths to generate (one pair each, before filtering).
        steps: Euler steps of the base sampler.
        batch_size: Backbones per sampler call.
        seed: Base seed (chunk k uses seed + k).
        max_coil: Maximum DSSP coil fraction of kept samples (None disables).
        max_rg_factor: Radius-of-gyration cutoff factor (None disables).

    Returns:
        ``ReflowPairs`` with ``x0``, ``x1`` of shape ``[N, Lmax, 7]`` and ``meta`` (kept / generated counts).
    """
    from flowsci.domains.proteins.data import filter_backbones
    from flowsci.reflow import ReflowPairs

    lengths = [int(n) for n in lengths]
    lmax = max(lengths)
    x0s, x1s, masks = [], [], []
    nfe = 0
    for k in range(0, len(lengths), batch_size):
        chunk = lengths[k : k + batch_size]
        sol = model.sample(lengths=chunk, steps=steps, seed=seed + k)
        nfe = sol.nfe
        for i, bb in enumerate(sol.backbones):
            if not filter_backbones(
                [bb], min_length=0, max_length=10**9, max_coil=max_coil, max_rg_factor=max_rg_factor
            ):
                continue
            n = len(bb)
            pad0 = torch.zeros(lmax, 7)
            pad0[:, 3] = 1.0
            pad1 = pad0.clone()
            pad0[:n] = sol.extras["x0"][i, :n].float().cpu()
            pad1[:n] = sol.x[i, :n].float().cpu()
            m = torch.zeros(lmax)
            m[:n] = 1.0
            x0s.append(pad0)
            x1s.append(pad1)
            masks.append(m)
    if not x0s:
        raise RuntimeError("make_reflow_pairs: no generated backbone passed the filters; relax max_coil/max_rg_factor")
    mask = torch.stack(masks)
    return ReflowPairs(
        torch.stack(x0s),
        torch.stack(x1s),
        {"mask": mask, "res_idx": torch.arange(lmax).expand(len(masks), lmax).clone()},
        {
            "teacher": type(model).__name__,
            "steps": steps,
            "nfe_per_sample": nfe,
            "seed": seed,
            "generated": len(lengths),
            "kept": len(masks),
            "max_coil": max_coil,
        },
    )
