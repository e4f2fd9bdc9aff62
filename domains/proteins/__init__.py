"""Proteins: ReQFlow backbone generation (frames, quaternion flow, IPA network, PDB out, metrics).

Public API::

    from flowsci.domains.proteins import ReQFlow, ProteinDataModule, Backbone, read_backbones, evaluate,
        plot_samples
"""

from flowsci.contract import Domain
from flowsci.errors import require_extra

# the extra's packages, checked first: a missing one is one error naming `pip install 'flowsci[proteins]'`
require_extra("proteins", "gemmi", "tmtools", "pydssp")

from flowsci.domains.proteins.data import Backbone, ProteinDataModule, bundled_backbones, read_backbones, write_pdb
from flowsci.domains.proteins.flow import BackboneSamples, ReQFlow
from flowsci.domains.proteins.metrics import evaluate, plot_samples
from flowsci.domains.proteins.model import IPAFrameNet

__all__ = [
    "DOMAIN",
    "Backbone",
    "BackboneSamples",
    "IPAFrameNet",
    "ProteinDataModule",
    "ReQFlow",
    "evaluate",
    "plot_samples",
    "read_backbones",
    "write_pdb",
]


def _reference(num: int) -> list[Backbone]:
    """The first ``num`` of the 177 real chains shipped with the package."""
    return bundled_backbones()[:num]


DOMAIN = Domain(
    name="proteins",
    module=ReQFlow,
    datamodule=ProteinDataModule,
    evaluate=evaluate,
    plot=plot_samples,
    reference=_reference,
    tiny_config="proteins/qflow_tiny.yaml",
    extra="proteins",
    sample_args=("--steps", "2", "--set", "lengths=[12,16]"),
    smoke_benchmark="proteins",
)
"""The proteins domain as registered under the ``flowsci.domains`` entry point."""
