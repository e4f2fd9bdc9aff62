r"""Generative models of single cells: WBDiT flow, WBDiT DDPM/DDIM (the paper's), latent PCA flow, Gaussian floor.

Every model works on standardised log-normalised expression :math:`z = (x - \bar x) / \max(s, s_{\min})`
(per-gene training mean and standard deviation) and returns cells as AnnData:

* :class:`WhiteBoxFlow` — flow matching (CondOT path, :math:`x_t = (1-t)x_0 + t x_1`, :math:`x_0 \sim N(0, I)`,
  target :math:`x_1 - x_0`) with the gene-patch :class:`~flowsci.domains.singlecell.model.WBDiT` velocity
  network, cell type through :class:`~flowsci.guidance.ConditionDropout` / classifier-free guidance.
* :class:`WhiteBoxDiffusion` — the paper's DDPM (:math:`\epsilon`-prediction, linear
  :math:`\beta` 1e-4 → 0.02, :math:`T = 1000`), sampled with DDIM (:math:`\eta = 0`) or ancestral steps.
* :class:`LatentFlow` — flow matching in the space of the top principal components (fitted on training cells,
  standardised) with the core :class:`~flowsci.nets.MLP`, decoded linearly back to genes (scDiffusion/CFGen style).
* :class:`GaussianBaseline` — a per-type diagonal Gaussian in the same PCA space (the sanity floor).

Generated cells get a library size :math:`L \sim \mathrm{LogNormal}(\mu_k, \sigma_k)` fitted per cell type on the
training cells and are decoded to counts (:func:`~flowsci.domains.singlecell.data.lognorm_to_counts`; by default
stochastic rounding onto the levels :math:`\log(1 + 10^4 c / L)` a real cell can take, unbiased in log space);
``X`` is then recomputed from the counts as for real cells (:math:`x = \log(1 + 10^4 c / L)`), so generated
cells have the same discrete structure (exact zeros) as real ones. Everything a model needs at sampling time
(genes, cell types, scaling, library-size fits, PCs) travels in its checkpoint under the key ``"singlecell"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from flowsci.contract import GenerativeModule, check_sample_args, outside_cli
from flowsci.couplings import Coupling
from flowsci.domains.singlecell.data import CELL_TYPE_KEY, COUNT_DECODERS, log_normalize, lognorm_to_counts
from flowsci.errors import InputError, NonFiniteError, require
from flowsci.guidance import ClassifierFreeGuidance, ConditionDropout, Guidance
from flowsci.io import atomic_write
from flowsci.module import FlowMatching
from flowsci.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS, Solution
from flowsci.timesteps import TimeSampler

__all__ = [
    "CellSolution",
    "GaussianBaseline",
    "LatentFlow",
    "WhiteBoxDiffusion",
    "WhiteBoxFlow",
    "cells_figure",
]

_PRIOR_KEYS = ("type_pc_mean", "type_pc_std", "resid_std")
PRIORS = ("normal", "type")
"""Priors of the flows: the standard normal or the training cells' per-type Gaussian (``_CellFlow.sample_prior``)."""
_META_KEYS = ("genes", "cell_types", "type_freq", "lib_mu", "lib_sigma", "gene_mean", "gene_std", "pcs", "pc_std")


@dataclass
class CellSolution(Solution):
    """A :class:`~flowsci.solvers.Solution` whose ``x`` is log-normalised expression ``[n, G]`` and ``adata`` the cells.

    Attributes:
        adata: ``anndata.AnnData``: ``X`` log-normalised, ``layers['counts']`` (when asked), ``obs['cell_type']``,
            ``obs['library_size']``, ``obs['generated'] = True``, the training genes in ``var``; ``uns['flowsci']``
            records model, NFE, seed, steps and solver.

    """

    adata: Any = None


class _CellGenerator:
    """Shared plumbing: metadata from the data module/checkpoint, labels, library sizes, AnnData, files."""

    meta: dict[str, Any] | None
    min_std: float

    # ----------------------------------------------------------------- metadata
    def set_metadata(self, meta: Mapping[str, Any]) -> None:
        """Adopt the data statistics (from :meth:`SingleCellDataModule.metadata`) and check the network fits them.

        Raises:
            InputError: The network was built for another number of genes or cell types.

        """
        missing = [k for k in _META_KEYS if k not in meta]
        if missing:
            raise InputError("metadata", f"lacks {missing}")
        meta = dict(meta)
        for k in ("gene_mean", "gene_std", "pcs", "pc_std", "ref_pc", "ref_labels", *_PRIOR_KEYS):
            if k in meta and not isinstance(meta[k], Tensor):
                meta[k] = torch.as_tensor(np.asarray(meta[k]))
        self._check_net(meta)
        self.meta = meta
        self._on_metadata()

    def _check_net(self, meta: Mapping[str, Any]) -> None:
        cfg = getattr(getattr(self, "net", None), "config", {}) or {}
        g, k = len(meta["genes"]), len(meta["cell_types"])
        if "n_genes" in cfg and cfg["n_genes"] != g:
            raise InputError("model.net.n_genes", f"network built for {cfg['n_genes']} genes, the data has {g}")
        if cfg.get("num_classes", 0) not in (0, k):
            raise InputError(
                "model.net.num_classes", f"network built for {cfg['num_classes']} cell types, the data has {k}"
            )

    def _on_metadata(self) -> None:
        """Hook run after :meth:`set_metadata` (sets the data shape)."""

    def _require_meta(self) -> dict[str, Any]:
        if self.meta is None:
            raise RuntimeError(
                f"{type(self).__name__} has no data statistics yet: train it (flowsci fit), load a checkpoint, "
                "or call set_metadata(datamodule.metadata())"
            )
        return self.meta

    def _adopt_datamodule(self) -> None:
        trainer = getattr(self, "_trainer", None)
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if dm is not None and hasattr(dm, "metadata"):
            meta = dm.metadata()
            if self.meta is not None and list(self.meta["genes"]) != list(meta["genes"]):
                raise InputError("data", "the data module's genes differ from the ones this model was trained on")
            if self.meta is None or "ref_pc" not in self.meta:
                self.set_metadata(meta)

    @property
    def num_cell_types(self) -> int:
        """Number of cell types the model knows."""
        return len(self._require_meta()["cell_types"])

    @property
    def conditional(self) -> bool:
        """Whether the network takes the cell type."""
        net = getattr(self, "net", None)
        cfg = getattr(net, "config", None) or {}
        return int(cfg.get("num_classes", getattr(net, "num_classes", 0)) or 0) > 0

    def _save_meta(self, checkpoint: dict[str, Any]) -> None:
        if self.meta is not None:
            checkpoint["singlecell"] = {
                k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in self.meta.items()
            }

    def _load_meta(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("singlecell") is not None:
            self.set_metadata(checkpoint["singlecell"])

    # ----------------------------------------------------------------- scaling
    def _scale(self) -> tuple[Tensor, Tensor]:
        meta = self._require_meta()
        dev = _device(self)
        mean = meta["gene_mean"].to(dev, torch.float32)
        std = meta["gene_std"].to(dev, torch.float32).clamp_min(self.min_std)
        return mean, std

    def standardize(self, x: Tensor) -> Tensor:
        """Log-normalised expression ``[B, G]`` -> standardised ``[B, G]``."""
        mean, std = self._scale()
        return (x - mean) / std

    def unstandardize(self, z: Tensor) -> Tensor:
        """Standardised ``[B, G]`` -> log-normalised expression ``[B, G]`` (not clipped)."""
        mean, std = self._scale()
        return z * std + mean

    # ----------------------------------------------------------------- what to generate
    def cell_labels(self, num: int, cells: Mapping[str, int] | None, seed: int | None) -> Tensor:
        """Cell-type indices ``[n]``: ``cells`` in the given order, else ``num`` draws from the training frequencies.

        Raises:
            InputError: ``cells`` is not a mapping of known cell types to counts >= 0 with a positive total.

        """
        meta = self._require_meta()
        types = list(meta["cell_types"])
        if cells is None:
            rng = np.random.default_rng(None if seed is None else seed + 7919)
            freq = np.asarray(meta["type_freq"], dtype=np.float64)
            return torch.as_tensor(np.sort(rng.choice(len(types), size=num, p=freq / freq.sum())), dtype=torch.long)
        if not isinstance(cells, Mapping):
            raise InputError("cells", f"must map cell types to counts, e.g. {{{types[0]!r}: 100}}; got {cells!r}")
        out: list[int] = []
        for name, count in cells.items():
            if str(name) not in types:
                raise InputError("cells", f"unknown cell type {name!r}; this model knows {types}")
            if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
                raise InputError("cells", f"count of {name!r} must be a whole number >= 0, got {count!r}")
            out += [types.index(str(name))] * int(count)
        if not out:
            raise InputError("cells", "asks for no cells (the counts sum to 0)")
        return torch.as_tensor(out, dtype=torch.long)

    def library_sizes(self, labels: Tensor, seed: int | None) -> np.ndarray:
        r"""Library sizes :math:`L = \exp(\mu_k + \sigma_k \varepsilon)` per cell, ``[n]`` float64."""
        meta = self._require_meta()
        rng = np.random.default_rng(None if seed is None else seed + 104_729)
        y = labels.cpu().numpy()
        mu, sigma = np.asarray(meta["lib_mu"])[y], np.asarray(meta["lib_sigma"])[y]
        return np.exp(mu + sigma * rng.standard_normal(len(y)))

    def to_anndata(
        self,
        x: Tensor,
        labels: Tensor,
        *,
        seed: int | None,
        counts: bool = True,
        decoder: str = "lattice",
        info: Mapping[str, Any] | None = None,
    ) -> Any:
        r"""Generated log-normalised expression ``[n, G]`` (any real values) -> AnnData of cells.

        Values are clipped to [0, log1p(target_sum)]; library sizes are drawn per type (:meth:`library_sizes`).
        ``decoder`` (:data:`~flowsci.domains.singlecell.data.COUNT_DECODERS`): ``"lattice"`` / ``"round"`` decode
        counts with :func:`~flowsci.domains.singlecell.data.lognorm_to_counts` and recompute ``X`` from them with the
        drawn library size (the library over all genes of the file, as for real cells); ``"none"`` keeps the
        continuous values in ``X`` (``layers['counts']`` then holds the non-integer :math:`\mathrm{expm1}(x) L / 10^4`).

        Raises:
            InputError: Unknown ``decoder``.

        """
        ad = require("anndata", "singlecell")
        import pandas as pd
        import scipy.sparse as sp

        if decoder not in COUNT_DECODERS:
            raise InputError("decoder", f"must be one of {COUNT_DECODERS}, got {decoder!r}")
        meta = self._require_meta()
        types = list(meta["cell_types"])
        ts = float(meta.get("target_sum", 1e4))
        # log1p(target_sum) is the largest value a real cell can have (all its counts in one gene)
        xs = x.detach().cpu().double().clamp(0.0, float(np.log1p(ts))).numpy()
        lib = self.library_sizes(labels, seed)
        if decoder == "none":
            raw = np.expm1(xs) * (lib / ts)[:, None]
        else:
            rng = np.random.default_rng(None if seed is None else seed + 15_485_863)
            raw = lognorm_to_counts(xs, lib, ts, decoder, rng)
            xs = log_normalize(raw, lib, ts)
        y = labels.cpu().numpy()
        obs = pd.DataFrame(
            {
                CELL_TYPE_KEY: pd.Categorical([types[j] for j in y], categories=types),
                "library_size": lib.astype(np.float32),
                "generated": True,
            },
            index=[f"gen{i}" for i in range(len(y))],
        )
        adata = ad.AnnData(X=xs.astype(np.float32), obs=obs, var=pd.DataFrame(index=list(meta["genes"])))
        if counts:
            adata.layers["counts"] = sp.csr_matrix(raw.astype(np.float32))
        adata.uns["flowsci"] = {
            "model": type(self).__name__,
            "seed": -1 if seed is None else int(seed),
            "decoder": decoder,
            **{k: v for k, v in (info or {}).items() if v is not None},
        }
        return adata

    def _solution(
        self, sol: Solution | None, x: Tensor, labels: Tensor, nfe: int, seed: int | None, **kw: Any
    ) -> CellSolution:
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"{type(self).__name__}: sampling produced non-finite values (NFE {nfe})")
        info = {"nfe": int(nfe), "steps": kw.pop("steps", None), "solver": kw.pop("solver", None)}
        adata = self.to_anndata(x, labels, seed=seed, info=info, **kw)
        xt = torch.from_numpy(np.asarray(adata.X, dtype=np.float32))
        return CellSolution(
            x=xt,
            nfe=int(nfe),
            times=sol.times if sol is not None else torch.zeros(0),
            seed=seed,
            x0=sol.x0 if sol is not None else None,
            adata=adata,
        )

    # ----------------------------------------------------------------- public API
    def generate(self, cells: Mapping[str, int], steps: int | None = None, **options: Any) -> Any:
        """Generate the cells asked for, e.g. ``{"CD14+ Monocyte": 200, "CD19+ B": 100}``; returns AnnData."""
        total = sum(int(v) for v in cells.values()) if isinstance(cells, Mapping) else 0
        return self.sample(max(total, 1), steps=steps, cells=cells, **options).adata  # type: ignore[attr-defined]

    def write_samples(self, solution: CellSolution, out_dir: str | os.PathLike) -> list[Path]:
        """Write ``samples.h5ad`` and ``samples.png`` (PC1/PC2 of real training vs generated cells by type)."""
        out = Path(out_dir)
        adata = solution.adata
        written = [atomic_write(out / "samples.h5ad", lambda p: adata.write_h5ad(p))]
        written.append(atomic_write(out / "samples.png", lambda p: cells_figure(self._require_meta(), adata, p)))
        return written


def _device(module: Any) -> torch.device:
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def cells_figure(meta: Mapping[str, Any], adata: Any, path: str | os.PathLike) -> None:
    """Two panels on the training PC1/PC2: real training cells and generated cells, coloured by type."""
    from flowsci.plots import Panel, save_panels

    types = list(meta["cell_types"])
    pcs = meta["pcs"][:2].double().numpy()
    mean = meta["gene_mean"].double().numpy()
    gen = (np.asarray(adata.X, dtype=np.float64) - mean) @ pcs.T
    ref = meta["ref_pc"].double().numpy() if "ref_pc" in meta else np.zeros((0, 2))
    ref_y = meta["ref_labels"].numpy() if "ref_labels" in meta else np.zeros(0, dtype=int)
    gen_y = np.asarray([types.index(t) for t in adata.obs[CELL_TYPE_KEY].astype(str)])
    panels = [
        Panel("real (training cells)", {t: ref[ref_y == j] for j, t in enumerate(types)}, "scatter", "PC1", "PC2"),
        Panel(f"generated ({len(gen)} cells)", {t: gen[gen_y == j] for j, t in enumerate(types)}, "scatter", "PC1"),
    ]
    save_panels(panels, path, title="cells on the training PCs", ncols=2)


def _label_dropout(p: float, num_classes: int) -> ConditionDropout | None:
    return ConditionDropout(p, keys=["y"], null_label=num_classes) if p > 0 and num_classes > 0 else None


# --------------------------------------------------------------------------------------------- flows
class _CellFlow(_CellGenerator, FlowMatching):
    """Flow matching on standardised expression (or a linear encoding of it) with cell-type conditioning."""

    def __init__(
        self,
        net: nn.Module,
        time_sampler: TimeSampler | None = None,
        coupling: Coupling | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_steps: int = 20,
        sample_solver: str = "euler",
        label_dropout: float = 0.1,
        min_std: float = 0.1,
        prior: str = "normal",
    ) -> None:
        if prior not in PRIORS:
            raise InputError("prior", f"must be one of {PRIORS}, got {prior!r}")
        super().__init__(
            net=net,
            time_sampler=time_sampler,
            coupling=coupling,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            sample_steps=sample_steps,
            sample_solver=sample_solver,
        )
        self.cond_dropout = _label_dropout(label_dropout, int(getattr(net, "num_classes", 0)))
        self.min_std = min_std
        self.prior = prior
        self.meta = None

    def sample_prior(self, n: int, cond: dict[str, Any], generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` prior draws in the flow's space, ``[n, D]``.

        ``prior="normal"``: :math:`N(0, I)`. ``prior="type"``: the conditional prior of Issachar et al. (TMLR 2025,
        arXiv 2502.09611) built from the training cells of the requested type :math:`y`,

        .. math:: x_0 = \bar x + (m_y + s_y \odot \varepsilon)\,V + (I - V^\top V)(r \odot \varepsilon'), \qquad
            \varepsilon \sim N(0, I_k),\ \varepsilon' \sim N(0, I_G),

        (:math:`V` the top :math:`k` principal axes, :math:`m_y, s_y` the type's mean and standard deviation of
        the PC scores, :math:`r` the per-gene residual standard deviation, its noise kept off the principal axes),
        encoded like the data. The flow then only transports this per-type Gaussian (the ``gaussian-pca`` floor
        plus residual noise) onto the cells. Labels whose length divides ``n`` are repeated (a coupling's candidate
        draws); without labels (unconditional draws) types are drawn with their training frequencies.
        """
        if self.prior == "normal":
            return super().sample_prior(n, cond, generator=generator)
        meta = self._require_meta()
        missing = [k for k in _PRIOR_KEYS if k not in meta]
        if missing:
            raise InputError("prior", f"'type' needs data statistics {missing} (re-create them with the data module)")
        dev = self.device
        y = cond.get("y")
        if y is not None and len(y) and n % len(y) == 0:
            y = y.repeat(n // len(y))
        else:
            freq = torch.as_tensor(np.asarray(meta["type_freq"], dtype=np.float64))
            y = torch.multinomial(freq, n, replacement=True, generator=generator if dev.type == "cpu" else None)
        y = y.to(dev)
        mean_pc, std_pc = meta["type_pc_mean"].to(dev), meta["type_pc_std"].to(dev)
        pcs, resid = meta["pcs"][: mean_pc.shape[1]].to(dev), meta["resid_std"].to(dev)
        eps = torch.randn((n, pcs.shape[0]), generator=generator, device=dev)
        eps_g = torch.randn((n, pcs.shape[1]), generator=generator, device=dev)
        noise = resid * eps_g
        noise = noise - (noise @ pcs.T) @ pcs  # residual noise off the principal axes
        x0 = meta["gene_mean"].to(dev) + (mean_pc[y] + std_pc[y] * eps) @ pcs + noise
        return self.encode(x0)

    # encoding hooks (identity for gene space)
    def encode(self, x: Tensor) -> Tensor:
        """Log-normalised ``[B, G]`` -> the flow's space ``[B, D]``."""
        return self.standardize(x)

    def decode(self, z: Tensor) -> Tensor:
        """The flow's space ``[B, D]`` -> log-normalised ``[B, G]``."""
        return self.unstandardize(z)

    def _on_metadata(self) -> None:
        self.data_shape = [len(self.meta["genes"])]  # type: ignore[index]

    def setup(self, stage: str) -> None:
        """Take the data statistics from the trainer's data module (before the first step)."""
        self._adopt_datamodule()

    def unpack_batch(self, batch: Any) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """``{"x1": [B, G], "y": [B]}`` (or the reflow form with ``"x0"``) -> encoded data and conditioning."""
        if isinstance(batch, dict) and "x1" in batch and "x0" in batch:  # reflow pairs are already encoded
            return super().unpack_batch(batch)
        x1, cond, mask = super().unpack_batch(batch)
        self._require_meta()
        if not self.conditional:
            cond.pop("y", None)
        return self.encode(x1), cond, mask

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also store the data statistics."""
        super().on_save_checkpoint(checkpoint)
        self._save_meta(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the data statistics."""
        super().on_load_checkpoint(checkpoint)
        self._load_meta(checkpoint)

    @torch.no_grad()
    def sample(  # type: ignore[override]
        self,
        num: int = 16,
        *,
        steps: int | None = None,
        solver: str | None = None,
        seed: int | None = None,
        cells: dict[str, int] | None = None,
        cfg_scale: float = 1.0,
        counts: bool = True,
        decoder: str = "lattice",
        guidance: Guidance | None = None,
        progress: bool | None = None,
        cond: dict[str, Tensor] | None = None,
    ) -> CellSolution | Solution:
        """Generate cells.

        Args:
            num: Cells (ignored when ``cells`` is given).
            steps: Solver steps (default ``sample_steps``).
            solver: ``euler``, ``midpoint``, ``heun``, ``rk4`` or ``dopri5``.
            seed: Seed of the prior draw, the cell types (without ``cells``) and the library sizes.
            cells: Cell type -> number of cells, e.g. ``{"CD14+ Monocyte": 200}``; default: types drawn with their
                training frequencies.
            cfg_scale: Classifier-free guidance weight (1 = plain conditional model).
            counts: Also return counts in ``layers['counts']``.
            decoder: How values become counts and ``X`` (:meth:`to_anndata`): ``"lattice"`` (default, unbiased
                stochastic rounding), ``"round"`` or ``"none"`` (continuous ``X``).
            guidance: A ready :class:`~flowsci.guidance.Guidance` (overrides ``cfg_scale``).
            progress: Progress bar.
            cond: The core's conditioning keywords (``{"y": [num]}``), as :func:`flowsci.reflow.generate_pairs`
                passes them: then the plain flow-space :class:`~flowsci.solvers.Solution` is returned (``x`` and
                ``x0`` in the flow's coordinates), not cells.

        Returns:
            A :class:`CellSolution` (``.adata`` holds the cells).

        """
        check_sample_args(num, steps, solver, solvers=[*FIXED_STEP_METHODS, *ADAPTIVE_METHODS])
        if cond is not None:
            cond = dict(cond) if self.conditional else {}
            return FlowMatching.sample(
                self, num, steps=steps, solver=solver, cond=cond, seed=seed, guidance=guidance, progress=progress
            )
        labels = self.cell_labels(num, cells, seed).to(self.device)
        cond = {"y": labels} if self.conditional else {}
        if guidance is None and cfg_scale != 1.0:
            if self.cond_dropout is None:
                raise InputError("cfg_scale", "needs a conditional model trained with label_dropout > 0")
            guidance = ClassifierFreeGuidance(cfg_scale, self.cond_dropout)
        sol = FlowMatching.sample(
            self, len(labels), steps=steps, solver=solver, cond=cond, seed=seed, guidance=guidance, progress=progress
        )
        x = self.decode(sol.x)
        kw = {"counts": counts, "decoder": decoder}
        used = solver or self.sample_solver
        return self._solution(sol, x, labels, sol.nfe, seed, steps=steps or self.sample_steps, solver=used, **kw)


class WhiteBoxFlow(_CellFlow):
    r"""Flow matching with the WBDiT velocity network on standardised log-normalised expression.

    Args:
        net: A :class:`~flowsci.domains.singlecell.model.WBDiT` (``block="crate"``; ``"dit"`` is the ablation)
            with ``n_genes`` and ``num_classes`` of the data.
        time_sampler: Training-time sampler (default uniform).
        coupling: Noise-data pairing (default independent).
        optimizer: Optimizer factory.
        lr_scheduler: Optional scheduler factory.
        sample_steps: Default solver steps.
        sample_solver: Default solver.
        label_dropout: Probability of nulling the cell type in training (classifier-free guidance).
        min_std: Floor of the per-gene standard deviation used for standardising.
        prior: ``"normal"`` (:math:`N(0, I)`, the paper's) or ``"type"`` (per-type Gaussian of the training cells,
            :meth:`sample_prior`).

    Example:
        >>> model = WhiteBoxFlow.from_checkpoint("last.ckpt")  # doctest: +SKIP
        >>> adata = model.generate({"CD14+ Monocyte": 200, "CD19+ B": 100}, steps=10)  # doctest: +SKIP

    """


class LatentFlow(_CellFlow):
    r"""Flow matching in standardised PCA space with the core MLP, decoded linearly to genes.

    :math:`z = V_k (x - \bar x) / s_k` with the top :math:`k` = ``net.dim`` principal axes :math:`V_k` of the
    training cells and their standard deviations :math:`s_k`; decoding :math:`x = V_k^\top (s_k z) + \bar x`.

    Args:
        net: A :class:`flowsci.nets.MLP` with ``dim`` = number of PCs and ``num_classes`` = cell types.
        time_sampler: Training-time sampler.
        coupling: Noise-data pairing.
        optimizer: Optimizer factory.
        lr_scheduler: Optional scheduler factory.
        sample_steps: Default solver steps.
        sample_solver: Default solver.
        label_dropout: Probability of nulling the cell type in training.
        min_std: Unused by the encoding (kept for a common signature).
        prior: ``"normal"`` or ``"type"`` (see :class:`WhiteBoxFlow`).

    """

    def _check_net(self, meta: Mapping[str, Any]) -> None:
        k = len(meta["cell_types"])
        dim = int(self.net.config["dim"]) if hasattr(self.net, "config") else int(self.net.dim)
        have = int(torch.as_tensor(meta["pcs"]).shape[0])
        if dim > have:
            raise InputError("model.net.dim", f"asks for {dim} PCs, the data module computed {have} (data.n_pcs)")
        if int(getattr(self.net, "num_classes", 0)) not in (0, k):
            raise InputError("model.net.num_classes", f"network built for {self.net.num_classes} types, data has {k}")

    def _on_metadata(self) -> None:
        self.data_shape = [int(self.net.dim)]

    def _basis(self) -> tuple[Tensor, Tensor, Tensor]:
        meta = self._require_meta()
        dev, k = _device(self), int(self.net.dim)
        return (
            meta["pcs"][:k].to(dev, torch.float32),
            meta["pc_std"][:k].to(dev, torch.float32).clamp_min(1e-6),
            meta["gene_mean"].to(dev, torch.float32),
        )

    def encode(self, x: Tensor) -> Tensor:
        """``[B, G]`` -> standardised PC scores ``[B, k]``."""
        v, s, mean = self._basis()
        return ((x - mean) @ v.T) / s

    def decode(self, z: Tensor) -> Tensor:
        """Standardised PC scores ``[B, k]`` -> log-normalised ``[B, G]``."""
        v, s, mean = self._basis()
        return (z * s) @ v + mean


# --------------------------------------------------------------------------------------------- DDPM
class WhiteBoxDiffusion(_CellGenerator, GenerativeModule):
    r"""The paper's DDPM with the WBDiT network: :math:`\epsilon`-prediction, linear :math:`\beta`, DDIM sampling.

    Training: :math:`t \sim U\{0..T-1\}`, :math:`x_t = \sqrt{\bar\alpha_t}\,x + \sqrt{1-\bar\alpha_t}\,\epsilon`,
    loss :math:`\|\epsilon_\theta(x_t, t/T, y) - \epsilon\|^2`. Sampling (Song et al., 2021) on ``steps`` evenly
    spaced timesteps,

    .. math::
        x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1 - \bar\alpha_{t'} - \sigma^2}\,\hat\epsilon + \sigma z,
        \quad \sigma = \eta \sqrt{\tfrac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}
        \big(1 - \tfrac{\bar\alpha_t}{\bar\alpha_{t'}}\big)},

    with :math:`\eta = 0` (``solver="ddim"``, deterministic) or :math:`\eta = 1` (``solver="ddpm"``, ancestral).

    Args:
        net: A :class:`~flowsci.domains.singlecell.model.WBDiT`.
        optimizer: Optimizer factory.
        lr_scheduler: Optional scheduler factory.
        timesteps: :math:`T`.
        beta_start: :math:`\beta_1`.
        beta_end: :math:`\beta_T`.
        sample_steps: Default sampling steps (the paper: DDIM with 100).
        sample_solver: ``"ddim"`` or ``"ddpm"``.
        label_dropout: Probability of nulling the cell type in training.
        min_std: Floor of the per-gene standard deviation.

    """

    SOLVERS = ("ddim", "ddpm")

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        sample_steps: int = 100,
        sample_solver: str = "ddim",
        label_dropout: float = 0.1,
        min_std: float = 0.1,
    ) -> None:
        super().__init__()
        if sample_solver not in self.SOLVERS:
            raise ValueError(f"sample_solver must be one of {self.SOLVERS}, got {sample_solver!r}")
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"] if outside_cli() else None)
        self.net = net
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.timesteps, self.sample_steps, self.sample_solver = timesteps, sample_steps, sample_solver
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, 0).float(), persistent=False)
        self.cond_dropout = _label_dropout(label_dropout, int(getattr(net, "num_classes", 0)))
        self.min_std = min_std
        self.meta = None

    def setup(self, stage: str) -> None:
        """Take the data statistics from the trainer's data module."""
        self._adopt_datamodule()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Loader record and data statistics."""
        super().on_save_checkpoint(checkpoint)
        self._save_meta(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the data statistics."""
        self._load_meta(checkpoint)

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The :math:`\\epsilon`-prediction loss of one batch."""
        x = self.standardize(batch["x1"])
        cond = {"y": batch["y"]} if self.conditional else {}
        b = x.shape[0]
        t = torch.randint(0, self.timesteps, (b,), generator=generator, device=x.device)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if self.cond_dropout is not None:
            cond = self.cond_dropout(cond, generator=generator)
        ab = self.alpha_bar[t][:, None].to(x.dtype)
        x_t = ab.sqrt() * x + (1 - ab).sqrt() * eps
        loss = ((self.net(x_t, t.to(x.dtype) / self.timesteps, **cond) - eps) ** 2).mean()
        return loss, {"loss": loss.detach()}

    def num_examples(self, batch: Any) -> int:
        """Cells in a batch."""
        return int(batch["x1"].shape[0])

    def _eps(self, x: Tensor, t: int, cond: dict[str, Any], cfg_scale: float) -> Tensor:
        tt = torch.full((x.shape[0],), t / self.timesteps, device=x.device, dtype=x.dtype)
        eps = self.net(x, tt, **cond)
        if cfg_scale != 1.0 and self.cond_dropout is not None and cond:
            eps = torch.lerp(self.net(x, tt, **self.cond_dropout.blank(cond)), eps, cfg_scale)
        return eps

    @torch.no_grad()
    def sample(  # type: ignore[override]
        self,
        num: int = 16,
        *,
        steps: int | None = None,
        solver: str | None = None,
        seed: int | None = None,
        cells: dict[str, int] | None = None,
        cfg_scale: float = 1.0,
        counts: bool = True,
        decoder: str = "lattice",
    ) -> CellSolution:
        """Generate cells with DDIM/ancestral steps (arguments as :meth:`WhiteBoxFlow.sample`; NFE = ``steps``)."""
        check_sample_args(num, steps, solver, solvers=self.SOLVERS)
        steps = steps if steps is not None else self.sample_steps
        if steps > self.timesteps:
            raise InputError("steps", f"at most T = {self.timesteps} steps, got {steps}")
        solver = solver or self.sample_solver
        eta = 0.0 if solver == "ddim" else 1.0
        labels = self.cell_labels(num, cells, seed).to(self.device)
        cond = {"y": labels} if self.conditional else {}
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed) if seed is not None else gen.seed()
        g = len(self._require_meta()["genes"])
        x = torch.randn((len(labels), g), generator=gen, device=self.device)
        ts = np.unique(np.round(np.linspace(0, self.timesteps - 1, steps)).astype(int))[::-1]
        nfe = 0
        for i, t in enumerate(ts):
            t_prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
            ab = self.alpha_bar[int(t)]
            ab_prev = self.alpha_bar[t_prev] if t_prev >= 0 else torch.ones((), device=x.device)
            eps = self._eps(x, int(t), cond, cfg_scale)
            nfe += 1 if cfg_scale == 1.0 or not cond else 2
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp_min(0).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp_min(0).sqrt() * eps
            if eta > 0 and t_prev >= 0:
                x = x + sigma * torch.randn(x.shape, generator=gen, device=x.device)
        kw = {"counts": counts, "decoder": decoder}
        return self._solution(None, self.unstandardize(x), labels, nfe, seed, steps=len(ts), solver=solver, **kw)


# --------------------------------------------------------------------------------------------- floor
class GaussianBaseline(_CellGenerator, GenerativeModule):
    """Per-type diagonal Gaussian in standardised PCA space, decoded like :class:`LatentFlow` (the sanity floor).

    Not trained by gradient steps: :meth:`fit` sets the per-type means and variances of the training cells'
    standardised PC scores.

    Args:
        n_pcs: Principal components.
        min_std: Kept for the common scaling interface.

    """

    def __init__(self, n_pcs: int = 30, min_std: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.n_pcs, self.min_std = n_pcs, min_std
        self.meta = None
        self.register_buffer("mu", torch.zeros(0, n_pcs))
        self.register_buffer("sd", torch.ones(0, n_pcs))

    def fit(self, datamodule: Any) -> GaussianBaseline:
        """Fit on the training cells of a set-up :class:`SingleCellDataModule`; returns ``self``."""
        self.set_metadata(datamodule.metadata())
        x, y = datamodule.train_matrix()
        z = LatentFlow.encode(self, torch.from_numpy(x))  # type: ignore[arg-type]
        k = self.num_cell_types
        mu = torch.zeros(k, self.n_pcs)
        sd = torch.ones(k, self.n_pcs)
        for j in range(k):
            zj = z[torch.from_numpy(y == j)]
            if len(zj):
                mu[j] = zj.mean(0)
            if len(zj) > 1:
                sd[j] = zj.std(0).clamp_min(1e-3)
        self.mu, self.sd = mu, sd
        return self

    @property
    def net(self) -> Any:  # the PCA basis helpers of LatentFlow read net.dim
        """A stand-in exposing ``dim`` (number of PCs)."""
        return _Dim(self.n_pcs)

    _basis = LatentFlow._basis
    decode = LatentFlow.decode

    def _check_net(self, meta: Mapping[str, Any]) -> None:
        pass

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Not trained by gradients (use :meth:`fit`)."""
        raise RuntimeError("GaussianBaseline is fitted in closed form: call .fit(datamodule)")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Data statistics."""
        super().on_save_checkpoint(checkpoint)
        self._save_meta(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the data statistics (and the fitted buffers' shapes)."""
        self._load_meta(checkpoint)
        self.mu = torch.zeros_like(checkpoint["state_dict"]["mu"])
        self.sd = torch.zeros_like(checkpoint["state_dict"]["sd"])

    @torch.no_grad()
    def sample(  # type: ignore[override]
        self,
        num: int = 16,
        *,
        steps: int | None = None,
        solver: str | None = None,
        seed: int | None = None,
        cells: dict[str, int] | None = None,
        counts: bool = True,
        decoder: str = "lattice",
    ) -> CellSolution:
        """Draw cells (``steps``/``solver`` are accepted and ignored; NFE = 0)."""
        check_sample_args(num, steps, None)
        if len(self.mu) == 0:
            raise RuntimeError("GaussianBaseline is not fitted: call .fit(datamodule)")
        labels = self.cell_labels(num, cells, seed)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        eps = torch.randn((len(labels), self.n_pcs), generator=gen)
        z = self.mu.cpu()[labels] + self.sd.cpu()[labels] * eps
        kw = {"counts": counts, "decoder": decoder}
        return self._solution(None, self.decode(z.to(self.mu.device)), labels, 0, seed, **kw)


class _Dim:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.num_classes = 0
