"""The crystal state space and its two generative models: CrysBFN (periodic Bayesian flow) and a torus-FM baseline.

State of a batch of ``B`` crystals with ``N = Σ_b n_b`` atoms (flat torch-geometric layout, no padding):

* atom types ``A``: class indices ``z − 1 ∈ {0..K−1}`` ``[N]`` (given for CSP, generated ab initio);
* fractional coordinates ``F ∈ [0, 1)^{N×3}`` on the flat torus;
* lattice ``L ∈ R^{B×3×3}`` (rows = lattice vectors), standardised as ``L / s`` with ONE scalar ``s`` (the training
  set's RMS entry), so standardisation commutes with rotations; ``lattice_center=True`` (the generation recipe)
  also subtracts ``c``, the mean standardised training cell, so the lattice prior is centred on a typical cell.

:class:`CrysBFN` (Wu et al., ICLR 2025) runs three Bayesian flows of the core in lock-step with one shared step
index: :class:`flowsci.bayesian_flow.PeriodicBayesianFlow` on ``F`` (von Mises sender, resultant-vector update,
linear-entropy accuracy schedule with ``β_1 = 10³``), :class:`flowsci.bayesian_flow.GaussianBayesianFlow` on the 9
standardised lattice entries (``σ_1 = 10^{-1.5}``) and, ab initio, :class:`flowsci.bayesian_flow.DiscreteBayesianFlow`
on types (``β_1 = 0.5``). Training draws ``k ~ U{0..n−1}`` per crystal, ``θ_k ~ p_F(· | x; k)`` from each flow,
runs the network on ``θ_k`` at ``t = k/n`` and minimises ``L = L_type + L_lat + L_coord`` (the flows' ``n``-step
losses, averaged over atoms of a crystal, then over crystals; optionally with the coordinate error taken up to a
global translation, ``translation_invariant``, and one weight for every step, ``loss_weighting="uniform"``, the
setting of the tuned configs and benchmark). The network sees the belief means, the step time
and (``cond_entropy``) the per-coordinate normalised log-concentration; its outputs are turned into point
estimates ``F̂ = m + Δ`` (so a global shift of the belief shifts the prediction) and ``L̂ = μ + ΔL`` with the
network's lattice output ``ΔL`` (``M μ``, rotation-equivariant, or nine invariant numbers in the canonical
orientation; see :class:`~flowsci.domains.crystals.model.CSPNet`). Sampling is CrysBFN's "end_back" loop
(each step redraws ``θ_i ~ p_F(· | x̂; i)`` at the current estimate); NFE = number of steps.

:class:`CrystalFlowMatching` is the baseline from the same core and network (FlowMM-style): Riemannian flow
matching on the flat torus for ``F`` (:class:`flowsci.paths.GeodesicPath` on :class:`flowsci.manifolds.FlatTorus`)
and a straight-line (CondOT) flow on the standardised lattice from ``N(0, I)``; types given (CSP). It integrates
with :func:`flowsci.solvers.solve_ode`. Because the network is invariant to integer shifts of ``F``, integrating
the unwrapped coordinates and wrapping once at the end is exactly the geodesic (wrapped) Euler scheme.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from flowsci.bayesian_flow import (
    DiscreteBayesianFlow,
    GaussianBayesianFlow,
    PeriodicBayesianFlow,
    sample_bayesian_flows,
)
from flowsci.contract import GenerativeModule, check_sample_args, outside_cli
from flowsci.errors import InputError, NonFiniteError
from flowsci.manifolds import FlatTorus
from flowsci.module import FlowMatching
from flowsci.paths import CondOTPath, GeodesicPath
from flowsci.solvers import FIXED_STEP_METHODS, Solution, solve_ode
from flowsci.timesteps import TimeSampler, UniformTime

__all__ = [
    "CrystalBatch",
    "CrystalGenerativeModule",
    "CrystalSamples",
    "CrysBFN",
    "CrystalFlowMatching",
    "composition_to_types",
    "bundled_reference",
]

TASKS = ("csp", "gen")
SAMPLERS = ("end_back", "bayesian")
LOSS_WEIGHTINGS = ("bfn", "uniform")
_STRATEGY = {"end_back": "flow_resample", "bayesian": "bayesian_update"}  # names of flowsci.bayesian_flow


class CrystalBatch:
    """Unpacked crystal batch: ``types [N]`` (class index ``z − 1``), ``frac [N, 3]``, ``lattice [B, 3, 3]``
    (Å), ``num_atoms [B]``, ``batch [N]``.
    """

    def __init__(self, types: Tensor, frac: Tensor, lattice: Tensor, num_atoms: Tensor) -> None:
        self.types = types.long()
        self.frac = frac
        self.lattice = lattice
        self.num_atoms = num_atoms.long()
        self.batch = torch.repeat_interleave(torch.arange(len(num_atoms), device=types.device), self.num_atoms)

    @classmethod
    def from_pyg(cls, batch: Any) -> CrystalBatch:
        """From a torch-geometric batch of :func:`flowsci.domains.crystals.data.structure_to_data` items."""
        return cls(
            batch.atom_types - 1, batch.frac_coords, batch.lattice.reshape(-1, 3, 3), batch.num_atoms.reshape(-1)
        )

    def structures(self) -> list[Any]:
        """Pymatgen Structures."""
        from flowsci.domains.crystals.data import batch_to_structures

        return batch_to_structures(self.types + 1, self.frac, self.lattice, self.num_atoms)


def composition_to_types(composition: Any) -> list[int]:
    """Atomic numbers of every atom of a composition (``"SrTiO3"`` → 5 atoms; use ``"Sr2Ti2O6"`` for Z = 2).

    Raises:
        flowsci.errors.InputError: unknown elements, non-integer amounts, an empty or malformed formula.
    """
    from flowsci.domains.crystals.data import parse_composition

    return parse_composition(composition, source="composition")


#: Crystals of a bundled test subset drawn as the reference in ``structures.png``.
REFERENCE_SIZE = 300


def bundled_reference(structures: Sequence[Any], size: int = REFERENCE_SIZE) -> tuple[list[Any], str]:
    """The bundled test crystals that ``structures`` are compared with in ``structures.png``, and their label.

    All-carbon samples: Carbon-24; five atoms per cell: Perov-5; otherwise the MP-20 test sample. The first
    ``size`` crystals of the subset are read once (cached on disk like the training data).
    """
    from flowsci.domains.crystals.data import CrystalDataError, CrystalDataset

    if structures and all({el.symbol for el in s.composition.elements} == {"C"} for s in structures):
        name, label = "carbon_24_test_subset", "Carbon-24 test (bundled)"
    elif structures and all(len(s) == 5 for s in structures):
        name, label = "perov_5_test_subset", "Perov-5 test (bundled)"
    else:
        name, label = "mp20_test_sample", "MP-20 test sample (bundled)"
    try:
        ds = CrystalDataset(name, limit=size)
    except CrystalDataError:  # an unwritable cache folder must not stop the figure
        ds = CrystalDataset(name, limit=size, cache_dir=False)
    return ds.structures(), label


def _per_graph_mean(values: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Mean of per-atom values over the atoms of each crystal, ``[N] → [B]``."""
    out = torch.zeros(num_graphs, dtype=values.dtype, device=values.device).index_add_(0, batch, values)
    return out / torch.bincount(batch, minlength=num_graphs).clamp_min(1).to(values.dtype)


def _optimal_shift(delta: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Per crystal and axis, the global shift ``c`` minimising ``Σ_i (1 − cos 2π(δ_i − c))``: the circular mean.

    Args:
        delta: ``[N, 3]`` coordinate errors ``f − f̂`` (period 1).
        batch: ``[N]`` crystal index of every atom.
        num_graphs: ``B``.

    Returns:
        ``[B, 3]`` shifts ``c = atan2(Σ sin 2πδ, Σ cos 2πδ) / 2π`` (detached; by the envelope theorem the
        minimised loss has the same gradient with or without differentiating through ``c``).
    """
    ang = 2 * torch.pi * delta.detach()
    zeros = torch.zeros(num_graphs, delta.shape[-1], dtype=delta.dtype, device=delta.device)
    s = zeros.index_add(0, batch, ang.sin())
    c = zeros.index_add(0, batch, ang.cos())
    return torch.atan2(s, c) / (2 * torch.pi)


@dataclass
class CrystalSamples(Solution):
    """Samples of a crystal model: the solver record plus the pymatgen ``Structure`` objects (``structures``).

    CSP of a file (``sample(k, compositions_from=...)``) also fills ``ids`` (one ``material_id`` per input crystal;
    ``structures`` holds their ``k`` samples in row order, ``samples_per_crystal = k``) and ``references`` (the
    input crystals, when the file gives structures): :meth:`CrystalGenerativeModule.write_samples` then names the
    files ``<material_id>.cif`` / ``<material_id>_<j>.cif``.
    """

    structures: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.structures)

    def __iter__(self) -> Any:
        return iter(self.structures)

    def __getitem__(self, i: int) -> Any:
        return self.structures[i]

    ids: list[str] = field(default_factory=list)
    samples_per_crystal: int = 1
    references: list[Any] | None = None

    def per_crystal(self) -> list[list[Any]]:
        """``structures`` grouped by input crystal (``len(ids)`` lists of ``samples_per_crystal``)."""
        k = self.samples_per_crystal
        return [self.structures[i * k : (i + 1) * k] for i in range(len(self.structures) // k)]


class CrystalGenerativeModule(GenerativeModule):
    """Shared public API of the crystal models: statistics buffers, ``predict_structure``, ``generate``, CIF I/O.

    Subclasses call :meth:`_init_stats` in ``__init__`` and implement ``sample_crystals(types, num_atoms, steps,
    seed, ...) -> CrystalBatch``.
    """

    lattice_scale: float
    num_atoms_dist: list[float]
    sample_steps: int
    task: str

    def num_examples(self, batch: Any) -> int:
        """Crystals in a torch-geometric batch (for logging)."""
        return int(batch.num_graphs)

    def _init_stats(self, lattice_scale: float | None, num_atoms_dist: Sequence[float] | None) -> None:
        # plain attributes, not buffers: weight averaging (EMA) must not average or swap dataset statistics;
        # they travel in state_dict() through get_extra_state / set_extra_state
        self.lattice_scale = float(lattice_scale or 0.0)
        self.num_atoms_dist = [float(p) for p in num_atoms_dist] if num_atoms_dist else []

    def _buffer_stats_from_datamodule(self) -> None:
        """Fill the lattice scale / atom-count distribution from ``trainer.datamodule`` when not given."""
        dm = getattr(getattr(self, "trainer", None), "datamodule", None)
        if dm is None:
            return
        if self.lattice_scale <= 0 and hasattr(dm, "lattice_scale"):
            self.lattice_scale = float(dm.lattice_scale())
        if not self.num_atoms_dist and hasattr(dm, "num_atoms_distribution"):
            self.num_atoms_dist = [float(p) for p in dm.num_atoms_distribution()]

    def _scale(self) -> float:
        if self.lattice_scale <= 0:
            raise RuntimeError(
                f"{type(self).__name__}.lattice_scale is unknown: pass lattice_scale=... or fit with a "
                "CrystalDataModule (it is stored in checkpoints)"
            )
        return self.lattice_scale

    def on_fit_start(self) -> None:
        """Read dataset statistics before training."""
        self._buffer_stats_from_datamodule()

    def get_extra_state(self) -> Tensor:
        """Dataset statistics travel in ``state_dict()`` (key ``_extra_state``) as one float64 tensor
        ``[s, p(0), p(1), ...]``, so Lightning checkpoints and plain ``model.state_dict()`` files restore them,
        and EMA neither averages nor swaps them.
        """
        return torch.tensor([self.lattice_scale, *self.num_atoms_dist], dtype=torch.float64)

    def set_extra_state(self, state: Any) -> None:
        """Restore the statistics written by :meth:`get_extra_state`."""
        if isinstance(state, dict):  # {"lattice_scale": s, "num_atoms_dist": [...]}
            state = [state.get("lattice_scale", 0.0), *state.get("num_atoms_dist", [])]
        values = [float(v) for v in torch.as_tensor(state, dtype=torch.float64).reshape(-1)]
        self.lattice_scale = values[0] if values else 0.0
        self.num_atoms_dist = values[1:]

    # ------------------------------------------------------------------------------------------- public API
    @torch.no_grad()
    def predict_structure(
        self,
        composition: Any,
        num_samples: int = 1,
        steps: int | None = None,
        seed: int | None = 0,
        batch_size: int = 256,
        solver: str | None = None,
    ) -> list[Any]:
        """Crystal structure prediction for a composition.

        Args:
            composition: a formula (``"SrTiO3"``: the cell holds exactly these atoms), a pymatgen
                ``Composition`` or a ``Structure`` (its composition is used).
            num_samples: independent predictions.
            steps: sampling steps = network evaluations (default: the model's ``sample_steps``).
            seed: random seed (``None``: nondeterministic).
            batch_size: crystals per network batch.
            solver: sampler (:attr:`solvers`; default: the model's).

        Returns:
            ``num_samples`` pymatgen ``Structure`` objects (save with ``s.to(filename="x.cif")``).
        """
        comp = composition.composition if hasattr(composition, "lattice") else composition
        z = composition_to_types(comp)
        return self.predict_structures([z] * num_samples, steps=steps, seed=seed, batch_size=batch_size, solver=solver)

    @torch.no_grad()
    def predict_structures(
        self,
        atom_types: Sequence[Sequence[int]],
        steps: int | None = None,
        seed: int | None = 0,
        batch_size: int = 256,
        solver: str | None = None,
        progress: bool | str = False,
    ) -> list[Any]:
        """CSP for many crystals: ``atom_types[i]`` lists the atomic numbers of crystal ``i``'s cell.

        ``progress``: a tqdm bar over the crystals (a string is its label). Batches of ``batch_size`` crystals
        are seeded ``seed + start`` (``start``: index of the batch's first crystal).
        """
        self._require_task("csp")
        out: list[Any] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(atom_types), desc=progress if isinstance(progress, str) else "CSP", unit="crystal")
        try:
            for start in range(0, len(atom_types), batch_size):
                chunk = atom_types[start : start + batch_size]
                types = torch.tensor([z - 1 for zs in chunk for z in zs], device=self.device)
                n = torch.tensor([len(zs) for zs in chunk], device=self.device)
                s = None if seed is None else seed + start
                out += self.sample_crystals(types, n, steps=steps, seed=s, **self._solver_kwargs(solver)).structures()
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return out

    @torch.no_grad()
    def predict_structures_from(
        self,
        source: str | os.PathLike,
        num_samples: int = 1,
        steps: int | None = None,
        seed: int | None = 0,
        batch_size: int = 256,
        solver: str | None = None,
        progress: bool = True,
        out_dir: str | os.PathLike | None = None,
        limit: int | None = None,
    ) -> CrystalSamples:
        """CSP for every crystal of a file: ``num_samples`` predicted structures per row of a CDVAE-style CSV
        (``material_id`` and ``cif`` columns, or a formula column) or per CIF of a folder.

        Compositions are read by :func:`~flowsci.domains.crystals.data.read_compositions` (each CIF reduced to
        its primitive cell, as the training data are). With ``out_dir`` the predictions are written there as
        ``<material_id>.cif`` (one sample) or ``<material_id>_<j>.cif``, ``j = 0 … k−1``
        (:func:`~flowsci.domains.crystals.data.write_predictions`), the layout
        :func:`~flowsci.domains.crystals.metrics.evaluate_csp_files` and other CSP scorers read.

        Args:
            source: CSV path, CIF folder, one CIF, or a bundled dataset name (``"perov_5_test_subset"``).
            num_samples: predictions per crystal (``k``).
            steps: sampling steps = network evaluations (default: the model's ``sample_steps``).
            seed: random seed (``None``: nondeterministic).
            batch_size: crystals per network batch.
            solver: sampler (:attr:`solvers`; default: the model's).
            progress: a progress bar over the predicted crystals.
            out_dir: write the CIF files here (``None``: do not write).
            limit: only the first ``limit`` crystals of ``source``.

        Returns:
            :class:`CrystalSamples` with ``ids``, ``structures`` (``num_samples`` per id, in row order; grouped by
            :meth:`CrystalSamples.per_crystal`) and ``references`` (the input crystals, ``None`` for formulas).

        Raises:
            flowsci.errors.InputError: an unreadable file or row (named), a duplicate id, ``num_samples < 1``.
        """
        from flowsci.domains.crystals.data import read_compositions, write_predictions

        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise InputError("num_samples", f"must be a whole number >= 1, got {num_samples!r}")
        self._require_task("csp")
        zs, ids, refs = read_compositions(source, limit=limit)
        label = f"CSP {Path(str(source)).name} ({len(ids)} crystals x {num_samples})" if progress else False
        structures = self.predict_structures(
            [z for z in zs for _ in range(num_samples)],
            steps=steps,
            seed=seed,
            batch_size=batch_size,
            solver=solver,
            progress=label,
        )
        n = int(steps or self.sample_steps)
        x = torch.cat([torch.as_tensor(st.frac_coords, dtype=torch.float32) for st in structures])
        out = CrystalSamples(
            x=x,
            nfe=n,
            times=torch.linspace(0, 1, n + 1),
            seed=seed,
            structures=structures,
            ids=ids,
            samples_per_crystal=num_samples,
            references=refs,
        )
        if out_dir is not None:
            write_predictions(out.per_crystal(), ids, out_dir)
        return out

    @torch.no_grad()
    def generate(
        self,
        n: int = 100,
        steps: int | None = None,
        seed: int | None = 0,
        batch_size: int = 256,
        solver: str | None = None,
    ) -> list[Any]:
        """Ab initio generation: atom counts from the training distribution, then types, coordinates, lattice.

        Returns:
            ``n`` pymatgen ``Structure`` objects.
        """
        self._require_task("gen")
        if not self.num_atoms_dist:
            raise RuntimeError(
                "generate() needs the training atom-count distribution (fit first or pass num_atoms_dist)"
            )
        gen = torch.Generator(device="cpu")
        if seed is not None:
            gen.manual_seed(seed)
        counts = torch.multinomial(torch.tensor(self.num_atoms_dist), n, replacement=True, generator=gen)
        out: list[Any] = []
        for start in range(0, n, batch_size):
            na = counts[start : start + batch_size].to(self.device)
            s = None if seed is None else seed + start
            out += self.sample_crystals(None, na, steps=steps, seed=s, **self._solver_kwargs(solver)).structures()
        return out

    @torch.no_grad()
    def sample(
        self,
        num: int,
        *,
        steps: int | None = None,
        solver: str | None = None,
        seed: int | None = None,
        composition: str | None = None,
        compositions_from: str | None = None,
        limit: int | None = None,
        batch_size: int = 256,
        progress: bool = True,
    ) -> CrystalSamples:
        """``num`` crystals: CSP of ``composition`` (e.g. ``"SrTiO3"``), CSP of every crystal of a file
        (``compositions_from``; ``num`` is then the number of samples PER crystal), or ab initio generation.

        ``flowsci sample --ckpt C --set compositions_from=test.csv --num 3 --out preds/`` writes
        ``preds/<material_id>_<j>.cif`` (``<material_id>.cif`` with ``--num 1``); see
        :meth:`predict_structures_from` for the accepted files.

        Args:
            num: crystals to sample, or samples per input crystal with ``compositions_from``.
            steps: sampling steps = network evaluations (default: the model's ``sample_steps``).
            solver: sampler (:attr:`solvers`; default: the model's).
            seed: random seed (``None``: nondeterministic).
            composition: a formula whose atoms make the cell (CSP of one composition).
            compositions_from: a CDVAE-style CSV (``material_id``, ``cif`` columns, or a formula column), a folder
                of CIFs, one CIF or a bundled dataset name: CSP of every crystal in it.
            limit: with ``compositions_from``, only its first ``limit`` crystals.
            batch_size: crystals per network batch (batch ``b`` is seeded ``seed + b·batch_size``; the benchmark
                samples all its test crystals in one batch).
            progress: a progress bar with ``compositions_from``.

        Returns:
            :class:`CrystalSamples` (``structures``: pymatgen Structures; ``x``: the concatenated fractional
            coordinates; ``nfe``: network evaluations per crystal batch; ``ids`` with ``compositions_from``).

        Raises:
            flowsci.errors.InputError: invalid ``num``/``steps``/``solver``, composition or file (naming the file
                and row), or both ``composition`` and ``compositions_from``.
        """
        check_sample_args(num, steps, solver, solvers=self.solvers)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError("batch_size", f"must be a whole number >= 1, got {batch_size!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InputError("limit", f"must be a whole number >= 1 (or omitted), got {limit!r}")
        if compositions_from is not None:
            if composition is not None:
                raise InputError("compositions_from", "give either composition or compositions_from, not both")
            return self.predict_structures_from(
                str(compositions_from),
                num_samples=num,
                steps=steps,
                seed=seed,
                solver=solver,
                progress=progress,
                limit=limit,
                batch_size=batch_size,
            )
        if composition is not None:
            structures = self.predict_structure(
                composition, num_samples=num, steps=steps, seed=seed, solver=solver, batch_size=batch_size
            )
        else:
            structures = self.generate(n=num, steps=steps, seed=seed, solver=solver, batch_size=batch_size)
        n = int(steps or self.sample_steps)
        x = torch.cat([torch.as_tensor(s.frac_coords, dtype=torch.float32) for s in structures])
        if not bool(torch.isfinite(x).all()) or any(not np.isfinite(s.lattice.matrix).all() for s in structures):
            raise NonFiniteError(f"{type(self).__name__}: sampling produced non-finite coordinates or lattices")
        return CrystalSamples(x=x, nfe=n, times=torch.linspace(0, 1, n + 1), seed=seed, structures=list(structures))

    def write_samples(self, solution: CrystalSamples, out_dir: str | os.PathLike) -> list[Path]:
        """Write the structures of :meth:`sample` as CIF files and their property distributions as
        ``structures.png`` (:func:`~flowsci.domains.crystals.metrics.plot_structures`; atomic writes).
        """
        from flowsci.domains.crystals.data import write_predictions
        from flowsci.domains.crystals.metrics import plot_structures

        structures = solution.structures
        ids = list(getattr(solution, "ids", None) or [])
        if ids:  # CSP of a file: <material_id>.cif / <material_id>_<j>.cif
            written = write_predictions(solution.per_crystal(), ids, out_dir)
            k = solution.samples_per_crystal
            title = f"CSP of {len(ids)} crystals × {k} sample{'s' if k > 1 else ''}, {solution.nfe} steps"
        else:
            written = self.write_cifs(structures, out_dir)
            title = f"{len(structures)} crystals, {solution.nfe} steps"
        title += f", seed {solution.seed}"
        if getattr(solution, "references", None):
            reference, label = solution.references, "input crystals"
        else:
            reference, label = bundled_reference(structures)
        path = Path(out_dir) / "structures.png"
        figure = plot_structures(structures, reference, path=path, title=title, labels=("generated", label), cells=4)
        return [*written, figure]

    def write_cifs(self, structures: Sequence[Any], out_dir: str | os.PathLike, prefix: str = "sample") -> list[Path]:
        """Write structures as CIF files (atomic writes)."""
        from flowsci.domains.crystals.data import write_cifs

        return write_cifs(structures, out_dir, prefix)

    def _solver_kwargs(self, solver: str | None) -> dict[str, Any]:
        """Keyword of ``sample_crystals`` that selects ``solver`` (none for the default)."""
        raise NotImplementedError

    def _require_task(self, task: str) -> None:
        have = getattr(self, "task", "csp")
        if task == "csp" and have != "csp":  # an ab initio model draws its own types: a composition would be ignored
            raise ValueError(
                f"{type(self).__name__} was trained for task={have!r} (ab initio generation): it draws the atom "
                "types itself, so it cannot predict the structure of a given composition; use a model trained "
                "with task='csp' (or sample without composition / compositions_from)"
            )
        if task == "gen" and have != "gen":
            raise ValueError(
                f"{type(self).__name__} was trained for task={have!r} (crystal structure prediction): give a "
                "composition (predict_structure('SrTiO3'), or `flowsci sample --set composition=SrTiO3`); "
                "generate() needs a model trained with task='gen'"
            )


# =========================================================================================== CrysBFN


class CrysBFN(CrystalGenerativeModule):
    """CrysBFN: periodic Bayesian flow network for crystals (CSP and ab initio generation).

    Args:
        net: a :class:`~flowsci.domains.crystals.model.CSPNet` (``num_types`` = K, ``cond_entropy`` must match).
        task: ``"csp"`` (types given) or ``"gen"`` (types generated too).
        train_steps: step counts ``n`` of the discrete-time losses; each batch picks one uniformly (CrysBFN:
            a single value, e.g. ``[10]`` for the NFE-10 model; several values train one model for many NFEs).
        sample_steps: default number of sampling steps (= NFE).
        coord_beta1: final expected von Mises concentration ``β_1`` of the coordinate flow.
        lattice_sigma1: ``σ_1`` of the lattice Gaussian flow.
        type_beta1: ``β_1`` of the discrete type flow.
        num_types: K (atomic numbers 1..K).
        cond_entropy: feed the per-coordinate normalised log-concentration to the network (``False``: time only,
            the paper's ablation).
        coord_weight: weight of the coordinate loss.
        lattice_weight: weight of the lattice loss.
        type_weight: weight of the type loss.
        lattice_scale: scalar lattice standardisation ``s`` in Å (``None``: from the datamodule at fit start).
        num_atoms_dist: ``p(n)`` for generation (``None``: from the datamodule at fit start).
        sampler: default sampler: ``"end_back"`` (CrysBFN's default: redraw ``θ_i ~ p_F(· | x̂; i)``) or
            ``"bayesian"`` (Graves et al.: ``y ~ p_R(· | θ_{i−1})``, ``θ_i = h(θ_{i−1}, y, α_i)``, which keeps each
            coordinate's own history).
        loss_weighting: ``"bfn"`` (the flows' ``n``-step losses ``n·KL``, whose weights grow with the step:
            ``n α_{k+1} A(α_{k+1})`` for coordinates, ``n α_{k+1} / 2`` for the lattice, a factor ≈ 600 between the
            first and last step at ``n = 10``) or ``"uniform"`` (the same distances, ``Σ_d (1 − cos 2π(f − f̂))`` and
            ``‖L − L̂‖²``, with one weight for every step, so the early steps that place the atoms on sites are
            trained as much as the late refinement ones; better at few steps on Perov-5). Types keep their
            n-step loss.
        late_weight: ``γ ≥ 0``, with ``loss_weighting="uniform"`` only: weight each crystal's coordinate and
            lattice loss at step ``k`` by ``(1 + γ t) / (1 + γ (n − 1) / 2n)``, ``t = k / n``, a linear ramp
            towards the late steps (where atoms commit to sites) whose mean over the uniformly drawn ``k`` is 1
            (the type loss is not reweighted). ``0``: every step alike.
        lattice_prediction: ``"direct"`` (default): the lattice estimate is the network's lattice output,
            ``L̂ = W h̄``, in the canonical orientation every crystal is put in; ``"residual"``: ``L̂ = μ + W h̄``
            with ``μ`` the lattice belief's mean. The network sees ``μ`` only through ``μ μᵀ`` and cannot know
            its orientation, so the residual form must undo a belief it cannot see; with the end_back sampler
            its errors feed back into the next belief, and at many steps some lattices run away (on Perov-5 at
            NFE 100, 19 % of the predicted cells were off in size by more than 10 %; README).
        lattice_center: run the lattice flow on ``L / s − c`` with ``c`` the mean standardised training lattice
            (a buffer, filled at fit start; the network still sees ``μ + c``, a lattice). The prior ``N(0, I)``
            is then centred on a typical cell and the head predicts the deviation from it. Off by default (CSP);
            on for generation, where the uncentred head drifted to 5 % too long cells (docs, "Generation").
        translation_invariant: measure the coordinate error up to the best global translation of each crystal
            (per axis, ``min_c Σ_i (1 − cos 2π(f_i − f̂_i − c))``, closed form via the circular mean), as FlowMM
            removes the mean of its torus velocities. A crystal has no preferred origin: the network only sees
            coordinate differences, so at low accuracy it cannot know the dataset's origin, and a loss in the
            dataset's frame then rewards pulling atoms together instead of arranging them.
        optimizer: optimizer factory (default AdamW, lr 1e-3 as in CrysBFN).
        lr_scheduler: optional scheduler factory.
    """

    solvers: tuple[str, ...] = SAMPLERS
    """Samplers ``flowsci sample --solver`` accepts (``end_back``, ``bayesian``)."""

    def __init__(
        self,
        net: nn.Module,
        task: str = "csp",
        train_steps: list[int] | int = 10,
        sample_steps: int = 10,
        coord_beta1: float = 1e3,
        lattice_sigma1: float = 10**-1.5,
        type_beta1: float = 0.5,
        num_types: int = 100,
        cond_entropy: bool = True,
        coord_weight: float = 1.0,
        lattice_weight: float = 1.0,
        type_weight: float = 1.0,
        lattice_scale: float | None = None,
        num_atoms_dist: list[float] | None = None,
        sampler: str = "end_back",
        loss_weighting: str = "bfn",
        translation_invariant: bool = False,
        lattice_prediction: str = "direct",
        lattice_center: bool = False,
        late_weight: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if lattice_prediction not in ("direct", "residual"):
            raise ValueError(f"lattice_prediction must be 'direct' or 'residual', got {lattice_prediction!r}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {loss_weighting!r}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if late_weight < 0 or (late_weight and loss_weighting != "uniform"):
            raise ValueError(f"late_weight must be >= 0 and needs loss_weighting='uniform', got {late_weight}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if getattr(net, "cond_entropy", cond_entropy) != cond_entropy:
            raise ValueError("net.cond_entropy and CrysBFN(cond_entropy=...) disagree")
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"] if outside_cli() else None)
        self.net = net
        self.task = task
        self.train_steps = [train_steps] if isinstance(train_steps, int) else list(train_steps)
        self.sample_steps = sample_steps
        self.num_types = num_types
        self.cond_entropy = cond_entropy
        self.weights = {"coord": coord_weight, "lattice": lattice_weight, "type": type_weight}
        self.sampler = sampler
        self.loss_weighting = loss_weighting
        self.translation_invariant = translation_invariant
        self.lattice_prediction = lattice_prediction
        self.lattice_center = lattice_center
        self.late_weight = float(late_weight)
        if lattice_center:  # c = mean standardised training lattice (canonical orientation), filled at fit start
            self.register_buffer("lattice_offset", torch.zeros(3, 3))
        self.coord_flow = PeriodicBayesianFlow(beta1=coord_beta1, period=1.0)
        self.lattice_flow = GaussianBayesianFlow(sigma1=lattice_sigma1)
        self.type_flow = DiscreteBayesianFlow(num_classes=num_types, beta1=type_beta1)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self._init_stats(lattice_scale, num_atoms_dist)

    # ------------------------------------------------------------------------------------------- network
    def predict(
        self,
        type_input: Tensor,
        coord_belief: Any,
        lattice_mean: Tensor,
        t: Tensor,
        num_atoms: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Point estimates from the beliefs.

        Args:
            type_input: ``[N, K]`` one-hot types (CSP) or ``2θ − 1`` of the type belief (generation).
            coord_belief: von Mises belief of ``F`` (``mean [N, 3]`` in [0, 1), ``concentration [N, 3]``).
            lattice_mean: ``[B, 3, 3]`` mean of the standardised-lattice belief.
            t: ``[B]`` times ``k / n``.
            num_atoms: ``[B]``.

        Returns:
            ``(F̂ [N, 3], L̂ [B, 3, 3] standardised, type logits [N, K])`` with ``F̂ = m + Δ`` and ``L̂`` the
            lattice output (``lattice_prediction="direct"``) or ``μ +`` it (``"residual"``).
        """
        cond = self.coord_flow.entropy_conditioning(coord_belief).to(lattice_mean.dtype) if self.cond_entropy else None
        net_lattice = lattice_mean + self.lattice_offset if self.lattice_center else lattice_mean
        d_coord, d_lat, logits = self.net(type_input, coord_belief.mean, net_lattice, t, num_atoms, cond)
        l_hat = d_lat if self.lattice_prediction == "direct" else lattice_mean + d_lat
        return coord_belief.mean + d_coord, l_hat, logits

    def _standardise(self, lattice: Tensor) -> Tensor:
        """The lattice flow's state: ``L / s`` (``lattice_center``: ``L / s − c``), ``[B, 3, 3]`` from Å."""
        x = lattice / self._scale()
        return x - self.lattice_offset if self.lattice_center else x

    def _destandardise(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`_standardise`: ``[B, 3, 3]`` flow state (or estimate) to a lattice in Å."""
        return (x + self.lattice_offset if self.lattice_center else x) * self._scale()

    def on_fit_start(self) -> None:
        """Read dataset statistics before training (``lattice_center``: also ``c``, the mean standardised lattice)."""
        super().on_fit_start()
        dm = getattr(getattr(self, "trainer", None), "datamodule", None)
        if self.lattice_center and not bool(self.lattice_offset.any()) and dm is not None:
            dm.setup("fit")
            lat = torch.cat([d.lattice for d in dm.train_set.data]).reshape(-1, 3, 3)
            self.lattice_offset.copy_(lat.mean(0) / self._scale())

    def _type_input(self, types: Tensor | None, belief: Any) -> Tensor:
        if self.task == "csp":
            return nn.functional.one_hot(types, self.num_types).float()
        return belief.network_input()

    # ------------------------------------------------------------------------------------------- training
    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """CrysBFN's ``n``-step loss of one batch (one ``n`` drawn from ``train_steps``)."""
        cb = batch if isinstance(batch, CrystalBatch) else CrystalBatch.from_pyg(batch)
        b = len(cb.num_atoms)
        dev = cb.frac.device
        pick = torch.randint(len(self.train_steps), (1,), generator=generator, device=dev)
        n = self.train_steps[int(pick)]
        k = torch.randint(0, n, (b,), generator=generator, device=dev)
        k_atom = k[cb.batch]
        t = k.float() / n
        x_lat = self._standardise(cb.lattice)
        coord_belief = self.coord_flow.sample_flow_at_step(cb.frac, k_atom, n, generator=generator)
        lat_belief = self.lattice_flow.sample_flow_at_step(x_lat.reshape(b, 9), k, n, generator=generator)
        type_belief = None
        if self.task == "gen":
            type_belief = self.type_flow.sample_flow_at_step(cb.types, k_atom, n, generator=generator)
        f_hat, l_hat, logits = self.predict(
            self._type_input(cb.types, type_belief), coord_belief, lat_belief.mean.reshape(b, 3, 3), t, cb.num_atoms
        )
        if self.translation_invariant:
            f_hat = f_hat + _optimal_shift(cb.frac - f_hat, cb.batch, b)[cb.batch]
        if self.loss_weighting == "bfn":
            l_coord = self.coord_flow.discrete_time_loss(cb.frac, f_hat, k_atom, n)  # [N]
            l_lat = self.lattice_flow.discrete_time_loss(x_lat.reshape(b, 9), l_hat.reshape(b, 9), k, n)  # [B]
        else:  # the same distances, every step weighted alike
            l_coord = (1.0 - torch.cos(self.coord_flow.to_angle(cb.frac - f_hat))).sum(-1)
            l_lat = (x_lat.reshape(b, 9) - l_hat.reshape(b, 9)).square().sum(-1)
            if self.late_weight:
                w = (1.0 + self.late_weight * t) / (1.0 + self.late_weight * (n - 1) / (2 * n))  # [B], mean 1 over k
                l_coord, l_lat = l_coord * w[cb.batch], l_lat * w
        l_coord = _per_graph_mean(l_coord, cb.batch, b).mean()
        l_lat = l_lat.mean()
        loss = self.weights["coord"] * l_coord + self.weights["lattice"] * l_lat
        logs = {"coord": l_coord.detach(), "lattice": l_lat.detach()}
        if self.task == "gen":
            l_type = self.type_flow.discrete_time_loss(cb.types, logits, k_atom, n, generator=generator)
            l_type = _per_graph_mean(l_type, cb.batch, b).mean()
            loss = loss + self.weights["type"] * l_type
            logs["type"] = l_type.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    # ------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def _solver_kwargs(self, solver: str | None) -> dict[str, Any]:
        return {} if solver is None else {"sampler": solver}

    def sample_crystals(
        self,
        types: Tensor | None,
        num_atoms: Tensor,
        steps: int | None = None,
        seed: int | None = None,
        return_trajectory: bool = False,
        sampler: str | None = None,
    ) -> CrystalBatch:
        """CrysBFN sampling with ``n = steps`` network evaluations.

        Runs the core's :func:`flowsci.bayesian_flow.sample_bayesian_flows`: for ``i = 1..n``,
        ``(F̂, L̂, p̂) = net(θ_{i−1}, t_{i−1})``, then for every flow either ``θ_i ~ p_F(· | x̂; i)`` ("end_back",
        strategy ``flow_resample``) or the Bayesian update with a receiver sample ("bayesian", strategy
        ``bayesian_update``). The result is the last estimate (NFE = n, as CrysBFN counts; types: a draw from ``p̂``).

        Args:
            types: ``[N]`` class indices (CSP) or ``None`` (generation).
            num_atoms: ``[B]`` atoms per crystal.
            steps: ``n`` (default ``sample_steps``).
            seed: seed of all random draws.
            return_trajectory: keep the estimates of every step in ``self.last_trajectory``.
            sampler: ``"end_back"`` or ``"bayesian"`` (default: the model's ``sampler``).

        Returns:
            A :class:`CrystalBatch` in Å with fractional coordinates in [0, 1); ``.nfe`` holds the NFE.
        """
        n = int(steps or self.sample_steps)
        mode = sampler or self.sampler
        if mode not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {mode!r}")
        dev = self.device
        num_atoms = num_atoms.to(dev).long()
        b, n_at = len(num_atoms), int(num_atoms.sum())
        gen = torch.Generator(device=dev)
        if seed is not None:
            gen.manual_seed(seed)
        else:
            gen.seed()
        if self.task == "csp" and types is None:
            raise ValueError("CSP sampling needs atom types")
        flows: dict[str, Any] = {"frac": self.coord_flow, "lattice": self.lattice_flow}
        shapes: dict[str, tuple[int, ...]] = {"frac": (n_at, 3), "lattice": (b, 9)}
        if self.task == "gen":
            flows["types"], shapes["types"] = self.type_flow, (n_at,)
        traj: list[tuple[Tensor, Tensor]] = []

        def network(beliefs: dict[str, Any], t: Tensor) -> dict[str, Tensor]:
            f_hat, l_hat, logits = self.predict(
                self._type_input(types, beliefs.get("types")),
                beliefs["frac"],
                beliefs["lattice"].mean.reshape(b, 3, 3),
                t,
                num_atoms,
            )
            if return_trajectory:
                traj.append((f_hat.remainder(1.0).cpu(), self._destandardise(l_hat).cpu()))
            return {"frac": f_hat, "lattice": l_hat.reshape(b, 9), "types": logits}

        res = sample_bayesian_flows(
            network,
            flows,
            shapes,
            b,
            steps=n,
            strategy=_STRATEGY[mode],
            final_network_call=False,
            generator=gen,
            device=dev,
            dtype=torch.float32,
        )
        if self.task == "gen":
            types = res.samples["types"]
        out = CrystalBatch(
            types, res.samples["frac"], self._destandardise(res.samples["lattice"].reshape(b, 3, 3)), num_atoms
        )
        out.nfe = res.nfe
        self.last_trajectory = traj if return_trajectory else None
        return out


# =========================================================================================== FM baseline


class CrystalFlowMatching(CrystalGenerativeModule, FlowMatching):
    """Torus flow-matching baseline for CSP (FlowMM-style) on the core's :class:`~flowsci.module.FlowMatching`.

    ``F_t`` follows the flat-torus geodesic from ``F_0 ~ U[0,1)^{N×3}``, the standardised lattice the straight line
    from ``N(0, I)``; the network regresses both velocities,
    ``L = E ‖v_F − log_{F_0}(F_1)‖² + λ_L ‖v_L − (L_1 − L_0)/s‖²`` (per-atom mean, then crystal mean).

    Args:
        net: a :class:`~flowsci.domains.crystals.model.CSPNet` with ``cond_entropy=False``.
        time_sampler: training time distribution (default uniform).
        lattice_weight: λ_L.
        num_types: K.
        lattice_scale: see :class:`CrysBFN`.
        optimizer: optimizer factory.
        lr_scheduler: scheduler factory.
        sample_steps: default ODE steps.
        sample_solver: default solver (``euler``, ``midpoint``, ``heun``, ``rk4``).
        translation_invariant: FlowMM's treatment of the origin: the coordinate loss is taken after removing the
            per-crystal mean of the residual ``v_F − u_F`` (``min_c ‖v_F − u_F − c‖²``), so a global drift, which
            only translates the crystal, is not penalised.
        lattice_target: ``"x1"`` (default): the lattice head predicts the clean standardised lattice ``L̂_1`` and
            the velocity is ``(L̂_1 − L_t)/(1 − t)``, loss ``‖L̂_1 − L_1‖²``; ``"velocity"``: the head regresses
            ``L_1 − L_0`` directly. The CSPNet sees the lattice only through ``L_t L_tᵀ`` (rotation invariant), so
            it cannot know the orientation of the Gaussian draw ``L_0`` and cannot predict ``L_1 − L_0``; it can
            predict the canonically oriented ``L_1`` (every crystal is put in the orientation of
            ``Lattice.from_parameters``). ``"velocity"`` is kept to measure that.
    """

    solvers: tuple[str, ...] = tuple(dict(FIXED_STEP_METHODS))
    """Fixed-step ODE solvers ``flowsci sample --solver`` accepts."""

    def __init__(
        self,
        net: nn.Module,
        time_sampler: TimeSampler | None = None,
        lattice_weight: float = 1.0,
        num_types: int = 100,
        lattice_scale: float | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_steps: int = 10,
        sample_solver: str = "euler",
        translation_invariant: bool = False,
        lattice_target: str = "x1",
    ) -> None:
        if lattice_target not in ("x1", "velocity"):
            raise ValueError(f"lattice_target must be 'x1' or 'velocity', got {lattice_target!r}")
        super().__init__(
            net=net,
            path=GeodesicPath(FlatTorus(3)),
            time_sampler=time_sampler or UniformTime(),
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            sample_steps=sample_steps,
            sample_solver=sample_solver,
            data_shape=[3],
        )
        if getattr(net, "cond_entropy", False):
            raise ValueError("the FM baseline's CSPNet must have cond_entropy=False (there is no belief entropy)")
        # only this class's arguments
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"] if outside_cli() else None)
        self.task = "csp"
        self.num_types = num_types
        self.lattice_weight = lattice_weight
        self.translation_invariant = translation_invariant
        self.lattice_target = lattice_target
        self.lattice_path = CondOTPath()
        self._init_stats(lattice_scale, None)

    def unpack_batch(self, batch: Any) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """``x1`` = fractional coordinates ``[N, 3]``; cond holds the crystal batch."""
        cb = batch if isinstance(batch, CrystalBatch) else CrystalBatch.from_pyg(batch)
        return cb.frac, {"crystal": cb}, None

    def _network(self, frac: Tensor, lat_std: Tensor, t: Tensor, cb: CrystalBatch) -> tuple[Tensor, Tensor]:
        """``(v_F [N, 3], lattice output [B, 3, 3])``: ``L̂_1`` or the lattice velocity (``lattice_target``)."""
        types = nn.functional.one_hot(cb.types, self.num_types).to(frac.dtype)
        v_f, out_l, _ = self.net(types, frac, lat_std, t, cb.num_atoms, None)
        return v_f, out_l

    def _velocities(self, frac: Tensor, lat_std: Tensor, t: Tensor, cb: CrystalBatch) -> tuple[Tensor, Tensor]:
        """Velocities of ``F`` (torus tangent, ``[N, 3]``) and of the standardised lattice (``[B, 3, 3]``)."""
        v_f, out_l = self._network(frac, lat_std, t, cb)
        if self.lattice_target == "velocity":
            return v_f, out_l
        return v_f, (out_l - lat_std) / (1.0 - t).clamp_min(1e-3)[:, None, None]

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Flow-matching loss on the torus (coordinates) and in R⁹ (standardised lattice)."""
        x1, cond, _ = self.unpack_batch(batch)
        cb: CrystalBatch = cond["crystal"]
        b = len(cb.num_atoms)
        t = self.time_sampler.sample(b, device=x1.device, generator=generator).to(x1.dtype)
        f0 = self.path.manifold.random_base((x1.shape[0],), generator=generator, device=x1.device, dtype=x1.dtype)
        ps = self.path.sample(f0, x1, t[cb.batch])
        l1 = (cb.lattice / self._scale()).reshape(b, 9)
        l0 = torch.randn(l1.shape, generator=generator, device=l1.device, dtype=l1.dtype)
        pl_ = self.lattice_path.sample(l0, l1, t)
        v_f, out_l = self._network(ps.x_t, pl_.x_t.reshape(b, 3, 3), t, cb)
        resid = v_f - ps.dx_t  # [N, 3]
        if self.translation_invariant:  # min over a per-crystal constant velocity: remove the residual's mean
            mean = torch.zeros(b, 3, dtype=resid.dtype, device=resid.device).index_add(0, cb.batch, resid)
            resid = resid - (mean / cb.num_atoms[:, None].to(resid.dtype))[cb.batch]
        l_coord = _per_graph_mean(resid.square().sum(-1), cb.batch, b).mean()
        target_l = l1 if self.lattice_target == "x1" else pl_.dx_t
        l_lat = (out_l.reshape(b, 9) - target_l).square().sum(-1).mean()
        loss = l_coord + self.lattice_weight * l_lat
        return loss, {"loss": loss.detach(), "coord": l_coord.detach(), "lattice": l_lat.detach()}

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        cb = CrystalBatch.from_pyg(batch)
        return self.sample_crystals(cb.types, cb.num_atoms, seed=batch_idx).structures()

    @torch.no_grad()
    def _solver_kwargs(self, solver: str | None) -> dict[str, Any]:
        return {} if solver is None else {"solver": solver}

    def sample_crystals(
        self,
        types: Tensor | None,
        num_atoms: Tensor,
        steps: int | None = None,
        seed: int | None = None,
        solver: str | None = None,
    ) -> CrystalBatch:
        """Integrate the learned flow with :func:`flowsci.solvers.solve_ode` (state packed as ``[N + 3B, 3]``)."""
        if types is None:
            raise ValueError("the FM baseline does CSP only: atom types are required")
        dev = self.device
        num_atoms = num_atoms.to(dev).long()
        cb = CrystalBatch(
            types.to(dev),
            torch.zeros(int(num_atoms.sum()), 3, device=dev),
            torch.zeros(len(num_atoms), 3, 3, device=dev),
            num_atoms,
        )
        b, n_at = len(num_atoms), int(num_atoms.sum())
        gen = torch.Generator(device=dev)
        if seed is not None:
            gen.manual_seed(seed)
        else:
            gen.seed()
        f0 = self.path.manifold.random_base((n_at,), generator=gen, device=dev)
        l0 = torch.randn(b, 9, generator=gen, device=dev)
        x0 = torch.cat([f0, l0.reshape(3 * b, 3)])

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            tb = t.reshape(-1)[:1].expand(b).to(x.dtype)
            v_f, v_l = self._velocities(x[:n_at], x[n_at:].reshape(b, 3, 3), tb, cb)
            return torch.cat([v_f, v_l.reshape(3 * b, 3)])

        sol: Solution = solve_ode(
            velocity, x0, method=solver or self.sample_solver, steps=int(steps or self.sample_steps), progress=False
        )
        x = sol.x
        out = CrystalBatch(
            types.to(dev), FlatTorus(3).projx(x[:n_at]), x[n_at:].reshape(b, 3, 3) * self._scale(), num_atoms
        )
        out.nfe = sol.nfe
        return out
