r"""General sample-quality metrics between two point clouds in :math:`\mathbb{R}^d`.

These are domain-agnostic distances between an empirical sample ``x`` (``[n, d]``) and a reference ``y``
(``[m, d]``) used by the toy benchmark and by :mod:`flowsci.benchmarks.core_vs_peers`; domains reuse them on
their own feature spaces. All functions are deterministic given ``seed`` and run on the inputs' device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["DEFAULT_BANDWIDTHS", "mmd2_rbf", "sliced_wasserstein2", "wasserstein2_exact"]

DEFAULT_BANDWIDTHS: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""RBF bandwidths of :func:`mmd2_rbf` (a sum over scales, robust to the data's scale)."""


def _as_2d(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty [n, d] tensor, got shape {tuple(x.shape)}")
    return x.to(torch.float64)


def _quantiles(sorted_proj: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""Empirical quantile functions of the rows of ``sorted_proj`` ``[P, n]`` at levels ``q`` ``[K]``.

    Uses the step-function inverse CDF :math:`F^{-1}(q) = x_{(\lceil nq \rceil)}`, the exact quantile function
    of the empirical measure, so :math:`W_2` computed from it is exact for empirical measures.
    """
    n = sorted_proj.shape[1]
    idx = torch.clamp(torch.ceil(q * n).long() - 1, 0, n - 1)
    return sorted_proj[:, idx]


def sliced_wasserstein2(x: torch.Tensor, y: torch.Tensor, num_projections: int = 512, seed: int = 0) -> float:
    r"""Sliced Wasserstein-2 distance between the empirical measures of ``x`` and ``y``.

    .. math::
        SW_2(\mu, \nu) = \Big( \mathbb{E}_{\theta \sim U(S^{d-1})}
        W_2^2(\theta_\# \mu, \theta_\# \nu) \Big)^{1/2},
        \qquad W_2^2(\mu_1, \nu_1) = \int_0^1 |F_\mu^{-1}(q) - F_\nu^{-1}(q)|^2 \, dq,

    estimated with ``num_projections`` random directions (seeded) and the exact 1-D distance between empirical
    measures (sorted projections; unequal sizes are merged on the union of their quantile breakpoints).
    For a translation :math:`y = x + c` it equals :math:`(\frac{1}{P}\sum_p (\theta_p \cdot c)^2)^{1/2}
    \approx |c| / \sqrt{d}`.

    Args:
        x: Samples ``[n, d]``.
        y: Reference samples ``[m, d]``.
        num_projections: Number of random directions ``P``.
        seed: Seed of the directions.

    Returns:
        :math:`SW_2` as a Python float.

    """
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    gen = torch.Generator().manual_seed(int(seed))
    theta = torch.randn(num_projections, x.shape[1], generator=gen, dtype=torch.float64).to(x.device)
    theta = theta / theta.norm(dim=1, keepdim=True)
    px = torch.sort(theta @ x.T, dim=1).values  # [P, n]
    py = torch.sort(theta @ y.T, dim=1).values  # [P, m]
    n, m = px.shape[1], py.shape[1]
    if n == m:
        w2sq = ((px - py) ** 2).mean(dim=1)
    else:
        # Both quantile functions are constant between the breakpoints {i/n} U {j/m}: integrate exactly.
        brk = torch.unique(torch.cat([torch.arange(1, n + 1) / n, torch.arange(1, m + 1) / m]).double())
        lo = torch.cat([torch.zeros(1, dtype=torch.float64), brk[:-1]])
        mid = ((lo + brk) / 2).to(x.device)
        width = (brk - lo).to(x.device)
        w2sq = (((_quantiles(px, mid) - _quantiles(py, mid)) ** 2) * width).sum(dim=1)
    return float(w2sq.mean().sqrt())


def mmd2_rbf(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
    unbiased: bool = False,
) -> float:
    r"""Squared maximum mean discrepancy with a sum of RBF kernels.

    .. math::
        k(a, b) = \frac{1}{|H|} \sum_{h \in H} \exp\Big(-\frac{|a - b|^2}{2 h^2}\Big),\qquad
        \mathrm{MMD}^2 = \mathbb{E}\,k(x, x') + \mathbb{E}\,k(y, y') - 2\,\mathbb{E}\,k(x, y).

    The default (biased, V-statistic) estimate is the exact MMD² between the two empirical measures and is
    :math:`\ge 0`; ``unbiased=True`` drops the diagonal terms (U-statistic, may be slightly negative).

    Args:
        x: Samples ``[n, d]``.
        y: Reference samples ``[m, d]``.
        bandwidths: Kernel bandwidths ``H``.
        unbiased: Use the unbiased U-statistic.

    Returns:
        The MMD² estimate as a Python float.

    """
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if unbiased and (x.shape[0] < 2 or y.shape[0] < 2):
        raise ValueError("the unbiased MMD needs at least 2 samples in x and in y")
    hs = torch.as_tensor(list(bandwidths), dtype=torch.float64, device=x.device)

    def kmean(a: torch.Tensor, b: torch.Tensor, drop_diag: bool) -> torch.Tensor:
        d2 = torch.cdist(a, b).pow(2)
        k = torch.exp(-d2[None] / (2 * hs[:, None, None] ** 2)).mean(0)
        if drop_diag:
            n = a.shape[0]
            return (k.sum() - k.diagonal().sum()) / (n * (n - 1))
        return k.mean()

    val = kmean(x, x, unbiased) + kmean(y, y, unbiased) - 2 * kmean(x, y, False)
    return float(val)


def wasserstein2_exact(x: torch.Tensor, y: torch.Tensor) -> float:
    r"""Exact Wasserstein-2 distance between two empirical measures (uniform weights) via POT's ``ot.emd2``.

    .. math:: W_2(\mu, \nu) = \Big(\min_{\pi \in \Pi(\mu, \nu)} \sum_{ij} \pi_{ij} |x_i - y_j|^2\Big)^{1/2}

    Cost is :math:`O(n^3)`: keep ``n, m`` in the low thousands.

    Args:
        x: Samples ``[n, d]``.
        y: Reference samples ``[m, d]``.

    Returns:
        :math:`W_2` as a Python float.

    """
    import ot  # POT is a core dependency; imported lazily to keep `import flowsci.benchmarks` light

    x, y = _as_2d(x, "x").cpu(), _as_2d(y, "y").cpu()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    cost = torch.cdist(x, y).pow(2).numpy()
    a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=torch.float64).numpy()
    b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=torch.float64).numpy()
    return float(ot.emd2(a, b, cost, numItermax=1_000_000)) ** 0.5
