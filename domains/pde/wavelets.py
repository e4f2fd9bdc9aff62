r"""An exact, size-preserving, differentiable periodised discrete wavelet transform (DWT) in torch.

WDNO represents a whole space-time trajectory by its separable DWT over (t, x) (or (t, y, x)). On power-of-two
grids we want PyWavelets' ``mode="periodization"`` (each level halves every axis exactly, no boundary padding),
which ptwt (checked with 1.0.1) does not offer: ``wavedec``/``wavedec2``/``wavedec3`` raise for
``"periodization"``, their ``"periodic"`` mode grows each axis to :math:`\lfloor (n + L - 1)/2\rfloor`, and the
size-preserving ``MatrixWavedec`` uses boundary wavelets (``boundary="qr"``), not periodisation. We therefore
build, once per (wavelet, length), the analysis matrix :math:`A` of one periodised level from PyWavelets itself
(columns = transforms of unit vectors, float64) and apply it with a batched matrix product; the synthesis matrix
:math:`S` comes from ``pywt.idwt`` the same way (:math:`S = A^{-1}`, and :math:`S = A^\top` for orthogonal
wavelets). This is exact by construction (agreement with ``pywt`` to 1e-12 in float64 is tested), works for every
discrete wavelet PyWavelets knows (Haar, Daubechies, biorthogonal...), and at
our lengths (32--512) the dense product is as fast as a strided convolution on a CPU.

One level along ``d`` axes splits each channel into :math:`2^d` sub-bands (``"a"``/``"d"`` per axis, in
``pywt.dwtn`` key order: ``aa, ad, da, dd`` for 2 axes, first axis most significant), stacked as channels. A
``level``-:math:`J` transform applies the level to every sub-band again (a full wavelet-packet tree), so all
:math:`2^{dJ}` sub-bands have the same size :math:`N/2^J` and stack as channels of one image, as the U-Net needs.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
from torch import Tensor

from flowsci.errors import InputError, require

__all__ = ["WaveletTransform", "analysis_matrix", "band_names", "synthesis_matrix"]


@functools.lru_cache(maxsize=64)
def _matrices(wavelet: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    pywt = require("pywt", "pde")
    if n < 2 or n % 2:
        raise InputError("grid", f"the periodised wavelet transform needs an even length >= 2, got {n}")
    try:
        w = pywt.Wavelet(wavelet)
    except ValueError as err:
        raise InputError("wavelet", f"unknown discrete wavelet {wavelet!r} ({err})") from err
    eye = np.eye(n)
    ca, cd = pywt.dwt(eye, w, mode="periodization", axis=-1)  # row i = transform of e_i, [n, n/2] each
    analysis = np.concatenate([ca, cd], axis=1).T  # [n, n]: coefficients = A @ x
    half = n // 2
    synth = np.empty((n, n))
    for j in range(n):  # column j = reconstruction of the j-th unit coefficient vector
        a, d = np.zeros(half), np.zeros(half)
        (a if j < half else d)[j % half] = 1.0
        synth[:, j] = pywt.idwt(a, d, w, mode="periodization")
    return analysis, synth


def analysis_matrix(wavelet: str, n: int) -> np.ndarray:
    """One periodised analysis level as an ``[n, n]`` matrix: ``A @ x = concat(approx, detail)`` (float64)."""
    return _matrices(wavelet, n)[0].copy()


def synthesis_matrix(wavelet: str, n: int) -> np.ndarray:
    """The inverse of :func:`analysis_matrix`, from ``pywt.idwt`` (float64 ``[n, n]``)."""
    return _matrices(wavelet, n)[1].copy()


def band_names(ndim: int, level: int) -> list[str]:
    """Names of the :math:`2^{d J}` packet sub-bands in channel order, e.g. ``["aa", "ad", "da", "dd"]``.

    Deeper levels append per level with a ``/`` (``"aa/dd"`` = ``dd`` band of the level-1 ``aa`` band).
    """
    one = ["".join(p) for p in itertools.product("ad", repeat=ndim)]
    names = [""]
    for _ in range(level):
        names = [f"{n}/{b}" if n else b for n in names for b in one]
    return names


class WaveletTransform:
    """Separable periodised DWT over the trailing ``ndim`` axes, ``level`` packet levels, bands as channels.

    ``forward``: ``[B, C, *S] -> [B, C * 2**(ndim*level), *(S / 2**level)]`` (channels field-major: the bands of
    input channel ``c`` are ``c * nb ... (c+1) * nb - 1``); ``inverse`` undoes it. Both are linear, exact and
    differentiable. ``wavelet="none"`` is the identity (the physical-space baseline).

    Args:
        wavelet: A PyWavelets discrete wavelet name (``"haar"``, ``"db4"``, ``"bior2.4"``...) or ``"none"``.
        level: Packet levels :math:`J \\ge 1`.
        ndim: Number of trailing axes transformed (2 for (t, x), 3 for (t, y, x)).

    """

    def __init__(self, wavelet: str = "haar", level: int = 1, ndim: int = 2) -> None:
        if wavelet != "none" and (isinstance(level, bool) or not isinstance(level, int) or level < 1):
            raise InputError("levels", f"must be a whole number >= 1, got {level!r}")
        if ndim < 1:
            raise InputError("ndim", f"must be >= 1, got {ndim}")
        self.wavelet, self.level, self.ndim = wavelet, (0 if wavelet == "none" else level), ndim
        if wavelet != "none":
            _matrices(wavelet, 2)  # validates the name early
        self._cache: dict[tuple[int, str, torch.dtype, bool], Tensor] = {}

    @property
    def bands(self) -> int:
        """Sub-bands per input channel, :math:`2^{d J}`."""
        return 2 ** (self.ndim * self.level)

    def check_shape(self, shape: tuple[int, ...] | list[int], source: str = "grid") -> None:
        """Raise :class:`InputError` unless every transformed axis is divisible by :math:`2^J`."""
        factor = 2**self.level
        spatial = tuple(shape)[-self.ndim :]
        if any(s % factor or s < factor for s in spatial):
            raise InputError(
                source,
                f"axes {spatial} must be multiples of 2**levels = {factor} for the periodised wavelet transform "
                "(use power-of-two grids, e.g. 32 time steps x 128 points)",
            )

    def _matrix(self, n: int, x: Tensor, inverse: bool) -> Tensor:
        key = (n, str(x.device), x.dtype, inverse)
        if key not in self._cache:
            a, s = _matrices(self.wavelet, n)
            self._cache[key] = torch.as_tensor(s if inverse else a, dtype=x.dtype, device=x.device)
        return self._cache[key]

    def _apply(self, x: Tensor, axis: int, inverse: bool) -> Tensor:
        m = self._matrix(x.shape[axis], x, inverse)
        return torch.matmul(x.movedim(axis, -1), m.T).movedim(-1, axis)

    def _level_forward(self, x: Tensor) -> Tensor:
        # x: [B, C, *S]; split each axis into (approx, detail) halves -> [B, C, 2, ..., 2, *S/2] -> channels
        b, c = x.shape[:2]
        spatial = list(x.shape[2:])
        for i in range(self.ndim):
            axis = x.dim() - self.ndim + i
            x = self._apply(x, axis, inverse=False)
        # reshape each transformed axis n -> (2, n/2) and move the 2's next to the channel axis
        shape = [b, c]
        for s in spatial:
            shape += [2, s // 2]
        x = x.reshape(shape)
        perm = [0, 1] + [2 + 2 * i for i in range(self.ndim)] + [3 + 2 * i for i in range(self.ndim)]
        return x.permute(perm).reshape(b, c * 2**self.ndim, *[s // 2 for s in spatial])

    def _level_inverse(self, y: Tensor) -> Tensor:
        nb = 2**self.ndim
        b, cb = y.shape[:2]
        half = list(y.shape[2:])
        y = y.reshape(b, cb // nb, *([2] * self.ndim), *half)
        perm = [0, 1]
        for i in range(self.ndim):
            perm += [2 + i, 2 + self.ndim + i]
        y = y.permute(perm).reshape(b, cb // nb, *[2 * s for s in half])
        for i in range(self.ndim):
            axis = y.dim() - self.ndim + i
            y = self._apply(y, axis, inverse=True)
        return y

    def forward(self, x: Tensor) -> Tensor:
        """Coefficients of ``x`` ``[B, C, *S]`` -> ``[B, C * bands, *(S / 2**level)]``."""
        self.check_shape(x.shape)
        for _ in range(self.level):
            x = self._level_forward(x)
        return x

    def inverse(self, y: Tensor) -> Tensor:
        """Field from coefficients ``[B, C * bands, *S']`` -> ``[B, C, *(S' * 2**level)]``."""
        for _ in range(self.level):
            y = self._level_inverse(y)
        return y

    __call__ = forward

    def __repr__(self) -> str:
        return f"WaveletTransform(wavelet={self.wavelet!r}, level={self.level}, ndim={self.ndim})"
