"""Settings of the training-free proximity scores (``proximity:``): personalised PageRank, the
degree potential and Adamic-Adar, used as evaluation floors and as BLADE's pair features."""

from __future__ import annotations

from pydantic import Field

from recbatch.config import _Section


class ProximitySettings(_Section):
    """Personalised PageRank on the undirected training graph, as ``../shared/linkpred`` runs it."""

    restart: float = Field(0.15, gt=0, lt=1, description="restart probability of the walk (alpha)")
    iterations: int = Field(40, ge=1, description="power iterations per block of sources")
    potential_weight: float = Field(
        0.5,
        ge=0,
        description="ppr_potential: c in z(log PPR_u(v)) + c (phi_v - phi_u), phi the degree "
        "potential log((in + 1) / (out + 1))",
    )
    block_values: int = Field(
        1 << 22,
        ge=1024,
        description="values of one dense block of rows (sources x nodes) a task holds at once "
        "(PPR, path counts: about ten such blocks, 8 bytes each); bounds a task's memory "
        "whatever the catalogue's size",
    )
