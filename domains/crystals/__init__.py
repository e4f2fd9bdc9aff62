"""Crystals: CrysBFN (periodic Bayesian flow) and torus flow matching for crystal structure prediction and ab initio
generation, with CDVAE/DiffCSP metrics and CIF output.

Example:
    >>> from flowsci.domains.crystals import CrysBFN
    >>> model = CrysBFN.load("crysbfn_csp.ckpt")  # doctest: +SKIP
    >>> structures = model.predict_structure("SrTiO3", num_samples=5, steps=10)  # doctest: +SKIP
    >>> structures[0].to(filename="SrTiO3.cif")  # doctest: +SKIP

Heavy dependencies (pymatgen, torch-geometric, smact, matminer) are the ``crystals`` extra.
"""

from flowsci.domains.crystals import metrics
from flowsci.domains.crystals.data import CrystalDataModule, read_structures, write_cif
from flowsci.domains.crystals.flow import CrysBFN, CrystalFlowMatching
from flowsci.domains.crystals.model import CSPNet

__all__ = ["CrysBFN", "CrystalFlowMatching", "CSPNet", "CrystalDataModule", "read_structures", "write_cif", "metrics"]
