"""Benchmark specifications: the types a domain declares its ``flowsci bench`` benchmark with.

A domain describes its benchmark once, as data, in ``flowsci.domains.<field>.benchmark``: a function
``spec(suite: str) -> BenchmarkSpec`` (the one way to size a benchmark per suite: ``smoke``, ``quick``, ``full``),
registered under the ``flowsci.benchmarks`` entry-point group. These types live in the core, below the domains;
the runner (:mod:`flowsci.benchmarks.runner`), above them, knows nothing about the domain: it builds the data
module, trains every :class:`Method`, samples it on the grid of solvers and numbers of function evaluations
(NFE), and scores each sample set with the spec's :class:`Metric` functions.

The grid of cells is ``methods x solvers x NFE``. A fixed-step solver with ``k`` network evaluations per step
(Euler 1, midpoint and Heun 2, RK4 4) is run with ``steps = NFE / k`` steps; NFE values that ``k`` does not divide
are skipped for that solver, so every measured row is an NFE-matched comparison. Adaptive solvers (``dopri5``...)
give one cell per method whose NFE is the counted one.

Example:
    >>> def spec(suite: str) -> BenchmarkSpec:
    ...     steps = {"smoke": 30, "quick": 3000, "full": 20000}[suite]
    ...     return BenchmarkSpec(
    ...         name="toy2d",
    ...         datamodule=lambda: Toy2DDataModule(),
    ...         reference_data=lambda dm, num, seed: dm.sample_reference(num, seed),
    ...         methods=[Method("fm-ot", build=build_ot), Method("fm-indep", build=build_indep, baseline=True)],
    ...         metrics=[Metric("sliced_w2", sliced_wasserstein2)],
    ...         train_steps=steps,
    ...     )  # doctest: +SKIP

"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowsci.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS

__all__ = [
    "ADAPTIVE_SOLVERS",
    "DIFFUSION_SAMPLERS",
    "EVALS_PER_STEP",
    "SUITES",
    "BenchmarkSpec",
    "Cell",
    "Method",
    "Metric",
    "ReferenceRow",
    "SampleRequest",
    "default_postprocess",
    "default_sample",
    "fit_method",
    "mean_se",
    "read_trained",
    "save_trained",
    "trainer_device",
]

SUITES: tuple[str, ...] = ("smoke", "quick", "full")
"""Suite names: ``smoke`` (seconds, CI), ``quick`` (<= ~15 min per domain on 2 CPU cores), ``full`` (paper scale)."""

DIFFUSION_SAMPLERS: dict[str, int] = {"ddim": 1, "ddpm": 1}
"""Samplers of DDPM-trained rows (DDIM with eta = 0, ancestral DDPM with eta = 1): one network evaluation per step."""

EVALS_PER_STEP: dict[str, int] = {**FIXED_STEP_METHODS, **DIFFUSION_SAMPLERS}
"""Network evaluations per step of each fixed-step sampler: the ODE solvers of :func:`flowsci.solvers.solve_ode` and
the :data:`DIFFUSION_SAMPLERS`, so a DDPM row's cells carry its sampler's name."""

ADAPTIVE_SOLVERS: frozenset[str] = frozenset(ADAPTIVE_METHODS)
"""Adaptive solvers (torchdiffeq): one cell per method, NFE is whatever the solver used."""


@dataclass(frozen=True)
class SampleRequest:
    """Everything a sampler needs to produce one cell's samples.

    Attributes:
        datamodule: The (set-up) data module of the domain.
        reference: The held-out reference returned by :attr:`BenchmarkSpec.reference_data` (conditional domains
            take their conditions from it).
        num: Number of samples to draw.
        solver: Solver name (``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"``, ``"dopri5"``...).
        steps: Number of solver steps, or ``None`` for an adaptive solver.
        nfe: Target number of function evaluations, or ``None`` for an adaptive solver.
        seed: Seed of the prior draw (the same for every cell of a domain: common random numbers).

    """

    datamodule: Any
    reference: Any
    num: int
    solver: str
    steps: int | None
    nfe: int | None
    seed: int


SampleFn = Callable[[Any, SampleRequest], Any]
"""``sample(model, request) -> solution``; the solution usually is a :class:`flowsci.solvers.Solution`."""


def default_sample(model: Any, request: SampleRequest) -> Any:
    """Sample through the public API ``model.sample(num, steps=..., solver=..., seed=...)``.

    Args:
        model: A trained :class:`flowsci.module.FlowMatching` (or anything with the same ``sample`` signature).
        request: The cell to sample.

    Returns:
        The model's :class:`~flowsci.solvers.Solution` (``x`` of shape ``[num, ...]``, ``nfe``).

    """
    return model.sample(request.num, steps=request.steps, solver=request.solver, seed=request.seed)


def default_postprocess(solution: Any) -> Any:
    """Return ``solution.x`` detached on the CPU (the object the metric functions receive)."""
    x = solution.x if hasattr(solution, "x") else solution
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return x


@dataclass(frozen=True)
class Metric:
    """One sample-quality metric.

    Attributes:
        name: Column name (``"sliced_w2"``). If ``fn`` returns a mapping, its keys are the column names instead
            (for metrics that share one expensive computation, e.g. coverage recall and precision).
        fn: ``fn(samples, reference) -> float | Mapping[str, float]`` where ``samples`` is the postprocessed
            output of the sampler and ``reference`` the held-out reference.
        higher_is_better: Direction, a bool or a mapping from the keys of a mapping-valued ``fn`` to bools.
        description: One line for the leaderboard legend.

    """

    name: str
    fn: Callable[[Any, Any], float | Mapping[str, float]]
    higher_is_better: bool | Mapping[str, bool] = False
    description: str = ""

    def direction(self, key: str) -> bool:
        """Whether a larger value of column ``key`` is better."""
        if isinstance(self.higher_is_better, Mapping):
            return bool(self.higher_is_better.get(key, False))
        return bool(self.higher_is_better)


def trainer_device(device: Any) -> dict[str, Any]:
    """``pl.Trainer`` keywords that train on one ``device`` (a ``torch.device`` or its name): that CUDA GPU, else
    the CPU — what custom ``Method.fit`` functions pass so ``flowsci bench --device`` reaches every row.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index or 0]}
    return {"accelerator": "cpu", "devices": 1}


def fit_method(spec: BenchmarkSpec, method: Method, model: Any, dm: Any, steps: int, device: Any) -> int:
    """Train ``model`` in place as the benchmark runner does: the method's own ``fit``, else a quiet ``pl.Trainer``
    (``steps`` optimizer steps on ``device``, the method's callbacks, the spec's ``trainer_kwargs``).

    Returns:
        The optimizer steps done.
    """
    if method.fit is not None:
        method.fit(model, dm, steps, device)
        return steps
    import pytorch_lightning as pl

    from flowsci.module import QUIET_TRAINER

    kwargs: dict[str, Any] = {
        "max_steps": steps,
        "max_epochs": -1,
        **trainer_device(device),
        **QUIET_TRAINER,
        "callbacks": method.callbacks() if method.callbacks is not None else [],
        "deterministic": False,
    }
    kwargs.update(spec.trainer_kwargs)
    trainer = pl.Trainer(**kwargs)
    trainer.fit(model, datamodule=dm)
    return int(trainer.global_step)


def mean_se(values: Any) -> tuple[float, float]:
    """Mean and standard error of the mean, ``sd / sqrt(n)`` with the sample standard deviation (``ddof = 1``):
    how rows measured over several training seeds or sample draws are compared.

    Args:
        values: ``(n,)`` numbers (e.g. one match rate per training seed); ``n = 1`` gives ``se = nan``.
    """
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"mean_se: need a non-empty 1-D sequence, got shape {x.shape}")
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se


def save_trained(path: str | Path, state: Mapping[str, Any], info: Mapping[str, Any]) -> None:
    """Write trained weights ``state`` (CPU tensors) and their training record ``info`` to a training-cache file,
    atomically.
    """
    import torch

    from flowsci.io import atomic_write

    atomic_write(path, lambda tmp: torch.save({"state_dict": dict(state), "info": dict(info)}, tmp))


def read_trained(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, info)`` of a training-cache file (read with ``weights_only``: :mod:`flowsci.checkpoint`)."""
    from flowsci.checkpoint import read_checkpoint

    blob = read_checkpoint(path)
    return blob["state_dict"], blob["info"]


@dataclass(frozen=True)
class Method:
    """A method (or baseline) measured on the benchmark.

    Attributes:
        name: Row name, unique within the spec (``"fm-ot"``).
        build: ``build(datamodule) -> model``, a fresh untrained model (usually a ``pl.LightningModule``).
        baseline: ``True`` for the baseline(s) measured in the same run (shown as such in the leaderboard).
        description: One line for the leaderboard.
        train_steps: Optimiser steps, overriding :attr:`BenchmarkSpec.train_steps`; ``0`` means no training.
        fit: ``fit(model, datamodule, max_steps, device) -> None`` replacing the default Lightning ``Trainer.fit``
            (for non-Lightning baselines and custom recipes); it trains ``model`` in place on ``device`` (the
            runner's ``torch.device``; :func:`trainer_device` turns it into ``pl.Trainer`` keywords).
        sample: Sampler overriding :attr:`BenchmarkSpec.sample`.
        solvers: Solvers overriding :attr:`BenchmarkSpec.solvers` (e.g. a one-step baseline: ``("euler",)``).
        nfe_grid: NFE grid overriding :attr:`BenchmarkSpec.nfe_grid`.
        callbacks: ``callbacks() -> list[pl.Callback]`` added to the default trainer (e.g. EMA).
        weights_of: Name of an earlier method of the spec whose trained weights this one reuses (its ``build``
            must make the same model): for rows that differ only in how they sample. It is not trained again.
        init_from: Name of an earlier method whose trained weights this one starts from (loaded into the model
            ``build`` makes, non-strictly, so a student may add parameters), before its own ``train_steps`` (or its
            own ``fit``, e.g. a reflow fine-tune). The source's training fingerprint is part of this method's.
        num_samples: Samples drawn per cell, overriding :attr:`BenchmarkSpec.num_samples` (e.g. a row scored per
            length bucket with more samples); the reference keeps the spec's size.

    """

    name: str
    build: Callable[[Any], Any]
    baseline: bool = False
    description: str = ""
    train_steps: int | None = None
    fit: Callable[[Any, Any, int, Any], None] | None = None
    sample: SampleFn | None = None
    solvers: Sequence[str] | None = None
    nfe_grid: Sequence[int] | None = None
    callbacks: Callable[[], list[Any]] | None = None
    weights_of: str | None = None
    init_from: str | None = None
    num_samples: int | None = None


@dataclass(frozen=True)
class ReferenceRow:
    """A number reported elsewhere (a paper, an anchor of the field), never measured by this run.

    Attributes:
        method: Method name as the source calls it.
        metrics: Metric column -> reported value (use the spec's column names when the definition matches).
        source: Citation (paper + table, or URL).
        scale: The scale the number was obtained at (data size, training budget, hardware).
        nfe: NFE of the reported number, if known.
        solver: Solver of the reported number, if known.
        note: Caveats (different split, different metric definition...).

    """

    method: str
    metrics: Mapping[str, float]
    source: str
    scale: str
    nfe: int | None = None
    solver: str | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form (always tagged ``"kind": "reported"``)."""
        return {
            "kind": "reported",
            "method": self.method,
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "source": self.source,
            "scale": self.scale,
            "nfe": self.nfe,
            "solver": self.solver,
            "note": self.note,
        }


@dataclass(frozen=True)
class Cell:
    """One (method, solver, NFE) measurement. ``nfe``/``steps`` are ``None`` for adaptive solvers."""

    method: str
    solver: str
    nfe: int | None
    steps: int | None

    @property
    def id(self) -> str:
        """Stable identifier ``method/solver/nfe<N>`` (``.../adaptive`` for adaptive solvers)."""
        return f"{self.method}/{self.solver}/" + ("adaptive" if self.nfe is None else f"nfe{self.nfe}")


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BenchmarkSpec:
    """A domain's benchmark: data, methods, grid, metrics, reference rows, and per-suite sizes.

    Attributes:
        name: Domain name (the registry key, e.g. ``"toy2d"``).
        datamodule: ``datamodule() -> pl.LightningDataModule`` (a fresh one; called once per domain run).
        reference_data: ``reference_data(datamodule, num, seed) -> reference``: held-out data the samples are
            scored against (e.g. a ``[num, d]`` tensor of fresh target samples, or test structures).
        methods: Methods and baselines (at least one ``baseline=True`` is recommended).
        metrics: Metric functions.
        num_samples: Samples drawn per cell (and the size of the reference).
        nfe_grid: Target NFE values for fixed-step solvers.
        solvers: Solver names.
        train_steps: Default optimiser steps per method.
        seed: Seed of training (``pl.seed_everything``), of the reference and of the prior draws.
        trainer_kwargs: Extra ``pl.Trainer`` arguments (e.g. ``{"gradient_clip_val": 1.0}``).
        sample: Default sampler ``sample(model, request)``; :func:`default_sample` calls ``model.sample``.
        postprocess: ``postprocess(solution) -> samples`` given to the metrics (default: ``solution.x`` on CPU).
        primary_metric: Column the leaderboard sorts by (default: the first metric's column).
        references: Reported reference rows (never mixed with measured rows).
        description: A paragraph for the leaderboard.
        packages: Extra distributions whose versions are recorded (e.g. ``("pymatgen",)``).
        nfe_counter: Attribute of the model whose forward calls are counted as the measured NFE (``"net"``);
            ``None`` disables counting.
        version: Bump when the benchmark changes meaning; finished cells of another version are rerun.
        warmup_samples: Before a method's first timed cell, draw this many samples once, untimed (lazy
            initialisation, allocator warm-up); ``0`` disables.
        noise_floor: Also score a second held-out draw, ``reference_data(dm, num, seed + 1)``, against the
            reference with every metric: the value a perfect sampler would get at this sample size. Only for
            specs whose reference is itself a valid input of the metrics.
        sample_plot: Optional ``sample_plot(samples, reference, path, title)`` that draws one cell's samples
            against the reference (e.g. distributions of the field's features); the runner writes it to
            :func:`~flowsci.benchmarks.report.sample_plot_path` and the report shows the best cell per method.

    """

    name: str
    datamodule: Callable[[], Any]
    reference_data: Callable[[Any, int, int], Any]
    methods: Sequence[Method]
    metrics: Sequence[Metric]
    num_samples: int = 1000
    nfe_grid: Sequence[int] = (1, 2, 4, 8, 32)
    solvers: Sequence[str] = ("euler",)
    train_steps: int = 1000
    seed: int = 0
    trainer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    sample: SampleFn = default_sample
    postprocess: Callable[[Any], Any] = default_postprocess
    primary_metric: str | None = None
    references: Sequence[ReferenceRow] = ()
    description: str = ""
    packages: Sequence[str] = ()
    nfe_counter: str | None = "net"
    version: str = "1"
    warmup_samples: int = 16
    noise_floor: bool = False
    sample_plot: Callable[[Any, Any, Path, str], Any] | None = None

    def __post_init__(self) -> None:
        """Check the spec once, with errors that name the domain and the problem."""
        where = f"BenchmarkSpec {self.name!r}"
        if not self.name or "/" in self.name:
            raise ValueError(f"{where}: name must be a non-empty string without '/'")
        names = [m.name for m in self.methods]
        if not names:
            raise ValueError(f"{where}: needs at least one method")
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: duplicate method names {names}")
        if any(not n or "/" in n for n in names):
            raise ValueError(f"{where}: method names must be non-empty and contain no '/': {names}")
        if not self.metrics:
            raise ValueError(f"{where}: needs at least one metric")
        if self.num_samples < 1:
            raise ValueError(f"{where}: num_samples must be >= 1, got {self.num_samples}")
        for i, m in enumerate(self.methods):
            if m.weights_of is not None:
                earlier = {e.name: e for e in self.methods[:i]}
                if m.weights_of not in earlier or earlier[m.weights_of].weights_of is not None:
                    raise ValueError(
                        f"{where}: method {m.name!r} reuses the weights of {m.weights_of!r}, which must be an "
                        "earlier method that trains its own weights"
                    )
            if m.init_from is not None:
                earlier_names = [e.name for e in self.methods[:i]]
                if m.init_from not in earlier_names or m.weights_of is not None:
                    raise ValueError(
                        f"{where}: method {m.name!r} starts from {m.init_from!r}, which must be an earlier method "
                        "(and init_from excludes weights_of)"
                    )
            if m.num_samples is not None and int(m.num_samples) < 1:
                raise ValueError(f"{where}: method {m.name!r}: num_samples must be >= 1, got {m.num_samples}")
            for s in m.solvers if m.solvers is not None else self.solvers:
                if s not in EVALS_PER_STEP and s not in ADAPTIVE_SOLVERS:
                    known = sorted(EVALS_PER_STEP) + sorted(ADAPTIVE_SOLVERS)
                    raise ValueError(f"{where}: unknown solver {s!r} (method {m.name!r}); known: {known}")
            for n in m.nfe_grid if m.nfe_grid is not None else self.nfe_grid:
                if int(n) < 1:
                    raise ValueError(f"{where}: NFE values must be >= 1, got {n} (method {m.name!r})")

    def method(self, name: str) -> Method:
        """The method called ``name``."""
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"BenchmarkSpec {self.name!r} has no method {name!r}")

    def trained_by(self, method: Method) -> Method:
        """The method whose training produces ``method``'s weights (itself, or its ``weights_of``)."""
        return self.method(method.weights_of) if method.weights_of is not None else method

    def train_steps_of(self, method: Method) -> int:
        """Optimiser steps of ``method`` (its override or the spec default; those of ``weights_of`` if set)."""
        method = self.trained_by(method)
        return int(self.train_steps if method.train_steps is None else method.train_steps)

    def num_samples_of(self, method: Method) -> int:
        """Samples drawn per cell of ``method`` (its override or the spec's :attr:`num_samples`)."""
        return int(self.num_samples if method.num_samples is None else method.num_samples)

    def cells(self) -> list[Cell]:
        """All (method, solver, NFE) cells in run order (method-major, so each method is trained once)."""
        out: list[Cell] = []
        for m in self.methods:
            solvers = m.solvers if m.solvers is not None else self.solvers
            grid = m.nfe_grid if m.nfe_grid is not None else self.nfe_grid
            for s in solvers:
                if s in ADAPTIVE_SOLVERS:
                    out.append(Cell(m.name, s, None, None))
                    continue
                k = EVALS_PER_STEP[s]
                for n in sorted({int(v) for v in grid}):
                    if n % k == 0:
                        out.append(Cell(m.name, s, n, n // k))
        return out

    def train_cache_file(self, cache_dir: str | Path, method: Method) -> Path:
        """The training-cache file of ``method``'s weights (those of the method that trains them, keyed by the
        training fingerprint): ``<cache_dir>/<name>-<fingerprint>.pt`` (:func:`save_trained` / :func:`read_trained`).
        """
        return Path(cache_dir) / f"{self.trained_by(method).name}-{self.train_fingerprint(method)}.pt"

    def train_fingerprint(self, method: Method) -> str:
        """Hash of everything that determines a method's trained weights (keys the training cache)."""
        method = self.trained_by(method)
        return _fingerprint(
            {
                "domain": self.name,
                "version": self.version,
                "method": method.name,
                "train_steps": self.train_steps_of(method),
                "seed": self.seed,
                "trainer_kwargs": dict(self.trainer_kwargs),
                **(
                    {"init_from": self.train_fingerprint(self.method(method.init_from))}
                    if method.init_from is not None
                    else {}
                ),
            }
        )

    def cell_fingerprint(self, cell: Cell) -> str:
        """Hash of everything that determines a cell's result; a finished cell is reused only if it matches."""
        return _fingerprint(
            {
                "train": self.train_fingerprint(self.method(cell.method)),
                "cell": cell.id,
                "steps": cell.steps,
                "num_samples": self.num_samples_of(self.method(cell.method)),
                # a metric's declared columns count: changing them (e.g. dropping one) reruns its cells
                "metrics": [
                    [m.name, sorted(m.higher_is_better)] if isinstance(m.higher_is_better, Mapping) else m.name
                    for m in self.metrics
                ],
            }
        )

    def describe(self) -> dict[str, Any]:
        """JSON-able summary written into the results file."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "num_samples": int(self.num_samples),
            "nfe_grid": [int(n) for n in self.nfe_grid],
            "solvers": list(self.solvers),
            "train_steps": int(self.train_steps),
            "seed": int(self.seed),
            "primary_metric": self.primary_metric,
            "methods": [
                {
                    "name": m.name,
                    "baseline": bool(m.baseline),
                    "description": m.description,
                    "train_steps": self.train_steps_of(m),
                    **({"weights_of": m.weights_of} if m.weights_of is not None else {}),
                    **({"init_from": m.init_from} if m.init_from is not None else {}),
                    **({"num_samples": int(m.num_samples)} if m.num_samples is not None else {}),
                }
                for m in self.methods
            ],
            "metrics": [
                {
                    "name": m.name,
                    "higher_is_better": (
                        dict(m.higher_is_better)
                        if isinstance(m.higher_is_better, Mapping)
                        else bool(m.higher_is_better)
                    ),
                    "description": m.description,
                }
                for m in self.metrics
            ],
        }
