"""Crystals: CrysBFN (periodic Bayesian flow) and torus flow matching for crystal structure prediction and ab initio
generation, with CDVAE/DiffCSP metrics and CIF output.

Example:
    >>> from flowsci.domains.crystals import CrysBFN
    >>> model = CrysBFN.from_checkpoint("crysbfn_csp.ckpt")  # doctest: +SKIP
    >>> structures = model.predict_structure("SrTiO3", num_samples=5, steps=10)  # doctest: +SKIP
    >>> structures[0].to(filename="SrTiO3.cif")  # doctest: +SKIP

Heavy dependencies (pymatgen, torch-geometric, smact, matminer) are the ``crystals`` extra.
"""

from typing import Any

from flowsci.contract import Domain
from flowsci.errors import require_extra

# the extra's packages, checked first: a missing one is one error naming `pip install 'flowsci[crystals]'`
require_extra("crystals", "pymatgen", "smact", "torch_geometric")

from flowsci.domains.crystals import metrics
from flowsci.domains.crystals.data import CrystalDataModule, read_structures, write_cif
from flowsci.domains.crystals.flow import CrysBFN, CrystalFlowMatching, CrystalSamples
from flowsci.domains.crystals.metrics import evaluate, plot_structures
from flowsci.domains.crystals.model import CSPNet

__all__ = [
    "DOMAIN",
    "CrysBFN",
    "CrystalFlowMatching",
    "CrystalSamples",
    "CSPNet",
    "CrystalDataModule",
    "evaluate",
    "metrics",
    "plot_structures",
    "read_structures",
    "write_cif",
]


def _reference(num: int) -> list[Any]:
    """The first ``num`` crystals of the shipped Perov-5 test subset."""
    return read_structures("perov_5_test_subset", limit=num)[0]


DOMAIN = Domain(
    name="crystals",
    module=CrysBFN,
    datamodule=CrystalDataModule,
    evaluate=evaluate,
    plot=plot_structures,
    reference=_reference,
    tiny_config="crystals/crysbfn_csp_tiny.yaml",
    extra="crystals",
    sample_args=("--num", "2", "--steps", "2", "--set", "composition=SrTiO3"),
    smoke_benchmark="crystals",
    modules=(CrystalFlowMatching,),
    ddp_strategy="ddp_find_unused_parameters_true",  # CSP leaves CSPNet's type head unused
)
"""The crystals domain as registered under the ``flowsci.domains`` entry point."""
