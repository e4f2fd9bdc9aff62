r"""Flow matching on shape representations: the Mosaic-SDF flow and the two baselines it argues against.

* :class:`MosaicFlow` — rectified flow (CondOT path, :math:`x_t = (1-t)x_0 + t x_1`, target :math:`x_1 - x_0`)
  on column-standardised mosaic matrices ``[n, 4 + k^3]`` with the permutation-equivariant
  :class:`~flowsci.domains.shapes.model.SetTransformer`; class conditioning with classifier-free guidance
  (:class:`~flowsci.guidance.ConditionDropout` in training, :class:`~flowsci.guidance.ClassifierFreeGuidance`
  when sampling, :math:`v_w = v_\varnothing + w (v_c - v_\varnothing)`); samples decode to meshes by
  marching cubes of the blended SDF.
* :class:`GridSDFFlow` — the same flow on a dense truncated SDF grid ``R^3`` cut into ``p^3`` patches (tokens with
  a learned positional embedding).
* :class:`PointCloudFlow` — the same flow and transformer on surface point sets ``[N, 3]``.

The standardisation statistics live in buffers (saved in the checkpoint), taken from the data module at the start
of training, so ``MosaicFlow.from_checkpoint(path).sample(...)`` works without the data.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from flowsci.contract import check_sample_args, outside_cli
from flowsci.couplings import Coupling
from flowsci.domains.shapes.data import CLASSES, ShapeSet, procedural_set, read_mesh, shipped_meshes
from flowsci.domains.shapes.mosaic import MosaicSDF, marching_cubes_mesh
from flowsci.errors import InputError, NonFiniteError
from flowsci.guidance import ClassifierFreeGuidance, ConditionDropout, Guidance
from flowsci.io import atomic_write, atomic_write_text
from flowsci.module import FlowMatching
from flowsci.paths import ProbPath
from flowsci.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS, Solution
from flowsci.timesteps import TimeSampler

__all__ = ["GridSDFFlow", "MosaicFlow", "PointCloudFlow", "ShapeSolution", "ShapeFlowBase", "render_montage"]

_OBJECT_ARGS = ["net", "path", "time_sampler", "coupling", "cond_dropout", "optimizer", "lr_scheduler"]
MESH_FORMATS = ("obj", "ply", "glb", "stl", "off")


@dataclass
class ShapeSolution(Solution):
    """A :class:`~flowsci.solvers.Solution` whose native objects are meshes.

    Attributes:
        meshes: ``trimesh.Trimesh`` per sample (``trimesh.PointCloud`` for the point-cloud flow; an empty mesh
            where the decoded field has no zero set).
        labels: Class index per sample (``None`` for unconditional models).
        class_names: Names of the class indices.
        mosaics: The decoded :class:`~flowsci.domains.shapes.mosaic.MosaicSDF` per sample (mosaic flow only).
        timings: ``{"sample_s": ODE seconds, "mesh_s": decoding seconds}`` for the whole batch.

    """

    meshes: list[Any] = field(default_factory=list)
    labels: list[int] | None = None
    class_names: list[str] = field(default_factory=list)
    mosaics: list[MosaicSDF] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_shapeset(self) -> ShapeSet:
        """The samples as a :class:`~flowsci.domains.shapes.data.ShapeSet` (what :func:`evaluate` takes)."""
        names = [f"sample_{i:03d}" for i in range(len(self.meshes))]
        return ShapeSet(list(self.meshes), self.labels, self.class_names or CLASSES, names, dict(self.timings))


class ShapeFlowBase(FlowMatching):
    """Shared machinery: standardisation buffers, class labels, guided sampling, decoding, files.

    Subclasses set :attr:`representation` and implement :meth:`decode`.
    """

    representation = "mosaic"

    def __init__(
        self,
        net: nn.Module,
        path: ProbPath | None = None,
        time_sampler: TimeSampler | None = None,
        coupling: Coupling | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_steps: int = 20,
        sample_solver: str = "euler",
        cond_dropout: ConditionDropout | None = None,
        resolution: int = 64,
        mesh_format: str = "obj",
    ) -> None:
        super().__init__(
            net=net,
            path=path,
            time_sampler=time_sampler,
            coupling=coupling,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            sample_steps=sample_steps,
            sample_solver=sample_solver,
            cond_dropout=cond_dropout,
        )
        if mesh_format not in MESH_FORMATS:
            raise InputError("mesh_format", f"must be one of {MESH_FORMATS}, got {mesh_format!r}")
        self.resolution, self.mesh_format = int(resolution), mesh_format
        dim = int(getattr(net, "dim", 1))
        self.register_buffer("x_mean", torch.zeros(dim))
        self.register_buffer("x_std", torch.ones(dim))
        self.register_buffer("stats_ready", torch.zeros((), dtype=torch.bool))
        self.class_names: list[str] = []
        self.trained_classes: list[int] = []

    # ----------------------------------------------------------------- data statistics
    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Column mean/std ``[d]`` used to standardise training data and de-standardise samples."""
        self.x_mean.copy_(torch.as_tensor(mean, dtype=self.x_mean.dtype))
        self.x_std.copy_(torch.as_tensor(std, dtype=self.x_std.dtype))
        self.stats_ready.fill_(True)

    def setup(self, stage: str) -> None:
        """Take statistics, data shape and class names from the trainer's data module (first fit only)."""
        dm = getattr(getattr(self, "_trainer", None), "datamodule", None)
        if dm is None or not hasattr(dm, "statistics"):
            return
        if not bool(self.stats_ready):
            self.set_statistics(*dm.statistics())
        if not self.class_names:
            self.class_names = list(dm.class_names)
            self.trained_classes = list(getattr(dm, "class_ids", [])) if dm.conditional else []

    def unpack_batch(self, batch: Any) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """Standardise ``x1`` column-wise; labels travel as ``y``."""
        x1, cond, mask = super().unpack_batch(batch)
        if self.data_shape is None:
            self.data_shape = list(x1.shape[1:])
        return (x1 - self.x_mean) / self.x_std, cond, mask

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also store class names and trained classes (plain lists)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["shapes"] = {"class_names": list(self.class_names), "trained_classes": list(self.trained_classes)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the data shape, class names and trained classes."""
        super().on_load_checkpoint(checkpoint)
        extra = checkpoint.get("shapes") or {}
        self.class_names = list(extra.get("class_names", []))
        self.trained_classes = [int(c) for c in extra.get("trained_classes", [])]

    # ----------------------------------------------------------------- labels
    @property
    def conditional(self) -> bool:
        """Whether the network takes class labels."""
        return int(getattr(self.net, "num_classes", 0)) > 0

    def _labels(self, num: int, class_label: Any) -> list[int] | None:
        if not self.conditional:
            if class_label is not None:
                raise InputError("class_label", "this model is unconditional (trained without class labels)")
            return None
        names = self.class_names or list(CLASSES)
        if class_label is None:
            pool = self.trained_classes or list(range(int(self.net.num_classes)))
            return [pool[i % len(pool)] for i in range(num)]
        values = class_label if isinstance(class_label, (list, tuple)) else [class_label] * num
        if len(values) != num:
            raise InputError("class_label", f"a list needs one label per sample ({num}), got {len(values)}")
        out = []
        for v in values:
            if isinstance(v, str):
                if v not in names:
                    raise InputError("class_label", f"unknown class {v!r}; known: {names}")
                out.append(names.index(v))
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < self.net.num_classes:
                out.append(int(v))
            else:
                raise InputError("class_label", f"must be a class name or index in 0..{self.net.num_classes - 1}")
        return out

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(  # type: ignore[override]
        self,
        num: int,
        *,
        steps: int | None = None,
        solver: str | None = None,
        seed: int | None = None,
        class_label: str | int | list | None = None,
        guidance: float | Guidance = 1.0,
        resolution: int | None = None,
        decode: bool = True,
    ) -> ShapeSolution:
        """Generate ``num`` shapes.

        Args:
            num: Number of shapes.
            steps: Solver steps (default ``sample_steps``); NFE = steps x evaluations per step (x2 for CFG).
            solver: ``euler``, ``midpoint``, ``heun``, ``rk4`` or ``dopri5``.
            seed: Seed of the prior draw.
            class_label: A class name/index, a list of them (one per sample), or ``None`` (round-robin over
                the trained classes; must be ``None`` for unconditional models).
            guidance: Classifier-free guidance weight :math:`w` (1 = conditional, 0 = unconditional), or a
                :class:`~flowsci.guidance.Guidance`.
            resolution: Marching-cubes grid size (default ``self.resolution``).
            decode: Build meshes (``False``: only ``x``, de-standardised, for speed tests).

        Returns:
            A :class:`ShapeSolution` with ``x`` ``[num, *data_shape]`` (de-standardised), ``meshes``, ``labels``.

        Raises:
            InputError: bad ``num``/``steps``/``solver``/``class_label``/``guidance``.
            NonFiniteError: the solve produced NaN/Inf.

        """
        check_sample_args(num, steps, solver, solvers=[*FIXED_STEP_METHODS, *ADAPTIVE_METHODS])
        labels = self._labels(num, class_label)
        cond: dict[str, Any] = {}
        if labels is not None:
            cond["y"] = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        guide: Guidance | None = None
        if isinstance(guidance, Guidance):
            guide = guidance
        else:
            if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not np.isfinite(guidance):
                raise InputError("guidance", f"must be a finite number, got {guidance!r}")
            if float(guidance) != 1.0:
                if labels is None:
                    raise InputError("guidance", "classifier-free guidance needs a class-conditional model")
                null = self.cond_dropout or ConditionDropout(0.0, keys=["y"], null_label=int(self.net.num_classes))
                guide = ClassifierFreeGuidance(float(guidance), null)
        t0 = time.perf_counter()
        sol = FlowMatching.sample(self, num, steps=steps, solver=solver, cond=cond, seed=seed, guidance=guide)
        x = sol.x * self.x_std + self.x_mean
        t_sample = time.perf_counter() - t0
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"{type(self).__name__}: sampling produced non-finite values (NFE {sol.nfe})")
        out = ShapeSolution(
            x=x,
            nfe=sol.nfe,
            times=sol.times,
            seed=seed,
            labels=labels,
            class_names=list(self.class_names or CLASSES),
        )
        t1 = time.perf_counter()
        if decode:
            out.meshes, out.mosaics = self.decode(x, resolution or self.resolution)
        out.timings = {"sample_s": t_sample, "mesh_s": time.perf_counter() - t1}
        return out

    def decode(self, x: Tensor, resolution: int) -> tuple[list[Any], list[MosaicSDF] | None]:
        """Native objects of de-standardised samples ``x`` ``[B, *data_shape]``."""
        raise NotImplementedError

    # ----------------------------------------------------------------- files
    def write_samples(self, solution: ShapeSolution, out_dir: str | os.PathLike) -> list[Path]:
        """Write one mesh file per sample (``mesh_format``), ``samples.json`` and ``montage.png``.

        The montage shows the samples (top) against real shapes: procedural shapes of the same classes for
        conditional models, the shipped real meshes otherwise.
        """
        out = Path(out_dir)
        written: list[Path] = []
        names = solution.class_names or list(CLASSES)
        records = []
        for i, mesh in enumerate(solution.meshes):
            tag = f"_{names[solution.labels[i]]}" if solution.labels is not None else ""
            empty = len(getattr(mesh, "vertices", ())) == 0
            fmt = "ply" if type(mesh).__name__ == "PointCloud" else self.mesh_format
            path = out / f"shape_{i:03d}{tag}.{fmt}"
            if not empty:
                written.append(atomic_write(path, lambda tmp, m=mesh, f=fmt: m.export(tmp, file_type=f)))
            records.append({"file": None if empty else path.name, "label": tag[1:] or None, "empty": empty})
        if solution.mosaics:
            mats = np.stack([m.to_matrix().numpy() for m in solution.mosaics])
            written.append(atomic_write(out / "mosaics.npz", lambda tmp: np.savez(tmp, matrices=mats)))
        meta = {"nfe": solution.nfe, "seed": solution.seed, "timings": solution.timings, "samples": records}
        written.append(atomic_write_text(out / "samples.json", json.dumps(meta, indent=1)))
        reference = _montage_reference(solution)
        title = f"{type(self).__name__}: {len(solution.meshes)} samples, NFE={solution.nfe}, seed={solution.seed}"
        written.append(render_montage(solution.to_shapeset(), reference, out / "montage.png", title=title))
        return written


def _montage_reference(solution: ShapeSolution, num: int = 8) -> ShapeSet:
    if solution.labels is not None:
        labels = solution.labels[:num]
        meshes = [procedural_set(1, 7 + i, classes=[c], resolution=48).meshes[0] for i, c in enumerate(labels)]
        return ShapeSet(meshes, list(labels), solution.class_names)
    return ShapeSet([read_mesh(p) for p in shipped_meshes()[:num]], None, ())


class MosaicFlow(ShapeFlowBase):
    """Mosaic-SDF flow matching (Yariv et al., 2024): rectified flow on ``[n, 4 + k^3]`` mosaic matrices.

    Example:
        >>> flow = MosaicFlow.from_checkpoint("runs/.../last.ckpt")  # doctest: +SKIP
        >>> sol = flow.sample(8, steps=20, class_label="chair", guidance=2.0)  # doctest: +SKIP
        >>> sol.meshes[0].export("chair.obj")  # doctest: +SKIP

    Args:
        net: The velocity network (a :class:`~flowsci.domains.shapes.model.SetTransformer` with
            ``dim = 4 + k^3``; ``num_classes`` > 0 for class conditioning).
        path: Probability path (default CondOT, the rectified path).
        time_sampler: Training-time sampler.
        coupling: Noise-data coupling.
        optimizer: Optimiser factory.
        lr_scheduler: Optional scheduler factory.
        sample_steps: Default solver steps.
        sample_solver: Default solver.
        cond_dropout: Label dropout for classifier-free guidance (``keys=["y"]``, ``null_label=num_classes``).
        resolution: Default marching-cubes grid of decoding.
        mesh_format: File format of :meth:`write_samples` (``obj``, ``ply``, ``glb``, ``stl``, ``off``).
        geometry_scale: The centre and half-width columns are standardised to standard deviation
            ``geometry_scale`` instead of 1 (the ``k^3`` value columns keep 1; ``1`` is plain column
            standardisation). With ``> 1`` the patch layout has a higher signal-to-noise ratio along the path than
            the values, so it is settled earlier, and its 4 columns weigh ``geometry_scale^2`` more in the loss
            against the ``k^3`` value columns (with 1, 4 of 68 loss columns at ``k = 4`` carry the layout, and the
            quick suite's samples put patches in the tori's holes).

    """

    representation = "mosaic"

    def __init__(
        self,
        net: nn.Module,
        path: ProbPath | None = None,
        time_sampler: TimeSampler | None = None,
        coupling: Coupling | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_steps: int = 20,
        sample_solver: str = "euler",
        cond_dropout: ConditionDropout | None = None,
        resolution: int = 64,
        mesh_format: str = "obj",
        geometry_scale: float = 3.0,
    ) -> None:
        super().__init__(
            net, path, time_sampler, coupling, optimizer, lr_scheduler, sample_steps, sample_solver, cond_dropout,
            resolution, mesh_format,
        )  # fmt: skip
        if not geometry_scale > 0:
            raise InputError("geometry_scale", f"must be > 0, got {geometry_scale!r}")
        self.geometry_scale = float(geometry_scale)
        self.save_hyperparameters(ignore=_OBJECT_ARGS if outside_cli() else None)

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Column mean/std ``[d]`` of the data; the 4 geometry columns' std is divided by ``geometry_scale``."""
        std = torch.as_tensor(std, dtype=self.x_std.dtype).clone()
        std[:4] = std[:4] / self.geometry_scale
        super().set_statistics(mean, std)

    def decode(self, x: Tensor, resolution: int) -> tuple[list[Any], list[MosaicSDF]]:
        """Mosaics from the matrices (scales made positive) and their marching-cubes meshes."""
        mosaics = [MosaicSDF.from_matrix(m.cpu()) for m in x]
        return [m.to_mesh(resolution) for m in mosaics], mosaics


class GridSDFFlow(ShapeFlowBase):
    """Baseline: flow matching on a dense truncated SDF grid ``R^3`` as ``(R/p)^3`` tokens of ``p^3`` values.

    Same arguments as :class:`MosaicFlow`, plus ``grid`` (``R``) and ``patch`` (``p``); the network needs
    ``dim = p^3`` and ``num_positions = (R/p)^3``.
    """

    representation = "grid"

    def __init__(
        self,
        net: nn.Module,
        grid: int = 24,
        patch: int = 4,
        path: ProbPath | None = None,
        time_sampler: TimeSampler | None = None,
        coupling: Coupling | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_steps: int = 20,
        sample_solver: str = "euler",
        cond_dropout: ConditionDropout | None = None,
        resolution: int = 64,
        mesh_format: str = "obj",
    ) -> None:
        if grid % patch:
            raise InputError("grid/patch", f"grid ({grid}) must be a multiple of patch ({patch})")
        super().__init__(
            net, path, time_sampler, coupling, optimizer, lr_scheduler, sample_steps, sample_solver, cond_dropout,
            resolution, mesh_format,
        )  # fmt: skip
        self.grid, self.patch = int(grid), int(patch)
        self.save_hyperparameters(ignore=_OBJECT_ARGS if outside_cli() else None)

    def decode(self, x: Tensor, resolution: int) -> tuple[list[Any], None]:
        """Un-patchify to ``R^3`` and run marching cubes over ``[-1, 1]^3`` (``resolution`` is unused)."""
        del resolution
        grids = unpatchify(x.cpu(), self.grid, self.patch).numpy()
        h = 2.0 / (self.grid - 1)
        return [marching_cubes_mesh(g, (-1.0,) * 3, h) for g in grids], None


class PointCloudFlow(ShapeFlowBase):
    """Baseline: flow matching on surface point sets ``[N, 3]`` with the same set transformer (``dim = 3``)."""

    representation = "points"

    def __init__(
        self,
        net: nn.Module,
        path: ProbPath | None = None,
        time_sampler: TimeSampler | None = None,
        coupling: Coupling | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_steps: int = 20,
        sample_solver: str = "euler",
        cond_dropout: ConditionDropout | None = None,
        resolution: int = 64,
        mesh_format: str = "obj",
    ) -> None:
        super().__init__(
            net, path, time_sampler, coupling, optimizer, lr_scheduler, sample_steps, sample_solver, cond_dropout,
            resolution, mesh_format,
        )  # fmt: skip
        self.save_hyperparameters(ignore=_OBJECT_ARGS if outside_cli() else None)

    def decode(self, x: Tensor, resolution: int) -> tuple[list[Any], None]:
        """Point clouds (``trimesh.PointCloud``); no surface is reconstructed."""
        import trimesh

        del resolution
        return [trimesh.PointCloud(p.cpu().numpy()) for p in x], None


def patchify(grids: Tensor, patch: int) -> Tensor:
    """``[B, R, R, R]`` -> ``[B, (R/p)^3, p^3]`` (tokens in ``ij`` order of the patch grid)."""
    b, r = grids.shape[0], grids.shape[1]
    m = r // patch
    x = grids.reshape(b, m, patch, m, patch, m, patch).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, m**3, patch**3)


def unpatchify(tokens: Tensor, grid: int, patch: int) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, (R/p)^3, p^3]`` -> ``[B, R, R, R]``."""
    b, m = tokens.shape[0], grid // patch
    x = tokens.reshape(b, m, m, m, patch, patch, patch).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, grid, grid, grid)


# --------------------------------------------------------------------------------------------- rendering
def _render(shape: Any, size: int = 96, points: int = 12_000) -> np.ndarray:
    """Grey-shaded orthographic image ``[size, size]`` of a mesh or point cloud (NaN = background).

    A z-buffered point splat of area-weighted surface samples, shaded by the normal (Lambert): no OpenGL
    renderer installs reliably on head-less CI machines, and this is enough for a montage.
    """
    img = np.full((size, size), np.nan)
    verts = np.asarray(getattr(shape, "vertices", np.zeros((0, 3))))
    if len(verts) == 0:
        return img
    if hasattr(shape, "faces") and len(shape.faces):
        import trimesh

        pts, fid = trimesh.sample.sample_surface(shape, points, seed=0)
        nrm = np.asarray(shape.face_normals)[fid]
    else:
        pts, nrm = verts, None
    a, e = np.deg2rad(35), np.deg2rad(25)  # azimuth about y, elevation
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
    rot = rx @ ry
    p = pts @ rot.T
    u = np.clip(((p[:, 0] + 1.2) / 2.4 * (size - 1)).round().astype(int), 0, size - 1)
    v = np.clip(((1.2 - p[:, 1]) / 2.4 * (size - 1)).round().astype(int), 0, size - 1)
    shade = np.full(len(p), 0.6) if nrm is None else 0.25 + 0.75 * np.abs((nrm @ rot.T) @ np.array([0.3, 0.5, 0.81]))
    order = np.argsort(p[:, 2])  # far to near: nearer points overwrite
    for du in (0, 1):
        for dv in (0, 1):
            img[np.clip(v[order] + dv, 0, size - 1), np.clip(u[order] + du, 0, size - 1)] = shade[order]
    return img


def render_montage(
    samples: ShapeSet, reference: ShapeSet | None, path: str | os.PathLike, title: str = "", num: int = 8
) -> Path:
    """PNG montage: up to ``num`` samples (top row) and reference shapes (bottom row), labelled by class."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [("sample", samples)] + ([("real", reference)] if reference is not None and len(reference) else [])
    cols = max(1, min(num, max(len(s) for _, s in rows)))
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.8 * len(rows)), squeeze=False)
    for r, (kind, shapes) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(shapes):
                continue
            ax.imshow(_render(shapes.meshes[c]), cmap="gray", vmin=0, vmax=1)
            label = shapes.class_names[shapes.labels[c]] if shapes.labels is not None else ""
            empty = len(getattr(shapes.meshes[c], "vertices", ())) == 0
            ax.set_title(f"{kind} {label}{' (empty)' if empty else ''}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
