r"""Networks of the PDE domain: a U-Net over (t, x) or (t, y, x) images (wavelet coefficients or physical fields).

The U-Net follows the DDPM/ADM design WDNO uses (residual blocks with GroupNorm and SiLU, a sinusoidal time
embedding added in every block, stride-2 down-sampling, nearest up-sampling, skip connections), written for
2D or 3D images (``dims``). It is fully convolutional, so the same weights run on larger grids (the
multi-resolution refinement model relies on that).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowsci.nets import SinusoidalEmbedding

__all__ = ["FNO2d", "SpectralConv2d", "UNet"]


def _conv(dims: int) -> type[nn.Module]:
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb: int, dims: int, groups: int) -> None:
        super().__init__()
        conv = _conv(dims)
        self.norm1 = nn.GroupNorm(_groups(c_in, groups), c_in)
        self.conv1 = conv(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out, groups), c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(e)[(...,) + (None,) * (x.dim() - 2)]
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """U-Net ``net(x_t, t, cond=None)`` predicting a field shaped like ``x_t``.

    Args:
        in_channels: Channels of ``x_t`` (and of the output).
        cond_channels: Channels of the conditioning image ``cond`` (concatenated to ``x_t``; 0 for none).
        width: Channels of the first level.
        mults: Channel multipliers per level (each further level halves every axis).
        num_res: Residual blocks per level.
        time_dim: Size of the sinusoidal time embedding.
        dims: 2 (images ``[B, C, H, W]``) or 3 (volumes ``[B, C, D, H, W]``).
        groups: GroupNorm groups.

    Shapes:
        ``x_t``: ``[B, in_channels, *S]`` with every axis of ``S`` divisible by ``2**(len(mults) - 1)``;
        ``t``: ``[B]`` in [0, 1]; ``cond``: ``[B, cond_channels, *S]``; output ``[B, in_channels, *S]``.

    """

    def __init__(
        self,
        in_channels: int = 8,
        cond_channels: int = 0,
        width: int = 32,
        mults: Sequence[int] = (1, 2, 4),
        num_res: int = 1,
        time_dim: int = 64,
        dims: int = 2,
        groups: int = 8,
    ) -> None:
        super().__init__()
        if dims not in (1, 2, 3):
            raise ValueError(f"UNet dims must be 1, 2 or 3, got {dims}")
        self.config = {
            "in_channels": in_channels,
            "cond_channels": cond_channels,
            "width": width,
            "mults": list(mults),
            "num_res": num_res,
            "time_dim": time_dim,
            "dims": dims,
            "groups": groups,
        }
        conv = _conv(dims)
        emb = 4 * width
        self.time = nn.Sequential(
            SinusoidalEmbedding(time_dim), nn.Linear(time_dim, emb), nn.SiLU(), nn.Linear(emb, emb)
        )
        self.inp = conv(in_channels + cond_channels, width, 3, padding=1)
        chans = [width * m for m in mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [width]
        c = width
        for i, ch in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(num_res):
                blocks.append(_ResBlock(c, ch, emb, dims, groups))
                c = ch
                skips.append(c)
            self.down.append(blocks)
            self.downsample.append(conv(c, c, 3, stride=2, padding=1) if i < len(chans) - 1 else nn.Identity())
            if i < len(chans) - 1:
                skips.append(c)
        self.mid = nn.ModuleList([_ResBlock(c, c, emb, dims, groups), _ResBlock(c, c, emb, dims, groups)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(num_res + 1):
                blocks.append(_ResBlock(c + skips.pop(), ch, emb, dims, groups))
                c = ch
            self.up.append(blocks)
            self.upsample.append(
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv(c, c, 3, padding=1))
                if i > 0
                else nn.Identity()
            )
        self.out = nn.Sequential(nn.GroupNorm(_groups(c, groups), c), nn.SiLU(), conv(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.levels = len(chans)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Predict for ``x`` ``[B, C, *S]`` at times ``t`` ``[B]`` with conditioning image ``cond``."""
        factor = 2 ** (self.levels - 1)
        if any(s % factor for s in x.shape[2:]):
            raise ValueError(f"UNet: spatial shape {tuple(x.shape[2:])} must be divisible by {factor}")
        if cond is not None:
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        elif self.config["cond_channels"]:
            x = torch.cat([x, x.new_zeros(x.shape[0], self.config["cond_channels"], *x.shape[2:])], dim=1)
        e = self.time(t.reshape(-1).to(x.dtype).expand(x.shape[0]))
        h = self.inp(x)
        hs = [h]
        for blocks, down in zip(self.down, self.downsample, strict=True):
            for blk in blocks:
                h = blk(h, e)
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        for blk in self.mid:
            h = blk(h, e)
        for blocks, up in zip(self.up, self.upsample, strict=True):
            for blk in blocks:
                h = blk(torch.cat([h, hs.pop()], dim=1), e)
            h = up(h)
        return self.out(h)


class SpectralConv2d(nn.Module):
    """Fourier layer of the FNO (Li et al., 2021): keep the lowest ``modes`` rfft2 modes, mix channels per mode.

    Written here because ``neuraloperator`` 2.0 pulls wandb, tensorly and more for a ~20-line layer.

    Args:
        channels: Input and output channels.
        modes: Kept modes along (t, x) (the second is counted on the rfft half-spectrum).

    """

    def __init__(self, channels: int, modes: Sequence[int]) -> None:
        super().__init__()
        self.modes = (int(modes[0]), int(modes[1]))
        scale = 1.0 / (channels * channels)
        shape = (2, channels, channels, *self.modes)  # the positive and negative first-axis modes
        self.weight = nn.Parameter(scale * torch.randn(*shape, dtype=torch.cfloat))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, T, X] -> [B, C, T, X]``."""
        t, n = x.shape[-2:]
        m1, m2 = min(self.modes[0], t // 2), min(self.modes[1], n // 2 + 1)
        xh = torch.fft.rfft2(x)
        out = torch.zeros_like(xh)
        w = self.weight
        out[..., :m1, :m2] = torch.einsum("bitx,iotx->botx", xh[..., :m1, :m2], w[0, :, :, :m1, :m2])
        out[..., -m1:, :m2] = torch.einsum("bitx,iotx->botx", xh[..., -m1:, :m2], w[1, :, :, :m1, :m2])
        return torch.fft.irfft2(out, s=(t, n))


class FNO2d(nn.Module):
    """Fourier neural operator over (t, x) images: lift, ``layers`` x (spectral conv + 1x1 conv, GELU), project.

    The deterministic operator baseline: maps ``[u0 tiled over time, f, t-grid, x-grid]`` to ``u_{1..Nt}``.

    Args:
        in_channels: Input channels (the coordinates are appended inside).
        out_channels: Output channels.
        width: Hidden channels.
        modes: Fourier modes kept along (t, x).
        layers: Fourier layers.

    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        width: int = 32,
        modes: Sequence[int] = (8, 16),
        layers: int = 4,
    ) -> None:
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "width": width,
            "modes": list(modes),
            "layers": layers,
        }
        self.lift = nn.Conv2d(in_channels + 2, width, 1)
        self.spectral = nn.ModuleList([SpectralConv2d(width, modes) for _ in range(layers)])
        self.pointwise = nn.ModuleList([nn.Conv2d(width, width, 1) for _ in range(layers)])
        self.project = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.GELU(), nn.Conv2d(2 * width, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_channels, T, X] -> [B, out_channels, T, X]``."""
        b, _, t, n = x.shape
        gt = torch.linspace(0, 1, t, device=x.device, dtype=x.dtype)[None, None, :, None].expand(b, 1, t, n)
        gx = torch.linspace(0, 1, n, device=x.device, dtype=x.dtype)[None, None, None, :].expand(b, 1, t, n)
        h = self.lift(torch.cat([x, gt, gx], dim=1))
        for i, (spec, pw) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            h = spec(h) + pw(h)
            if i < len(self.spectral) - 1:
                h = torch.nn.functional.gelu(h)
        return self.project(h)
