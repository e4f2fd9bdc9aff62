r"""WDNO's own generative model for parity: the same wavelet U-Net trained as a DDPM and sampled by DDIM.

The paper trains a denoising diffusion model (Ho et al., 2020) on the wavelet coefficients and samples it with DDIM
(Song et al., 2021); :class:`~flowsci.domains.pde.flow.WaveletFlow` replaces that by flow matching. This module
keeps everything else of :class:`WaveletFlow` (transform, per-band standardisation, in-painting of known channels,
the masked band-weighted loss, the condition image, re-simulation) and swaps the generative process:

* **schedule** (:class:`LinearBetaSchedule`): :math:`K` discrete steps with :math:`\beta_k` linear from
  :math:`\beta_1` to :math:`\beta_K` (DDPM: :math:`10^{-4}`, :math:`0.02`, :math:`K = 1000`),
  :math:`\bar\alpha_k = \prod_{j \le k}(1 - \beta_j)`, :math:`\bar\alpha_0 = 1`;
* **training**: :math:`k \sim U\{1..K\}`, :math:`x_k = \sqrt{\bar\alpha_k}\,x + \sqrt{1-\bar\alpha_k}\,\varepsilon`,
  the network sees :math:`x_k` (known channels clean, as in sampling) at the time :math:`t = 1 - k/K` (flowsci's
  convention: 0 = noise, 1 = data) and predicts, by ``prediction``, :math:`v = \sqrt{\bar\alpha_k}\,\varepsilon -
  \sqrt{1-\bar\alpha_k}\,x` (default; Salimans & Ho, 2022), :math:`\varepsilon` (DDPM) or :math:`x`; the loss is
  the band-weighted squared error on the unknown channels;
* **why v by default**: the clean estimate of :math:`\varepsilon`-prediction, :math:`\hat x = (x_k -
  \sqrt{1-\bar\alpha_k}\,\hat\varepsilon)/\sqrt{\bar\alpha_k}`, multiplies the network's error by
  :math:`\sqrt{(1-\bar\alpha_k)/\bar\alpha_k}`, 157 at :math:`k = K` (:math:`\bar\alpha_K = 4\cdot10^{-5}`): at
  the quick benchmark's budget (800 steps) that row was unusable (relative L2 3.0 even with the clean estimate
  clipped to the data range, 7.8--10 unclipped), while :math:`\hat x = \sqrt{\bar\alpha_k}\,x_k -
  \sqrt{1-\bar\alpha_k}\,\hat v` never amplifies it (0.26--0.29 with the same network and steps; see
  ``docs/domains/pde.md``);
* **sampling** (DDIM): on ``steps`` evenly spaced indices :math:`K = k_0 > \dots > k_S = 0` (the first step at
  the last index, the last step returns the clean estimate), :math:`\hat x` from the network output, clipped
  (``clip``: per channel to the range of the training coefficients, as DDPM clips to the data range) and
  in-painted (known channels exact), :math:`\hat\varepsilon = (x_k - \sqrt{\bar\alpha_k}\,\hat x)/
  \sqrt{1-\bar\alpha_k}` and :math:`x_{k'} = \sqrt{\bar\alpha_{k'}}\,\hat x + \sqrt{1-\bar\alpha_{k'}-\varsigma^2}
  \,\hat\varepsilon + \varsigma z`, :math:`\varsigma = \eta\sqrt{(1-\bar\alpha_{k'})/(1-\bar\alpha_k)}
  \sqrt{1-\bar\alpha_k/\bar\alpha_{k'}}` (:math:`\eta = 0`: deterministic DDIM; :math:`\eta = 1`: DDPM's
  posterior variance, WDNO's setting). NFE = ``steps``;
* **guidance** (control): deterministic DDIM is exactly the Euler method of the rectified flow
  :math:`x_\tau = (1-\tau)\varepsilon + \tau x` in the rescaled state :math:`x_\tau = x_k/(\sqrt{\bar\alpha_k} +
  \sqrt{1-\bar\alpha_k})` at the times :math:`\tau_k = \sqrt{\bar\alpha_k}/(\sqrt{\bar\alpha_k}+\sqrt{1-\bar\alpha_k})`
  (velocity :math:`(\hat x - x_\tau)/(1-\tau)`), so guidance is the flow's: the velocity is lowered by
  :math:`c\,\lambda(\tau)\nabla\mathcal J(\hat x)` (the core's :class:`~flowsci.guidance.ObjectiveGuidance`, its
  ``weight`` and ``objective_grad``), i.e. the clean estimate moves by :math:`-(1-\tau_k)\,c\,\lambda(\tau_k)
  \nabla\mathcal J(\hat x)`, and each step descends :math:`\mathcal J` by :math:`(\tau_{k'}-\tau_k)\,c\,\lambda`
  times its gradient, as a guided Euler step of :class:`WaveletFlow` does: the guidance scales are comparable and
  the total guidance does not depend on the number of steps. (WDNO adds the gradient to the noise prediction
  instead; an earlier version here moved :math:`\hat x` by :math:`c\lambda/S`, which moves the sample by only
  :math:`(\tau_{k'}-\tau_k)/(1-\tau_k)` of that, so the guidance faded as the steps grew.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowsci.domains.pde.flow import WaveletFlow
from flowsci.guidance import ObjectiveGuidance

__all__ = ["PREDICTIONS", "LinearBetaSchedule", "WaveletDDPM"]


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


PREDICTIONS = ("eps", "x0", "v")
"""What the network predicts: the noise (DDPM), the clean sample, or :math:`v` (Salimans & Ho, 2022)."""


class WaveletDDPM(WaveletFlow):
    """:class:`~flowsci.domains.pde.flow.WaveletFlow` trained as a DDPM (linear betas) and sampled with DDIM
    (see the module docstring); ``wavelet="none"`` is the paper's physical-space DDPM.

    Args:
        net: The U-Net, as for :class:`WaveletFlow`.
        diffusion_steps: :math:`K`.
        beta_start: :math:`\\beta_1`.
        beta_end: :math:`\\beta_K`.
        eta: DDIM's :math:`\\eta` (0 = deterministic).
        prediction: The network's target: ``"v"`` (default, :math:`v = \\sqrt{\\bar\\alpha}\\,\\varepsilon -
            \\sqrt{1-\\bar\\alpha}\\,x`), ``"eps"`` (DDPM's noise prediction) or ``"x0"`` (the clean sample).
        clip: Bound on the predicted clean sample :math:`\\hat x` in the model's (scaled) coordinates: ``"data"``
            (default) clips each channel to the range of the training coefficients (DDPM clips to the data range
            [-1, 1]), a number ``c`` to :math:`[-c, c]`, ``None`` not at all.
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
        prediction: str = "v",
        clip: float | str | None = "data",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("sample_solver", "ddim")
        super().__init__(net, **kwargs)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if isinstance(clip, str) and clip != "data":
            raise ValueError(f"clip must be 'data', a positive number or None, got {clip!r}")
        if isinstance(clip, (int, float)) and not clip > 0:
            raise ValueError(f"clip must be 'data', a positive number or None, got {clip!r}")
        self.schedule = LinearBetaSchedule(diffusion_steps, beta_start, beta_end)
        self.eta = float(eta)
        self.prediction = prediction
        self.clip = clip if clip is None or isinstance(clip, str) else float(clip)
        self.data_range: Tensor | None = None  # [2, C]: min and max of the scaled training coefficients

    # ------------------------------------------------------------------------------------------- statistics
    def get_extra_state(self) -> Tensor:
        """Per-band statistics and the coefficient range, ``[4, C]`` (mean, std, min, max; float64)."""
        stats = super().get_extra_state()
        if stats.numel() == 0 or self.data_range is None:
            return stats
        return torch.cat([stats, self.data_range.to(torch.float64).cpu()])

    def set_extra_state(self, state: Any) -> None:
        """Restore the state of :meth:`get_extra_state` (a ``[2, C]`` state has no range: clipping to ``"data"``
        then raises at sampling).
        """
        s = torch.as_tensor(state, dtype=torch.float64)
        super().set_extra_state(s[:2])
        self.data_range = s[2:4].clone() if s.dim() == 2 and s.shape[0] == 4 else None

    def fit_statistics(self, u: Tensor, f: Tensor) -> None:
        """Per-band statistics (as :class:`WaveletFlow`) and the per-channel range of the scaled coefficients of
        ``u [n, Nt+1, Nx]``, ``f [n, Nt, Nx]``.
        """
        super().fit_statistics(u, f)
        with torch.no_grad():
            c = self.encode(u.double(), f.double() if f is not None else None)
            axes = (0, *range(2, c.dim()))
            self.data_range = torch.stack([c.amin(dim=axes), c.amax(dim=axes)])

    def _clip(self, x_hat: Tensor) -> Tensor:
        """``x_hat`` clipped to the training range per channel (``clip="data"``), to :math:`\\pm` ``clip`` or not."""
        if self.clip is None:
            return x_hat
        if isinstance(self.clip, float):
            return x_hat.clamp(-self.clip, self.clip)
        if self.data_range is None:
            raise RuntimeError(
                f"{type(self).__name__}(clip='data') has no coefficient range: fit it with a PDEDataModule or call "
                "fit_statistics(u, f) first"
            )
        lo, hi = (self._per_channel(r.to(x_hat)) for r in self.data_range)
        return torch.maximum(torch.minimum(x_hat, hi), lo)

    # ------------------------------------------------------------------------------------------- process
    def _alpha_bar(self, k: Tensor, like: Tensor) -> Tensor:
        """:math:`\\bar\\alpha_k` ``[B, 1, ...]`` broadcastable over ``like``."""
        ab = self.schedule.alpha_bar.to(like.device)[k].to(like.dtype)
        return ab.reshape(-1, *([1] * (like.dim() - 1)))

    def target(self, x1: Tensor, eps: Tensor, ab: Tensor) -> Tensor:
        """The network's training target for clean ``x1``, noise ``eps`` at :math:`\\bar\\alpha` = ``ab``."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x1
        return ab.sqrt() * eps - (1 - ab).sqrt() * x1

    def clean_estimate(self, out: Tensor, x: Tensor, ab: Tensor | float) -> Tensor:
        """The clean sample :math:`\\hat x` implied by the network output ``out`` at ``x`` = :math:`x_k`."""
        ab = torch.as_tensor(ab, dtype=x.dtype, device=x.device)
        if self.prediction == "eps":
            return (x - (1 - ab).sqrt() * out) / ab.sqrt()
        if self.prediction == "x0":
            return out
        return ab.sqrt() * x - (1 - ab).sqrt() * out

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Masked, band-weighted squared error of the prediction (:meth:`target`) on the unknown channels."""
        x1, kc, cond = self._training_example(batch, generator)
        eps = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        k = torch.randint(1, self.schedule.num_steps + 1, (x1.shape[0],), generator=generator, device=x1.device)
        ab = self._alpha_bar(k, x1)
        x_k = ab.sqrt() * x1 + (1 - ab).sqrt() * eps
        out = self.net(torch.where(kc, x1, x_k), self.schedule.time(k).to(x1.dtype), cond=cond)
        loss = self.masked_loss(out, self.target(x1, eps, ab), kc)
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
            x_hat = self._clip(self.clean_estimate(self.net(x, t, cond=cond), x, ab))
            x_hat = torch.where(known, x_known, x_hat)
            if guidance is not None:  # the flow's guided Euler step in the rescaled frame (module docstring)
                t_flow = ab**0.5 / (ab**0.5 + (1 - ab) ** 0.5)
                lam = guidance.weight(torch.full_like(t, t_flow))
                if bool((lam != 0).any()):
                    step = lam.reshape(-1, *([1] * (x.dim() - 1))) * (1 - t_flow)
                    x_hat = x_hat - step * guidance.objective_grad(x_hat, cond=cond)
            eps = (x - ab**0.5 * x_hat) / (1 - ab) ** 0.5  # the noise consistent with the (clipped) clean estimate
            var = 0.0
            if self.eta > 0 and k_next > 0:
                var = self.eta**2 * (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
            x = ab_next**0.5 * x_hat + max(1 - ab_next - var, 0.0) ** 0.5 * eps
            if var > 0:
                x = x + var**0.5 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = torch.where(known, x_known, x)
        return x, steps
