r"""WDNO's own generative model for parity: the same wavelet U-Net trained as a DDPM and sampled by DDIM.

The paper trains a denoising diffusion model (Ho et al., 2020) on the wavelet coefficients and samples it with DDIM
(Song et al., 2021); :class:`~flowsci.domains.pde.flow.WaveletFlow` replaces that by flow matching. This module
keeps everything else of :class:`WaveletFlow` (transform, per-band standardisation, in-painting of known channels,
the masked band-weighted loss, the condition image, re-simulation) and swaps the generative process:

* **schedule** (:class:`LinearBetaSchedule`): :math:`K` discrete steps with :math:`\beta_k` linear from
  :math:`\beta_1` to :math:`\beta_K` (DDPM: :math:`10^{-4}`, :math:`0.02`, :math:`K = 1000`),
  :math:`\bar\alpha_k = \prod_{j \le k}(1 - \beta_j)`, :math:`\bar\alpha_0 = 1`;
* **training**: :math:`k \sim U\{1..K\}`, :math:`x_k = \sqrt{\bar\alpha_k}\,x + \sqrt{1-\bar\alpha_k}\,\varepsilon`,
  the network predicts :math:`\varepsilon` (loss on the unknown channels); it sees the time
  :math:`t = 1 - k/K` (flowsci's convention: 0 = noise, 1 = data);
* **sampling** (DDIM): on ``steps`` evenly spaced indices :math:`K = k_0 > \dots > k_S = 0`,
  :math:`\hat x = (x_k - \sqrt{1-\bar\alpha_k}\,\hat\varepsilon)/\sqrt{\bar\alpha_k}` and
  :math:`x_{k'} = \sqrt{\bar\alpha_{k'}}\,\hat x + \sqrt{1-\bar\alpha_{k'}-\varsigma^2}\,\hat\varepsilon +
  \varsigma z`, :math:`\varsigma = \eta\sqrt{(1-\bar\alpha_{k'})/(1-\bar\alpha_k)}\sqrt{1-\bar\alpha_k/\bar\alpha_{k'}}`
  (:math:`\eta = 0`: deterministic DDIM; :math:`\eta = 1`: DDPM's posterior variance, WDNO's setting). NFE =
  ``steps``;
* **guidance** (control): WDNO adds the objective's gradient at the predicted clean sample to the noise prediction;
  here the clean prediction is moved directly, :math:`\hat x \leftarrow \hat x - h\,c\,\lambda(t)\,\nabla
  \mathcal J(\hat x)` with :math:`h = 1/S` (the same step a guided Euler step of :class:`WaveletFlow` makes, so the
  guidance scales are comparable), through the core's :class:`~flowsci.guidance.ObjectiveGuidance` (its
  ``weight`` and ``objective_grad``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowsci.domains.pde.flow import WaveletFlow
from flowsci.guidance import ObjectiveGuidance

__all__ = ["LinearBetaSchedule", "WaveletDDPM"]


class LinearBetaSchedule:
    """DDPM's discrete noise schedule with linear :math:`\\beta_k`.

    Args:
        num_steps: Diffusion steps :math:`K`.
        beta_start: :math:`\\beta_1`.
        beta_end: :math:`\\beta_K`.

    Attributes:
        alpha_bar: :math:`\\bar\\alpha_k` for :math:`k = 0..K` (float64 ``[K + 1]``, :math:`\\bar\\alpha_0 = 1`).

    """

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        if num_steps < 1 or not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(
                f"need num_steps >= 1 and 0 < beta_start <= beta_end < 1, got {num_steps}, {beta_start}, {beta_end}"
            )
        self.num_steps = int(num_steps)
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])

    def time(self, k: Tensor) -> Tensor:
        """Network time :math:`t = 1 - k/K` of step indices ``k`` (0 = noise, 1 = data)."""
        return 1.0 - k.to(torch.float64) / self.num_steps

    def indices(self, steps: int) -> list[int]:
        """``steps + 1`` DDIM indices from :math:`K` down to 0, evenly spaced (rounded)."""
        if steps < 1 or steps > self.num_steps:
            raise ValueError(f"DDIM steps must be in [1, {self.num_steps}], got {steps}")
        return [round(self.num_steps * (1 - i / steps)) for i in range(steps + 1)]


class WaveletDDPM(WaveletFlow):
    """:class:`~flowsci.domains.pde.flow.WaveletFlow` trained as a DDPM (noise prediction, linear betas) and
    sampled with DDIM (see the module docstring); ``wavelet="none"`` is the paper's physical-space DDPM.

    Args:
        net: The U-Net, as for :class:`WaveletFlow`.
        diffusion_steps: :math:`K`.
        beta_start: :math:`\\beta_1`.
        beta_end: :math:`\\beta_K`.
        eta: DDIM's :math:`\\eta` (0 = deterministic).
        clip: Bound on the predicted clean sample in standardised units (DDPM clips to the data range [-1, 1];
            ``None``: no clipping). It keeps the first steps, where :math:`\\bar\\alpha_K \\approx 4\\cdot 10^{-5}`
            amplifies noise-prediction errors 150-fold, finite.
        **kwargs: Every other argument of :class:`WaveletFlow` (``wavelet``, ``levels``, ``problem``, ``grid``...).

    """

    solvers: tuple[str, ...] = ("ddim",)

    def __init__(
        self,
        net: nn.Module,
        diffusion_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        eta: float = 0.0,
        clip: float | None = 10.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("sample_solver", "ddim")
        super().__init__(net, **kwargs)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.schedule = LinearBetaSchedule(diffusion_steps, beta_start, beta_end)
        self.eta = float(eta)
        self.clip = None if clip is None else float(clip)

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Masked noise-prediction loss :math:`\\lVert\\hat\\varepsilon(x_k, t_k) - \\varepsilon\\rVert^2`."""
        x1, kc, cond = self._training_example(batch, generator)
        eps = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        k = torch.randint(1, self.schedule.num_steps + 1, (x1.shape[0],), generator=generator, device=x1.device)
        ab = self.schedule.alpha_bar.to(x1.device)[k].to(x1.dtype).reshape(-1, *([1] * (x1.dim() - 1)))
        x_k = ab.sqrt() * x1 + (1 - ab).sqrt() * eps
        out = self.net(torch.where(kc, x1, x_k), self.schedule.time(k).to(x1.dtype), cond=cond)
        loss = self.masked_loss(out, eps, kc)
        return loss, {"loss": loss.detach()}

    def _integrate(
        self,
        x0: Tensor,
        cond: Tensor,
        known: Tensor,
        x_known: Tensor,
        steps: int,
        solver: str | None,
        guidance: ObjectiveGuidance | None,
        progress: bool | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, int]:
        """DDIM from :math:`x_K` = ``x0`` (known channels clean) to :math:`k = 0`; NFE = ``steps``."""
        ab_all = self.schedule.alpha_bar
        idx = self.schedule.indices(steps)
        x = x0
        for k, k_next in zip(idx[:-1], idx[1:], strict=True):
            ab, ab_next = float(ab_all[k]), float(ab_all[k_next])
            t = torch.full((x.shape[0],), float(self.schedule.time(torch.tensor(k))), device=x.device, dtype=x.dtype)
            eps = self.net(x, t, cond=cond)
            x_hat = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
            if self.clip is not None:  # DDPM's clipping of the clean prediction, here in standardised units
                x_hat = x_hat.clamp(-self.clip, self.clip)
            x_hat = torch.where(known, x_known, x_hat)
            eps = (x - ab**0.5 * x_hat) / (1 - ab) ** 0.5
            if guidance is not None:
                lam = guidance.weight(t)
                if bool((lam != 0).any()):
                    step = lam.reshape(-1, *([1] * (x.dim() - 1))) / steps
                    x_hat = x_hat - step * guidance.objective_grad(x_hat, cond=cond)
                    eps = (x - ab**0.5 * x_hat) / (1 - ab) ** 0.5
            var = 0.0
            if self.eta > 0 and k_next > 0:
                var = self.eta**2 * (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
            x = ab_next**0.5 * x_hat + max(1 - ab_next - var, 0.0) ** 0.5 * eps
            if var > 0:
                x = x + var**0.5 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = torch.where(known, x_known, x)
        return x, steps
