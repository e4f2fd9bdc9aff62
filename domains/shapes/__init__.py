"""Shapes: Mosaic-SDF flow matching (Yariv et al., CVPR 2024) — meshes in, mosaics, a permutation-equivariant
transformer flow with class guidance, meshes out, point-cloud metrics.

Example:
    >>> from flowsci.domains.shapes import MosaicFlow, MosaicSDF, evaluate
    >>> flow = MosaicFlow.from_checkpoint("runs/lightning_logs/version_0/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> sol = flow.sample(8, steps=20, class_label="chair", guidance=2.0)  # doctest: +SKIP
    >>> sol.meshes[0].export("chair.obj")  # doctest: +SKIP

Heavy dependencies (trimesh, scikit-image, point-cloud-utils, rtree, dask) are the ``shapes`` extra.
"""

from __future__ import annotations

from flowsci.contract import Domain
from flowsci.errors import require_extra

# the extra's packages, checked first: a missing one is one error naming `pip install 'flowsci[shapes]'`
require_extra("shapes", "trimesh", "skimage", "point_cloud_utils")

from flowsci.domains.shapes.data import (
    CLASSES,
    ProceduralShape,
    ShapesDataModule,
    ShapeSet,
    read_mesh,
    sdf_oracle,
    shipped_meshes,
)
from flowsci.domains.shapes.flow import GridSDFFlow, MosaicFlow, PointCloudFlow, ShapeSolution, render_montage
from flowsci.domains.shapes.metrics import evaluate
from flowsci.domains.shapes.model import SetTransformer
from flowsci.domains.shapes.mosaic import MosaicSDF, fit_many

__all__ = [
    "CLASSES",
    "DOMAIN",
    "GridSDFFlow",
    "MosaicFlow",
    "MosaicSDF",
    "PointCloudFlow",
    "ProceduralShape",
    "SetTransformer",
    "ShapeSet",
    "ShapeSolution",
    "ShapesDataModule",
    "evaluate",
    "fit_many",
    "plot",
    "read_mesh",
    "reference",
    "sdf_oracle",
]


def reference(num: int) -> ShapeSet:
    """Up to ``num`` real held-out meshes shipped in ``sample_data/`` (normalised, unlabelled)."""
    files = shipped_meshes()[: max(0, int(num))]
    return ShapeSet([read_mesh(p) for p in files], None, (), [p.name for p in files])


def plot(samples: object, reference: object, path: str, title: str = "") -> object:
    """PNG montage of samples (top) against reference shapes (bottom)."""
    from flowsci.domains.shapes.metrics import _as_set

    return render_montage(_as_set(samples), _as_set(reference), path, title=title)


DOMAIN = Domain(
    name="shapes",
    module=MosaicFlow,
    datamodule=ShapesDataModule,
    evaluate=evaluate,
    plot=plot,
    reference=reference,
    tiny_config="shapes/msdf_procedural.yaml",
    extra="shapes",
    sample_args=("--num", "2", "--steps", "2", "--set", "resolution=32"),
    smoke_benchmark="shapes",
    modules=(GridSDFFlow, PointCloudFlow),
)
