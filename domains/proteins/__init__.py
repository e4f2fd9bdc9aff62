"""Proteins: ReQFlow backbone generation (frames, quaternion flow, IPA network, PDB out, metrics).

Public API::

    from flowsci.domains.proteins import ReQFlow, ProteinDataModule, Backbone, read_backbones, evaluate,
        plot_samples
"""

from flowsci.domains.proteins.data import Backbone, ProteinDataModule, read_backbones, write_pdb
from flowsci.domains.proteins.flow import BackboneSamples, ReQFlow
from flowsci.domains.proteins.metrics import evaluate, plot_samples
from flowsci.domains.proteins.model import IPAFrameNet

__all__ = [
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
