"""The :class:`FlowMatching` LightningModule: network + path + time sampler + coupling, and its sampler."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from flowsci.contract import GenerativeModule, check_sample_args, outside_cli
from flowsci.couplings import Coupling, IndependentCoupling
from flowsci.errors import NonFiniteError
from flowsci.guidance import ConditionDropout, Guidance
from flowsci.io import atomic_write
from flowsci.paths import AffinePath, CondOTPath, ProbPath, expand_t
from flowsci.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS, Solution, solve_ode
from flowsci.timesteps import TimeSampler, UniformTime

__all__ = ["FlowMatching", "PREDICTIONS", "LOSS_WEIGHTINGS", "QUIET_TRAINER"]

PREDICTIONS = ("velocity", "x1", "epsilon")
LOSS_WEIGHTINGS = ("none", "inverse_clipped")
QUIET_TRAINER: dict[str, Any] = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "limit_val_batches": 0,
}
"""``pl.Trainer`` keywords for programmatic fits (reflow, distillation, benchmarks): no logs, checkpoints,
progress bars or validation."""
_OBJECT_ARGS = ["net", "path", "time_sampler", "coupling", "cond_dropout", "optimizer", "lr_scheduler"]


class FlowMatching(GenerativeModule):
    """Conditional flow matching (Lipman et al., 2023; Liu et al., 2023) on Lightning.

    Training minimises

    .. math:: \\mathcal L = E_{t, (x_0, x_1) \\sim \\pi}\\; w(t)\\, \\| f_\\theta(x_t, t, c) - y_t \\|^2,

    where :math:`\\pi` is the coupling, :math:`x_t` and the velocity :math:`\\dot x_t` come from the path, and the
    regression target :math:`y_t` is :math:`\\dot x_t`, :math:`x_1` or :math:`x_0` for ``prediction`` =
    ``velocity`` / ``x1`` / ``epsilon``. The squared norm is taken in the path manifold's tangent representation
    (all flowsci manifolds use orthonormal tangent coordinates), averaged over unmasked entries.

    Domains specialise the hooks :meth:`unpack_batch`, :meth:`sample_prior`, :meth:`compute_loss`,
    :meth:`velocity` and :meth:`write_samples`. Noise, times and couplings are drawn inside the training step, per
    rank, so the module runs unchanged on CPU, one GPU or DDP.

    Args:
        net: Network called as ``net(x_t, t, **cond)``.
        path: Probability path (default :class:`~flowsci.paths.CondOTPath`).
        time_sampler: Training-time sampler (default uniform).
        coupling: Pairing of noise and data per batch (default independent).
        prediction: What the network outputs: ``"velocity"``, ``"x1"`` or ``"epsilon"`` (affine paths only for
            the latter two).
        loss_weighting: ``"none"`` or ``"inverse_clipped"`` (:math:`w(t) = (1 - \\min(t, 0.9))^{-2}`, ReQFlow's
            normalisation, which turns an ``x1`` loss into a velocity-scaled loss).
        optimizer: Optimizer factory (LightningCLI: ``class_path: torch.optim.AdamW``).
        lr_scheduler: Optional learning-rate scheduler factory.
        sample_steps: Default number of solver steps for :meth:`sample`.
        sample_solver: Default solver for :meth:`sample`.
        data_shape: Shape of one sample (without the batch axis); inferred from the first batch if omitted.
        cond_dropout: Conditioning dropout of classifier-free guidance (:class:`~flowsci.guidance.ConditionDropout`).

    """

    def __init__(
        self,
        net: nn.Module,
        path: ProbPath | None = None,
        time_sampler: TimeSampler | None = None,
        coupling: Coupling | None = None,
        prediction: str = "velocity",
        loss_weighting: str = "none",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_steps: int = 50,
        sample_solver: str = "euler",
        data_shape: list[int] | None = None,
        cond_dropout: ConditionDropout | None = None,
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {loss_weighting!r}")
        # Under LightningCLI the parsed config (class paths) is stored; in Python only plain values are, so
        # checkpoints stay loadable with weights_only=True: pass the same objects to load_from_checkpoint.
        self.save_hyperparameters(ignore=_OBJECT_ARGS if outside_cli() else None)
        self.net = net
        self.path = path if path is not None else CondOTPath()
        if prediction != "velocity" and not isinstance(self.path, AffinePath):
            raise ValueError(f"prediction={prediction!r} needs an affine path, got {type(self.path).__name__}")
        self.time_sampler = time_sampler if time_sampler is not None else UniformTime()
        self.coupling = coupling if coupling is not None else IndependentCoupling()
        self.prediction = prediction
        self.loss_weighting = loss_weighting
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.sample_steps = sample_steps
        self.sample_solver = sample_solver
        self.data_shape: list[int] | None = list(data_shape) if data_shape is not None else None
        self.cond_dropout = cond_dropout

    # ----------------------------------------------------------------- hooks a domain may override
    def unpack_batch(self, batch: Any) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """Split a batch into data ``x1`` ``[B, *D]``, conditioning keywords and an optional mask.

        Accepted batches: a tensor; a ``(x1, y)`` pair (``y`` becomes ``cond["y"]``); a dict with key ``"x1"``,
        optional ``"mask"`` (``[B, *M]``, broadcast against ``x1``) and any other keys as conditioning.
        """
        if isinstance(batch, Tensor):
            return batch, {}, None
        if isinstance(batch, (tuple, list)):
            if len(batch) == 1:
                return batch[0], {}, None
            if len(batch) == 2:
                return batch[0], {"y": batch[1]}, None
        if isinstance(batch, dict) and "x1" in batch:
            cond = {k: v for k, v in batch.items() if k not in ("x1", "mask")}
            return batch["x1"], cond, batch.get("mask")
        raise TypeError(
            f"{type(self).__name__} cannot unpack a batch of type {type(batch).__name__}; yield a tensor, "
            "an (x1, y) pair or a dict with 'x1', or override unpack_batch"
        )

    def sample_prior(self, n: int, cond: dict[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` prior samples shaped ``[n, *data_shape]`` (standard normal, or the manifold's base)."""
        shape = self._require_data_shape()
        if isinstance(self.path, AffinePath):
            return torch.randn((n, *shape), generator=generator, device=self.device)
        return self.path.manifold.random_base((n, *shape[:-1]), generator=generator, device=self.device)

    def velocity(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """The learned velocity :math:`v_\\theta(x_t, t)`, converting x1/epsilon predictions when needed."""
        out = self.net(x_t, t, **cond)
        if self.prediction == "velocity":
            return self._project(x_t, out)
        path: AffinePath = self.path  # type: ignore[assignment]
        # keep away from the singular end point of the conversion
        t_safe = t.clamp(max=1 - 1e-3) if self.prediction == "x1" else t.clamp(min=1e-3)
        if self.prediction == "x1":
            return path.x1_to_velocity(out, x_t, t_safe)
        return path.epsilon_to_velocity(out, x_t, t_safe)

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Flow-matching loss of one batch; returns the scalar loss and values to log.

        A batch may carry its own prior draws under the conditioning key ``"x0"`` (reflow/distillation pairs,
        :mod:`flowsci.reflow`); then no prior is drawn and the coupling is skipped.
        """
        x1, cond, mask = self.unpack_batch(batch)
        if self.data_shape is None:
            self.data_shape = list(x1.shape[1:])
        b = x1.shape[0]
        cond = dict(cond)
        x0 = cond.pop("x0", None)
        if x0 is None:
            x0 = self.sample_prior(b * self.coupling.candidates, cond, generator=generator).to(x1.dtype)
            key = self.coupling.group_key
            if key is not None and key not in cond:
                raise KeyError(f"the coupling pairs within groups of cond[{key!r}], but the batch has no {key!r}")
            groups = None if key is None else cond[key]
            x0, x1 = self.coupling(x0, x1, manifold=self._manifold(), groups=groups)
        t = self.time_sampler.sample(b, device=x1.device, generator=generator).to(x1.dtype)
        if self.cond_dropout is not None:  # drawn last: noise and times do not depend on it
            cond = self.cond_dropout(cond, generator=generator)
        ps = self.path.sample(x0, x1, t)
        out = self._project(ps.x_t, self.net(ps.x_t, t, **cond))
        target = {"velocity": ps.dx_t, "x1": x1, "epsilon": x0}[self.prediction]
        sq = (out - target) ** 2
        if self.loss_weighting == "inverse_clipped":
            sq = sq / expand_t((1 - t.clamp(max=0.9)) ** 2, sq)
        loss = masked_mean(sq, mask)
        return loss, {"loss": loss.detach()}

    def write_samples(self, solution: Solution, out_dir: str | os.PathLike) -> list[Path]:
        """Write samples as ``samples.npz`` (and ``samples.png`` for 2-D points); returns the written files."""
        out = Path(out_dir)
        x = solution.x.detach().cpu().numpy()
        seed = -1 if solution.seed is None else solution.seed  # -1: no seed was given
        written = [atomic_write(out / "samples.npz", lambda p: np.savez(p, x=x, nfe=solution.nfe, seed=seed))]
        if x.ndim == 2 and x.shape[1] == 2:
            written.append(atomic_write(out / "samples.png", lambda p: _scatter_png(x, p, solution)))
        return written

    # ----------------------------------------------------------------- public API
    @torch.no_grad()
    def sample(
        self,
        num: int,
        steps: int | None = None,
        solver: str | None = None,
        cond: dict[str, Any] | None = None,
        seed: int | None = None,
        return_trajectory: bool = False,
        progress: bool | None = None,
        time_grid: Tensor | None = None,
        guidance: Guidance | None = None,
    ) -> Solution:
        """Generate ``num`` samples by integrating the learned velocity from the prior (t=0) to data (t=1).

        Args:
            num: Number of samples.
            steps: Solver steps (default ``sample_steps``); NFE = steps × evaluations per step.
            solver: ``euler``, ``midpoint``, ``heun``, ``rk4`` or ``dopri5`` (default ``sample_solver``).
            cond: Conditioning keywords for the network (tensors with a leading batch axis of size ``num``).
            seed: Seed of the prior draw (recorded in the returned solution).
            return_trajectory: Also return the states at every step.
            progress: Progress bar (default: shown for long solves).
            time_grid: Custom monotone time grid overriding ``steps``.
            guidance: Steering of the velocity (:mod:`flowsci.guidance`: classifier-free, objective).

        Returns:
            A :class:`~flowsci.solvers.Solution` with ``x`` of shape ``[num, *data_shape]`` and its NFE.

        """
        check_sample_args(num, steps, solver, solvers=[*FIXED_STEP_METHODS, *ADAPTIVE_METHODS])
        cond = dict(cond or {})
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        x0 = self.sample_prior(num, cond, generator=generator)
        velocity = self.velocity if guidance is None else guidance.guide(self.velocity, self.path)
        sol = solve_ode(
            velocity,
            x0,
            method=solver or self.sample_solver,
            steps=steps if steps is not None else self.sample_steps,
            time_grid=time_grid,
            manifold=self._manifold(),
            return_trajectory=return_trajectory,
            progress=progress,
            **cond,
        )
        if guidance is not None:
            sol.nfe *= guidance.network_evals
        sol.seed = seed
        if not bool(torch.isfinite(sol.x).all()):
            raise NonFiniteError(
                f"{type(self).__name__}: sampling produced non-finite values (NFE {sol.nfe}); nothing written"
            )
        return sol

    # ----------------------------------------------------------------- Lightning plumbing
    def predict_step(self, batch: Any, batch_idx: int) -> Solution:
        """Generate one sample per row of the batch, with the batch's conditioning (seeded by the batch index)."""
        x1, cond, _ = self.unpack_batch(batch)
        if self.data_shape is None:
            self.data_shape = list(x1.shape[1:])
        return self.sample(x1.shape[0], cond=cond, seed=batch_idx)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the data shape so a loaded model can sample without data (and the loader's record)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["flowsci_data_shape"] = self.data_shape

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the data shape."""
        self.data_shape = checkpoint.get("flowsci_data_shape", self.data_shape)

    def _manifold(self) -> Any:
        """The path's manifold, or ``None`` for flat (affine) paths."""
        return None if isinstance(self.path, AffinePath) else self.path.manifold

    def _project(self, x: Tensor, v: Tensor) -> Tensor:
        """Project a predicted velocity onto the tangent space at ``x`` (identity for flat paths)."""
        manifold = self._manifold()
        return v if manifold is None else manifold.proju(x, v)

    def _require_data_shape(self) -> list[int]:
        if self.data_shape is None:
            raise RuntimeError(
                f"{type(self).__name__} does not know its data shape yet: pass data_shape=... or train/load first"
            )
        return self.data_shape

    def num_examples(self, batch: Any) -> int:
        """Number of examples (samples, not set elements) in a batch, for logging."""
        return int(self.unpack_batch(batch)[0].shape[0])

    # ----------------------------------------------------------------- likelihood, inversion, inverse problems
    def log_prob(self, x: Tensor, steps: int = 50, method: str = "rk4", estimator: str = "exact", **kw: Any) -> Any:
        """Per-sample log-likelihood (nats, bits/dim): :func:`flowsci.likelihood.log_prob` on :meth:`velocity`."""
        from flowsci.likelihood import log_prob

        return log_prob(
            self.velocity, x, manifold=self._manifold(), steps=steps, method=method, estimator=estimator, **kw
        )

    def invert(self, x: Tensor, steps: int | None = None, solver: str = "rf_solver", **kw: Any) -> Solution:
        """Data ``[B, *D]`` to prior noise by :func:`flowsci.inversion.invert` on :meth:`velocity`."""
        from flowsci.inversion import invert

        n = steps if steps is not None else self.sample_steps
        return invert(self.velocity, x, steps=n, solver=solver, manifold=self._manifold(), **kw)

    def solve_inverse(self, operator: Any, y: Tensor, num: int, seed: int | None = None, **kw: Any) -> Solution:
        """``num`` posterior samples given ``y = A(x) + noise`` (:func:`flowsci.inverse_problems.solve_inverse`)."""
        from flowsci.inverse_problems import solve_inverse

        gen = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        cond = kw.pop("cond", None) or {}
        x0 = self.sample_prior(num, cond, generator=gen)
        return solve_inverse(self.velocity, self.path, operator, y, x0, **kw, **cond)


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` over entries where ``mask`` is true (mask broadcast from the left, ``[B, *M]``)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype).reshape(*mask.shape, *([1] * (values.dim() - mask.dim())))
    m = m.expand_as(values)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def _scatter_png(x: np.ndarray, path: str, solution: Solution) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
    ax.set_title(f"{len(x)} samples, NFE={solution.nfe}")
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
