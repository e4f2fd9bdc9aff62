r"""Rectified flow ("reflow", Liu et al., 2023): straighten a trained flow by retraining on its own couplings.

A trained teacher :math:`v^{(k)}` defines a deterministic coupling: :math:`x_1 = \Phi^{(k)}(x_0)`, the solution
of :math:`\dot x = v^{(k)}(x, t)` from a prior draw :math:`x_0`. Retraining flow matching on the pairs
:math:`(x_0, x_1)` (instead of independent ones) gives the :math:`(k+1)`-rectified flow, whose trajectories are
straighter, so few-step (even one-step) Euler sampling becomes accurate. The pipeline here is state-space
agnostic: pairs come from the module's own :meth:`~flowsci.module.FlowMatching.sample` (any solver, any
manifold, any conditioning) and the student is a copy of the teacher trained with the module's own loss, which
reads the paired noise from the batch key ``"x0"``.

* :func:`generate_pairs` / :class:`ReflowPairs` — draw and store the coupling (``.npz``, atomic write).
* :class:`ReflowDataModule` — serves the pairs as ``{"x1", "x0", **cond}`` batches.
* :func:`rectify` — train the :math:`(k+1)`-rectified student initialised from the teacher's weights.
* :func:`straightness` — :math:`S = \int_0^1 E\|\log_{x_0} x_1 - v(x_t, t)\|^2 dt` along solver trajectories.
The command line (``flowsci reflow --ckpt ... --pairs N``, ``flowsci reflow --demo`` for the 2-D toy experiment)
is :mod:`flowsci.cli.reflow`.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from flowsci.io import atomic_write
from flowsci.module import QUIET_TRAINER, FlowMatching
from flowsci.paths import AffinePath
from flowsci.solvers import Velocity, solve_ode
from flowsci.timesteps import TimeSampler

if TYPE_CHECKING:
    from flowsci.manifolds import Manifold

__all__ = [
    "PairDataset",
    "ReflowDataModule",
    "ReflowPairs",
    "fit_on_pairs",
    "generate_pairs",
    "module_straightness",
    "rectify",
    "save_student_checkpoint",
    "straightness",
]

_COND_PREFIX = "cond__"


@dataclass
class ReflowPairs:
    """A stored coupling :math:`(x_0, x_1 = \\Phi(x_0))` produced by a teacher flow.

    Attributes:
        x0: Prior draws ``[N, *D]``.
        x1: The teacher's samples from them, ``[N, *D]``.
        cond: Conditioning used for each pair (tensors with leading axis ``N``).
        meta: Provenance (teacher, solver, steps, NFE, seed) — JSON-serialisable.

    """

    x0: Tensor
    x1: Tensor
    cond: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x0.shape != self.x1.shape:
            raise ValueError(f"x0 and x1 must have equal shapes, got {tuple(self.x0.shape)}, {tuple(self.x1.shape)}")
        for k, v in self.cond.items():
            if v.shape[0] != self.x0.shape[0]:
                raise ValueError(f"cond[{k!r}] has {v.shape[0]} rows, expected {self.x0.shape[0]}")

    def __len__(self) -> int:
        return int(self.x0.shape[0])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the pairs to ``path`` (``.npz``: arrays ``x0``, ``x1``, ``cond__<key>``, JSON ``meta``) atomically."""
        arrays = {"x0": self.x0.cpu().numpy(), "x1": self.x1.cpu().numpy()}
        arrays.update({_COND_PREFIX + k: v.cpu().numpy() for k, v in self.cond.items()})
        arrays["meta"] = np.array(json.dumps(self.meta))
        return atomic_write(path, lambda p: np.savez(p, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReflowPairs:
        """Read pairs written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: The file is not a reflow-pairs archive.

        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reflow pairs file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable .npz reflow-pairs archive ({err})") from err
        missing = {"x0", "x1"} - set(arrays)
        if missing:
            raise ValueError(f"{path}: reflow-pairs archive lacks {sorted(missing)} (keys: {sorted(arrays)})")
        cond = {k[len(_COND_PREFIX) :]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(_COND_PREFIX)}
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
        return cls(torch.from_numpy(arrays["x0"]), torch.from_numpy(arrays["x1"]), cond, meta)


@torch.no_grad()
def generate_pairs(
    module: FlowMatching,
    num: int,
    *,
    steps: int | None = None,
    solver: str | None = None,
    cond: dict[str, Tensor] | None = None,
    seed: int = 0,
    batch_size: int = 1024,
) -> ReflowPairs:
    """Sample the teacher's coupling: ``num`` prior draws and the samples the teacher maps them to.

    Uses the module's own :meth:`~flowsci.module.FlowMatching.sample` (so domain priors, manifolds and solvers
    apply); :math:`x_0` is the solution's initial state. Chunk ``i`` is seeded with ``seed + i``.

    Args:
        module: The trained teacher.
        num: Number of pairs.
        steps: Solver steps (default: the module's).
        solver: Solver name (default: the module's).
        cond: Conditioning per pair (tensors with leading axis ``num``), split into chunks with the pairs.
        seed: Base seed.
        batch_size: Pairs per sampling call.

    Returns:
        The :class:`ReflowPairs` (on CPU) with the teacher's NFE per sample in ``meta``.

    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    cond = dict(cond or {})
    was_training = module.training
    module.eval()
    x0s, x1s, nfe = [], [], 0
    try:
        for i, start in enumerate(range(0, num, batch_size)):
            n = min(batch_size, num - start)
            chunk = {k: v[start : start + n].to(module.device) for k, v in cond.items()}
            sol = module.sample(n, steps=steps, solver=solver, cond=chunk, seed=seed + i, progress=False)
            if sol.x0 is None:
                raise RuntimeError(f"{type(module).__name__}.sample returned no initial state; cannot pair x0 with x1")
            x0s.append(sol.x0.detach().cpu())
            x1s.append(sol.x.detach().cpu())
            nfe = sol.nfe
    finally:
        module.train(was_training)
    meta = {
        "teacher": type(module).__name__,
        "solver": solver or module.sample_solver,
        "steps": steps or module.sample_steps,
        "nfe_per_sample": nfe,
        "seed": seed,
    }
    return ReflowPairs(torch.cat(x0s), torch.cat(x1s), {k: v.cpu() for k, v in cond.items()}, meta)


class PairDataset(Dataset):
    """Rows of :class:`ReflowPairs` as dicts ``{"x1": [*D], "x0": [*D], **cond}``.

    Args:
        pairs: The coupling.

    """

    def __init__(self, pairs: ReflowPairs) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        row = {"x1": self.pairs.x1[i], "x0": self.pairs.x0[i]}
        row.update({k: v[i] for k, v in self.pairs.cond.items()})
        return row


class ReflowDataModule(pl.LightningDataModule):
    """Serves a stored coupling for rectification or distillation.

    Batches are dicts ``{"x1": [B, *D], "x0": [B, *D], **cond}``;
    :meth:`~flowsci.module.FlowMatching.compute_loss` takes ``x0`` from the batch instead of drawing noise.

    Args:
        pairs: A :class:`ReflowPairs` or the path of a file written by :meth:`ReflowPairs.save`.
        batch_size: Batch size.
        val_fraction: Fraction of pairs held out for validation (the last rows).

    """

    def __init__(self, pairs: str | ReflowPairs, batch_size: int = 256, val_fraction: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.pairs = pairs if isinstance(pairs, ReflowPairs) else ReflowPairs.load(pairs)
        self.batch_size, self.val_fraction = batch_size, val_fraction
        n_val = int(round(val_fraction * len(self.pairs)))
        n_train = len(self.pairs) - n_val
        if n_train < 1:
            raise ValueError(f"no training pairs left ({len(self.pairs)} pairs, val_fraction={val_fraction})")
        self.train_set = torch.utils.data.Subset(PairDataset(self.pairs), range(n_train))
        self.val_set = torch.utils.data.Subset(PairDataset(self.pairs), range(n_train, len(self.pairs)))

    def train_dataloader(self) -> DataLoader:
        """Shuffled pair batches (the last incomplete batch is dropped when there are more pairs than a batch)."""
        drop = len(self.train_set) > self.batch_size
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=drop)

    def val_dataloader(self) -> DataLoader:
        """Held-out pair batches (empty when ``val_fraction`` is 0)."""
        return DataLoader(self.val_set, batch_size=self.batch_size)


def rectify(
    teacher: FlowMatching,
    pairs: ReflowPairs,
    *,
    max_steps: int = 2000,
    batch_size: int = 256,
    time_sampler: TimeSampler | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
) -> FlowMatching:
    """Train the rectified student on the teacher's coupling, starting from the teacher's weights.

    The student is a deep copy of the teacher (same class, network, path, hooks and optimizer factory), trained
    with the flow-matching loss on the stored pairs. The teacher is left unchanged.

    Args:
        teacher: The trained :math:`k`-rectified flow.
        pairs: Its coupling (:func:`generate_pairs`).
        max_steps: Optimisation steps.
        batch_size: Batch size.
        time_sampler: Training-time sampler of the student (e.g. :class:`~flowsci.timesteps.UShapedTime`, as
            Lee et al. 2024 recommend for reflow); default: the teacher's.
        trainer_kwargs: Extra :class:`pytorch_lightning.Trainer` arguments.

    Returns:
        The :math:`(k+1)`-rectified student (in eval mode).

    """
    student = copy.deepcopy(teacher)
    student.train()
    if time_sampler is not None:
        student.time_sampler = time_sampler
    fit_on_pairs(student, pairs, max_steps, batch_size, trainer_kwargs)
    return student.eval()


def fit_on_pairs(
    module: pl.LightningModule,
    pairs: ReflowPairs,
    max_steps: int,
    batch_size: int,
    trainer_kwargs: dict[str, Any] | None = None,
) -> None:
    """Fit ``module`` on stored pairs with a quiet single-device Trainer (``trainer_kwargs`` override it)."""
    kwargs = {**QUIET_TRAINER, "max_steps": max_steps, "devices": 1, **(trainer_kwargs or {})}
    pl.Trainer(**kwargs).fit(module, datamodule=ReflowDataModule(pairs, batch_size=batch_size))


def straightness(
    velocity: Velocity,
    x0: Tensor,
    *,
    steps: int = 100,
    manifold: Manifold | None = None,
    **cond: Any,
) -> Tensor:
    r"""Per-sample straightness of the flow's trajectories (Liu et al., 2023, eq. 8).

    .. math::
        S(x_0) = \int_0^1 \big\|\log_{x_0}(x_1) - v(x_t, t)\big\|^2 dt
        \approx \sum_k h_k \big\|\log_{x_0}(x_1) - v(x_{t_k}, t_k)\big\|^2,

    along the Euler trajectory :math:`x_{t_k}` from ``x0`` to :math:`x_1` (``steps`` uniform steps). In
    Euclidean space :math:`\log_{x_0} x_1 = x_1 - x_0`; on flat tori and on Lie groups stored with invariant
    tangent frames (SO(3) body angular velocity), a constant tangent vector is a geodesic, so :math:`S = 0`
    exactly for geodesic trajectories there too. Zero means one Euler step is exact.

    Args:
        velocity: ``v(x, t, **cond)``.
        x0: Prior draws ``[B, *D]``.
        steps: Euler steps of the trajectory.
        manifold: The state's manifold (``None`` = Euclidean).
        **cond: Conditioning passed to ``velocity``.

    Returns:
        :math:`S` per sample, ``[B]`` (squared norms summed over all non-batch axes).

    """
    velocities: list[Tensor] = []

    def recording(x: Tensor, t: Tensor, **c: Any) -> Tensor:
        v = velocity(x, t, **c)
        velocities.append(v if manifold is None else manifold.proju(x, v))
        return v

    start = x0 if manifold is None else manifold.projx(x0)
    sol = solve_ode(recording, start, method="euler", steps=steps, manifold=manifold, progress=False, **cond)
    disp = sol.x - start if manifold is None else manifold.log(start, sol.x)
    h = sol.times.diff().to(x0.dtype)
    return sum(h[k] * ((disp - v) ** 2).flatten(1).sum(1) for k, v in enumerate(velocities))


@torch.no_grad()
def module_straightness(
    module: FlowMatching, num: int = 2000, *, steps: int = 100, seed: int = 0, cond: dict[str, Tensor] | None = None
) -> float:
    """Mean :func:`straightness` of a module's flow over ``num`` seeded prior draws."""
    cond = dict(cond or {})
    gen = torch.Generator(device=module.device).manual_seed(seed)
    x0 = module.sample_prior(num, cond, generator=gen)
    manifold = None if isinstance(module.path, AffinePath) else module.path.manifold
    was_training = module.training
    module.eval()
    try:
        return float(straightness(module.velocity, x0, steps=steps, manifold=manifold, **cond).mean())
    finally:
        module.train(was_training)


def save_student_checkpoint(
    module: FlowMatching, teacher_ckpt: str | os.PathLike, path: str | os.PathLike, info: dict[str, Any]
) -> Path:
    """Save a student as a checkpoint that :func:`flowsci.checkpoint.load_module` and ``flowsci sample`` read.

    The student has the teacher's class and configuration, so the teacher checkpoint's ``hyper_parameters``
    (which record how to rebuild the module) are reused with the student's weights.

    Args:
        module: The trained student.
        teacher_ckpt: The checkpoint the teacher was loaded from.
        path: Destination ``.ckpt`` (written atomically).
        info: Provenance stored under ``"flowsci_reflow"``.

    Returns:
        The written path.

    """
    from flowsci.checkpoint import read_checkpoint

    src = read_checkpoint(teacher_ckpt)
    keep = ("pytorch-lightning_version", "hparams_name", "hyper_parameters", "flowsci")
    ckpt: dict[str, Any] = {k: src[k] for k in keep if k in src}
    ckpt["state_dict"] = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    module.on_save_checkpoint(ckpt)
    ckpt["flowsci_reflow"] = info
    return atomic_write(path, lambda p: torch.save(ckpt, p))
