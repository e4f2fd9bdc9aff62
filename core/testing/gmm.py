r"""Exact marginal velocity and score of an affine path to an isotropic Gaussian mixture: a reference flow.

For data :math:`p_1 = \sum_k \pi_k N(\mu_k, s_k^2 I)` and the affine path :math:`x_t = \alpha_t x_1 + \sigma_t x_0`
with :math:`x_0 \sim N(0, I)`, given component :math:`k` the marginal is :math:`x_t \sim N(\alpha_t\mu_k, c_k I)`,
:math:`c_k = \alpha_t^2 s_k^2 + \sigma_t^2`, and

.. math::
    E[x_1|x_t, k] = \mu_k + \frac{\alpha_t s_k^2}{c_k}(x_t - \alpha_t\mu_k),\qquad
    E[x_0|x_t, k] = \frac{\sigma_t}{c_k}(x_t - \alpha_t\mu_k),

so the marginal velocity is :math:`v_t(x) = \sum_k w_k(x)\,(\dot\alpha_t E[x_1|x,k] + \dot\sigma_t E[x_0|x,k])` with
posterior weights :math:`w_k(x) \propto \pi_k N(x; \alpha_t\mu_k, c_k I)`, and the score is
:math:`\nabla\log p_t(x) = -\sum_k w_k(x)\,(x - \alpha_t\mu_k)/c_k`. Components carry class labels: a label
restricts the mixture to its components (the exact conditional flow), the null label ``num_classes`` keeps all.
Samplers, guidance and inference-time scaling can be tested against this flow without training a network.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowsci.paths import AffinePath, CondOTPath

__all__ = ["GaussianMixtureFlow", "eight_gaussians_flow"]


class GaussianMixtureFlow:
    """The exact flow of an affine path from :math:`N(0, I)` to an isotropic Gaussian mixture in :math:`\\mathbb R^d`.

    Args:
        means: Component means ``[K, d]``.
        stds: Component standard deviations (scalar or ``[K]``; 0 gives point masses).
        weights: Mixture weights ``[K]`` (default uniform).
        labels: Class of each component ``[K]`` (default all 0).
        path: The affine path (default CondOT).

    Attributes:
        calls: Number of :meth:`velocity` evaluations so far (for NFE checks).

    """

    def __init__(
        self,
        means: Tensor,
        stds: Tensor | float = 0.1,
        weights: Tensor | None = None,
        labels: Tensor | None = None,
        path: AffinePath | None = None,
    ) -> None:
        k = means.shape[0]
        self.means = means.double()
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(k).clone()
        self.weights = (weights if weights is not None else torch.full((k,), 1.0 / k)).double()
        self.labels = labels if labels is not None else torch.zeros(k, dtype=torch.long)
        self.num_classes = int(self.labels.max()) + 1
        self.path = path if path is not None else CondOTPath()
        self.calls = 0

    def _posterior(self, x: Tensor, t: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Posterior weights ``[B, K]``, offsets ``[B, K, d]``, variances ``[B, K]`` and alpha, sigma ``[B, 1]``."""
        s = self.path.scheduler(t.double()[:, None])
        diff = x.double()[:, None, :] - s.alpha_t[:, :, None] * self.means[None].to(x.device)
        c = s.alpha_t**2 * self.stds[None].to(x.device) ** 2 + s.sigma_t**2
        logw = torch.log(self.weights)[None].to(x.device) - (diff**2).sum(-1) / (2 * c)
        logw = logw - 0.5 * x.shape[1] * torch.log(c)
        if y is not None:
            labels = self.labels.to(x.device)
            allowed = (labels[None, :] == y[:, None]) | (y[:, None] == self.num_classes)
            logw = logw.masked_fill(~allowed, -math.inf)
        return torch.softmax(logw, dim=1), diff, c, s.alpha_t, s.sigma_t

    def velocity(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Marginal velocity :math:`v_t(x)` (conditional on labels ``y`` ``[B]`` when given), ``[B, d]``."""
        self.calls += 1
        w, diff, c, alpha, sigma = self._posterior(x, t, y)
        s = self.path.scheduler(t.double()[:, None])
        stds2 = self.stds[None].to(x.device) ** 2
        e1 = self.means[None].to(x.device) + (alpha * stds2 / c)[..., None] * diff
        e0 = (sigma / c)[..., None] * diff
        v = s.d_alpha_t[..., None] * e1 + s.d_sigma_t[..., None] * e0
        return (w[..., None] * v).sum(1).to(x.dtype)

    def score(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        r"""Score :math:`\nabla_x \log p_t(x)`, ``[B, d]`` (needs :math:`c_k > 0`)."""
        w, diff, c, _, _ = self._posterior(x, t, y)
        return (-(w / c)[..., None] * diff).sum(1).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` data points ``[n, d]`` (float32) from the mixture."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k, None] * z).float()


def eight_gaussians_flow(
    radius: float = 4.0, std: float = 0.3, weights: Tensor | None = None, path: AffinePath | None = None
) -> GaussianMixtureFlow:
    """Eight Gaussians on a circle (component ``k`` at angle :math:`k\\pi/4`, class ``k mod 4``)."""
    angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return GaussianMixtureFlow(means, std, weights=weights, labels=torch.arange(8) % 4, path=path)
