"""``flowsci bench`` spec of the single-cell domain: conditional generation of PBMC68k-reduced cells.

Data: the shipped PBMC68k-reduced raw counts (558 cells x 765 HVGs, 10 ``bulk_labels``), split by cell and
stratified by type into train / validation / test (70 / 10 / 20 %, seed 0); ``X = log1p(normalize_total(1e4))``.
Every method generates, for each cell type, as many cells as the test split holds (112 cells), which are scored
against the test cells by :mod:`flowsci.domains.singlecell.metrics` (PCs and the cell-type classifier fitted on the
training cells). The noise floor (``noise_floor=True``) is a draw of *training* cells with the test composition
scored the same way (the real-train-vs-held-out floor; its ``clf_acc_gen`` is the classifier's held-out accuracy).

Methods (same data, batch 64, AdamW):

- ``wbdit-flow``: :class:`~flowsci.domains.singlecell.flow.WhiteBoxFlow`, WBDiT with CRATE blocks (width 128,
  depth 2, 4 heads, patches of 15 genes), Euler steps;
- ``dit-flow``: the same with standard DiT blocks (attention + 4x MLP) at equal width and depth (the paper's
  comparison: quality, parameters, seconds per step);
- ``wbdit-ddpm``: the paper's DDPM (linear beta 1e-4..0.02, T = 1000, epsilon prediction) with the WBDiT network,
  sampled with deterministic DDIM at NFE = steps (``solver`` column ``ddim``);
- ``latent-mlp-flow``: flow matching in 50 standardised PCs with the core MLP (3 x 256), decoded linearly;
- ``wbdit-reflow``: ``wbdit-flow``'s weights rectified once (1,000 pairs from 20 Euler steps, then ``reflow_steps`` on
  the pairs), sampled at 1-2 NFE;
- ``wbdit-flow-typeprior``: ``wbdit-flow`` started from the per-type Gaussian of the training cells
  (``prior="type"``, the conditional prior of Issachar et al., TMLR 2025) instead of :math:`N(0, I)`, trained
  4,000 steps in the quick suite (1,500 for the other networks; the length chosen on the validation cells);
- ``gaussian-pca`` (baseline): a per-type diagonal Gaussian in 30 standardised PCs (the sanity floor);
- ``*-round`` / ``*-continuous``: ``wbdit-flow``'s weights and ``gaussian-pca`` with cells decoded by
  nearest-count rounding, or kept continuous (``X`` not on the count lattice), instead of the default
  log-unbiased stochastic rounding (``decoder="lattice"``, :func:`~flowsci.domains.singlecell.data.lognorm_to_counts`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowsci.benchspec import (
    DIFFUSION_SAMPLERS,
    BenchmarkSpec,
    Method,
    Metric,
    ReferenceRow,
    SampleRequest,
    mean_se,
    trainer_device,
)

__all__ = [
    "CellReference",
    "build_gaussian",
    "build_latent",
    "build_wbdit_ddpm",
    "build_wbdit_flow",
    "fit_reflow",
    "reference_data",
    "sample_cells",
    "score",
    "spec",
    "spread",
    "step_times",
]

_SIZES: dict[str, dict[str, Any]] = {
    # a plumbing check in seconds (no marker metrics)
    "smoke": {"steps": 8, "latent_steps": 8, "reflow_steps": 0, "width": 32, "nfe": (2,), "markers": False},
    # ~8 min on an idle CPU core (about 3x that on a loaded shared machine)
    "quick": {
        "steps": 1500,
        "typeprior_steps": 4000,  # chosen on the validation cells (docs/domains/singlecell.md)
        "latent_steps": 3000,
        "reflow_steps": 500,
        "width": 128,
        "nfe": (5, 10, 20, 50),
        "markers": True,
    },
    # the paper's width (768, 8 heads, depth 3, patch 10); use a GPU
    "full": {
        "steps": 20_000,
        "typeprior_steps": 20_000,
        "latent_steps": 20_000,
        "reflow_steps": 5000,
        "width": 768,
        "nfe": (5, 10, 20, 50, 100),
        "markers": True,
    },
}

_DECODER_NAMES = {"round": "round", "none": "continuous"}

REFERENCES: tuple[ReferenceRow, ...] = (
    ReferenceRow(
        "GRouNdGAN real-vs-real floor (PBMC-CTL)",
        {"knn_auc": 0.50},
        "GRouNdGAN paper (Zinati et al., Nat. Commun. 2024): 1000 simulated vs 1000 test cells, RF real/fake AUROC",
        "PBMC-CTL, 1000 cells; random-forest AUROC (not our 5-NN AUC), other preprocessing",
        note="different classifier and data: shows the ideal value only",
    ),
    ReferenceRow(
        "scGAN (PBMC-CTL)",
        {"knn_auc": 0.59},
        "GRouNdGAN paper (Zinati et al., Nat. Commun. 2024), as summarised in the flowsci paper notes",
        "PBMC-CTL, 1000 cells; random-forest AUROC (not our 5-NN AUC)",
        note="not re-checked against the paper table",
    ),
)


@dataclass
class CellReference:
    """Held-out real cells plus the training cells the metrics fit their PCs and classifier on.

    Attributes:
        heldout: AnnData of the cells scored against (the test split, or for the noise floor a draw of training
            cells with the test composition).
        train: AnnData of the training cells.
        is_train: ``heldout`` are training cells (the floor draw).
        cache: PCs and classifier, fitted once per reference.

    """

    heldout: Any
    train: Any
    is_train: bool = False
    cache: dict[str, Any] = field(default_factory=dict)


def reference_data(dm: Any, num: int, seed: int) -> CellReference:
    """Seed 0: the test split; any other seed: training cells with the test split's type counts (the floor)."""
    from flowsci.domains.singlecell.metrics import match_composition

    dm.setup()
    test, train = dm.split_anndata("test"), dm.split_anndata("train")
    if seed == 0:
        return CellReference(test, train)
    return CellReference(match_composition(train, test, seed=seed), train, is_train=True)


def _datamodule() -> Any:
    from flowsci.domains.singlecell.data import SingleCellDataModule

    dm = SingleCellDataModule("pbmc68k", batch_size=64, val_fraction=0.1, test_fraction=0.2, seed=0)
    dm.setup()
    return dm


def _wbdit(dm: Any, width: int, block: str) -> Any:
    from flowsci.domains.singlecell.model import WBDiT

    big = width >= 512
    return WBDiT(
        dm.num_genes,
        dm.num_classes,
        patch=10 if big else 15,
        hidden=width,
        depth=3 if big else 2,
        heads=8 if big else 4,
        block=block,
    )


def _adamw(lr: float) -> Any:
    from functools import partial

    import torch

    return partial(torch.optim.AdamW, lr=lr, weight_decay=0.0)


def build_wbdit_flow(dm: Any, width: int = 128, block: str = "crate", prior: str = "normal") -> Any:
    """:class:`WhiteBoxFlow` with CRATE (or DiT) blocks and the given prior, its data statistics taken from ``dm``."""
    from flowsci.domains.singlecell.flow import WhiteBoxFlow

    lr = 1e-3 if width < 512 else 2e-4
    model = WhiteBoxFlow(_wbdit(dm, width, block), optimizer=_adamw(lr), sample_steps=20, prior=prior)
    model.set_metadata(dm.metadata())
    return model


def build_wbdit_ddpm(dm: Any, width: int = 128) -> Any:
    """The paper's DDPM with the WBDiT network."""
    from flowsci.domains.singlecell.flow import WhiteBoxDiffusion

    model = WhiteBoxDiffusion(_wbdit(dm, width, "crate"), optimizer=_adamw(1e-3 if width < 512 else 1e-4))
    model.set_metadata(dm.metadata())
    return model


def build_latent(dm: Any, n_pcs: int = 50) -> Any:
    """:class:`LatentFlow` with the core MLP (3 x 256, sinusoidal time) on ``n_pcs`` standardised PCs."""
    from flowsci.domains.singlecell.flow import LatentFlow
    from flowsci.nets import MLP

    net = MLP(dim=n_pcs, hidden=256, depth=3, time_dim=64, num_classes=dm.num_classes)
    model = LatentFlow(net, optimizer=_adamw(1e-3), sample_steps=20)
    model.set_metadata(dm.metadata())
    return model


def build_gaussian(dm: Any, n_pcs: int = 30) -> Any:
    """:class:`GaussianBaseline` fitted on the training cells."""
    from flowsci.domains.singlecell.flow import GaussianBaseline

    return GaussianBaseline(n_pcs).fit(dm)


def fit_reflow(model: Any, dm: Any, max_steps: int, device: Any, pairs: int = 1000, teacher_steps: int = 20) -> None:
    """One rectification in place: pairs from the model's own 20-step Euler solves, then ``max_steps`` on them."""
    import torch

    from flowsci.reflow import fit_on_pairs, generate_pairs

    labels = model.cell_labels(pairs, None, seed=123)
    coupling = generate_pairs(model, pairs, steps=teacher_steps, solver="euler", cond={"y": labels}, seed=1000)
    model.train()
    with torch.enable_grad():
        fit_on_pairs(model, coupling, max_steps, batch_size=64, trainer_kwargs=trainer_device(device))


def sample_cells(model: Any, request: SampleRequest, decoder: str = "lattice") -> Any:
    """Generate the held-out reference's type composition (DDIM for the DDPM); records the parameter count.

    ``decoder`` is how generated values become counts and ``X`` (:meth:`WhiteBoxFlow.to_anndata`).
    """
    from flowsci.domains.singlecell.flow import WhiteBoxDiffusion

    ref = request.reference
    heldout = ref.heldout if isinstance(ref, CellReference) else ref
    cells = dict(Counter(heldout.obs["cell_type"].astype(str)))
    solver = request.solver
    if isinstance(model, WhiteBoxDiffusion) and solver not in DIFFUSION_SAMPLERS:
        solver = "ddim"  # a flow solver name asked of the DDPM: its deterministic sampler
    sol = model.sample(request.num, steps=request.steps, solver=solver, seed=request.seed, cells=cells, decoder=decoder)
    sol.adata.uns["flowsci"]["params"] = int(sum(p.numel() for p in model.parameters()))
    return sol


def step_times(
    width: int = 128, batch: int = 64, repeats: int = 20, rounds: int = 3, seed: int = 0
) -> dict[str, float]:
    """Seconds per training step (forward, backward, AdamW) of the CRATE and DiT networks, timed interleaved.

    Both networks see the same batch of PBMC-sized inputs (765 genes, patches of 15, depth 2, 4 heads); the two are
    timed in alternating rounds so background load affects them alike. Returns the median seconds per step of
    each and their ratio (``dit / crate``).
    """
    import time

    import torch

    from flowsci.domains.singlecell.model import WBDiT

    torch.manual_seed(seed)
    x, t, y = torch.randn(batch, 765), torch.rand(batch), torch.randint(0, 10, (batch,))
    nets = {b: WBDiT(765, 10, patch=15, hidden=width, depth=2, heads=4, block=b) for b in ("crate", "dit")}
    opts = {b: torch.optim.AdamW(n.parameters(), 1e-3) for b, n in nets.items()}
    times: dict[str, list[float]] = {b: [] for b in nets}

    def step(b: str) -> None:
        loss = (nets[b](x, t, y) - x).pow(2).mean()
        opts[b].zero_grad()
        loss.backward()
        opts[b].step()

    for b in nets:
        step(b)  # warm-up
    for _ in range(rounds):
        for b in nets:
            t0 = time.perf_counter()
            for _ in range(repeats):
                step(b)
            times[b].append((time.perf_counter() - t0) / repeats)
    out = {f"{b}_s_per_step": float(np.median(v)) for b, v in times.items()}
    out.update({f"{b}_params": float(sum(p.numel() for p in n.parameters())) for b, n in nets.items()})
    out["dit_over_crate"] = out["dit_s_per_step"] / out["crate_s_per_step"]
    return out


def _postprocess(solution: Any) -> Any:
    return solution.adata


def score(samples: Any, reference: CellReference, markers: bool = True) -> dict[str, float]:
    """Every metric of :func:`~flowsci.domains.singlecell.metrics.evaluate` (PCs/classifier cached per reference)."""
    from flowsci.domains.singlecell.metrics import _aligned, _labels, _scores, _type_classifier, pca_basis

    genes = list(map(str, reference.heldout.var_names))
    if "basis" not in reference.cache:
        xf = _aligned(reference.train, genes, "train")
        basis = pca_basis(xf, 30)
        yf = _labels(reference.train, "cell_type", "train")
        reference.cache.update(basis=basis, clf=_type_classifier(xf, yf, basis))
    is_train = isinstance(samples, CellReference) and samples.is_train
    gen = samples.heldout if isinstance(samples, CellReference) else samples
    out, _ = _scores(
        gen,
        reference.heldout,
        genes,
        reference.cache["basis"],
        reference.cache["clf"],
        "cell_type",
        markers,
        20,
        0,
        is_train=is_train,
    )
    params = gen.uns.get("flowsci", {}).get("params") if hasattr(gen, "uns") else None
    out["params_k"] = float(params) / 1000 if params is not None else float("nan")
    return out


def spread(
    draw: Callable[[int], Any], reference: CellReference, draws: int = 10, markers: bool = False
) -> dict[str, tuple[float, float]]:
    """Mean and standard error of every :func:`score` over ``draws`` independent draws.

    One benchmark cell is one draw of as many cells as the reference holds, and ``knn_auc`` moves by about 0.02
    between draws, so rows are compared by their mean over draws.

    Args:
        draw: ``draw(seed) -> AnnData`` (generated cells, seeds ``0 .. draws-1``) or a :class:`CellReference`
            of real training cells (the floor).
        reference: The held-out cells scored against.
        draws: Number of draws (>= 2).
        markers: Also the marker metrics (slow).

    Returns:
        ``{metric: (mean, standard error)}``; the standard error is the draws' sample standard deviation divided
        by ``sqrt(draws)``.

    Raises:
        ValueError: ``draws`` < 2.

    """
    if draws < 2:
        raise ValueError(f"a standard error needs draws >= 2, got {draws}")
    rows = [score(draw(s), reference, markers=markers) for s in range(draws)]
    return {k: mean_se([r.get(k, np.nan) for r in rows]) for k in rows[0]}


def _plot(samples: Any, reference: CellReference, path: Any, title: str) -> None:
    from flowsci.domains.singlecell.metrics import plot_cells

    plot_cells(samples, reference.heldout, path, title=title)


def spec(suite: str = "quick") -> BenchmarkSpec:
    """The single-cell benchmark sized for ``suite`` (``smoke``, ``quick`` or ``full``)."""
    from functools import partial

    from flowsci.domains.singlecell.metrics import HIGHER_IS_BETTER

    if suite not in _SIZES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {sorted(_SIZES)}")
    size = _SIZES[suite]
    width, steps, nfe = size["width"], size["steps"], size["nfe"]
    wbdit = Method(
        "wbdit-flow",
        partial(build_wbdit_flow, width=width, block="crate"),
        description=f"WBDiT (CRATE blocks) flow, width {width}, Euler",
        train_steps=steps,
    )
    gaussian = Method(
        "gaussian-pca",
        build_gaussian,
        baseline=True,
        description="per-type diagonal Gaussian on 30 standardised PCs (sanity floor)",
        train_steps=0,
        nfe_grid=(1,),
    )
    latent = Method(
        "latent-mlp-flow",
        build_latent,
        description="flow matching on 50 standardised PCs, core MLP 3x256, Euler",
        train_steps=size["latent_steps"],
    )
    if suite == "smoke":
        methods = [wbdit, gaussian, latent]
    else:  # rows that reuse wbdit-flow's weights first, then the trained ones
        methods = [wbdit, gaussian]
        # the count decoder's ablation: the same weights / fit, cells decoded otherwise (no training)
        for decoder in ("round", "none"):
            methods += [
                Method(
                    f"wbdit-flow-{_DECODER_NAMES[decoder]}",
                    partial(build_wbdit_flow, width=width, block="crate"),
                    description=f"wbdit-flow's weights, {_DECODER_NAMES[decoder]} decoder",
                    weights_of="wbdit-flow",
                    sample=partial(sample_cells, decoder=decoder),
                    nfe_grid=(10, 50),
                ),
                Method(
                    f"gaussian-pca-{_DECODER_NAMES[decoder]}",
                    build_gaussian,
                    description=f"gaussian-pca, {_DECODER_NAMES[decoder]} decoder",
                    train_steps=0,
                    sample=partial(sample_cells, decoder=decoder),
                    nfe_grid=(1,),
                ),
            ]
        methods += [
            Method(
                "dit-flow",
                partial(build_wbdit_flow, width=width, block="dit"),
                description=f"DiT blocks (attention + 4x MLP) flow, width {width}, Euler (ablation)",
                train_steps=steps,
            ),
            Method(
                "wbdit-ddpm",
                partial(build_wbdit_ddpm, width=width),
                description="the paper's DDPM (T=1000, linear beta) with WBDiT, deterministic DDIM at NFE steps",
                train_steps=steps,
                nfe_grid=(*nfe, 100) if 100 not in nfe else nfe,
                solvers=("ddim",),
            ),
            latent,
            Method(
                "wbdit-reflow",
                partial(build_wbdit_flow, width=width, block="crate"),
                description="wbdit-flow rectified once (1k pairs at 20 NFE), 1-2 Euler steps",
                train_steps=size["reflow_steps"],
                init_from="wbdit-flow",
                fit=fit_reflow,
                nfe_grid=(1, 2),
            ),
            Method(
                "wbdit-flow-typeprior",
                partial(build_wbdit_flow, width=width, block="crate", prior="type"),
                description=f"WBDiT flow from the per-type Gaussian prior (prior='type'), width {width}, "
                f"{size['typeprior_steps']:,} steps, Euler",
                train_steps=size["typeprior_steps"],
            ),
        ]
    columns = {**HIGHER_IS_BETTER, "params_k": False}
    if not size["markers"]:
        columns = {k: v for k, v in columns.items() if not k.startswith("marker_")}
    n_test = len(_datamodule().test_idx)
    return BenchmarkSpec(
        name="singlecell",
        datamodule=_datamodule,
        reference_data=reference_data,
        methods=methods,
        metrics=[
            Metric(
                "singlecell",
                partial(score, markers=size["markers"]),
                higher_is_better=columns,
                description="W2/MMD/kNN-AUC on 30 PCs, per-gene correlations, classifier accuracy, markers",
            )
        ],
        num_samples=n_test,
        nfe_grid=nfe,
        solvers=("euler",),
        train_steps=steps,
        seed=0,
        trainer_kwargs={"gradient_clip_val": 1.0},
        sample=sample_cells,
        postprocess=_postprocess,
        primary_metric="knn_auc",
        references=REFERENCES,
        description=__doc__.split("\n\n")[1] if __doc__ else "",
        packages=("anndata", "scanpy", "scikit-learn"),
        noise_floor=True,
        sample_plot=_plot,
        warmup_samples=0,
    )
