"""Single-cell RNA-seq generation: the White-Box Diffusion Transformer (CRATE blocks) as a flow, its DDPM, a latent
PCA flow and a per-type Gaussian floor, with AnnData in and out and honest generation metrics.

Example:
    >>> from flowsci.domains.singlecell import WhiteBoxFlow
    >>> model = WhiteBoxFlow.from_checkpoint("runs/lightning_logs/version_0/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> adata = model.generate({"CD14+ Monocyte": 200, "CD19+ B": 100}, steps=10)  # doctest: +SKIP

anndata and scanpy are the ``singlecell`` extra (``pip install 'flowsci[singlecell]'``).
"""

from __future__ import annotations

from typing import Any

from flowsci.contract import Domain
from flowsci.errors import require_extra

# the extra's packages, checked first: a missing one is one error naming `pip install 'flowsci[singlecell]'`
require_extra("singlecell", "anndata", "scanpy")

from flowsci.domains.singlecell.data import SingleCellDataModule, read_counts, synthetic_counts
from flowsci.domains.singlecell.flow import (
    CellSolution,
    GaussianBaseline,
    LatentFlow,
    WhiteBoxDiffusion,
    WhiteBoxFlow,
)
from flowsci.domains.singlecell.metrics import evaluate, plot_cells
from flowsci.domains.singlecell.model import WBDiT

__all__ = [
    "DOMAIN",
    "CellSolution",
    "GaussianBaseline",
    "LatentFlow",
    "SingleCellDataModule",
    "WBDiT",
    "WhiteBoxDiffusion",
    "WhiteBoxFlow",
    "evaluate",
    "plot_cells",
    "read_counts",
    "reference",
    "synthetic_counts",
]


def reference(num: int = 100) -> Any:
    """Real held-out cells shipped with the package: up to ``num`` cells of the PBMC68k-reduced test split (AnnData)."""
    import numpy as np

    dm = SingleCellDataModule("pbmc68k")
    dm.setup()
    n = len(dm.test_idx)
    rows = np.sort(np.random.default_rng(0).permutation(n)[: min(num, n)])
    return dm.split_anndata("test", rows)


DOMAIN = Domain(
    name="singlecell",
    module=WhiteBoxFlow,
    datamodule=SingleCellDataModule,
    evaluate=evaluate,
    plot=plot_cells,
    reference=reference,
    tiny_config="singlecell/wbdit_pbmc.yaml",
    extra="singlecell",
    sample_args=("--num", "8", "--steps", "2"),
    smoke_benchmark="singlecell",
    modules=(WhiteBoxDiffusion, LatentFlow, GaussianBaseline),
)
