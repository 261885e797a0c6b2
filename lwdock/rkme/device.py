"""Where RKME fits run: the CPU (numpy tiles) or a GPU that torch sees (torch tiles).

`resolve_device("auto")` is CUDA when `torch.cuda.is_available()`, else the CPU; "cpu" and
"cuda[:N]" choose explicitly (a CUDA device that torch does not see is an InvalidArgument on
the `device` field). On the CPU the table fit keeps its numpy kernel tiles (faster there than
torch's for these shapes); on a GPU its passes over the data (`TorchTiles`) and the image
fitter's feature network run on the device, in float64 for the table kernel sums so results
agree with the CPU's to rounding.
"""

from __future__ import annotations

import os
import sys
from functools import cache

import numpy as np

from lwdock.errors import InvalidArgument

DEVICE_CHOICES = ("auto", "cpu", "cuda")


@cache
def _torch():  # type: ignore[no-untyped-def]
    import torch  # imported on first use: table fits on the CPU never need it

    return torch


def cuda_available() -> bool:
    """Whether torch sees a CUDA device. Without an NVIDIA driver on the host (no
    /dev/nvidiactl) and torch not yet imported, False without importing torch (seconds)."""
    if "torch" not in sys.modules and not os.path.exists("/dev/nvidiactl"):
        return False
    try:
        return bool(_torch().cuda.is_available())
    except Exception:  # a broken CUDA install is "no GPU", not a crash
        return False


def resolve_device(device: str | None, field_path: str = "device") -> str:
    """ "cpu" or a CUDA device string ("cuda", "cuda:1") for `device` ("auto"/None = CUDA when
    torch sees a GPU, else the CPU)."""
    choice = (device or "auto").strip().lower()
    if choice == "auto":
        return "cuda" if cuda_available() else "cpu"
    if choice == "cpu":
        return "cpu"
    if choice == "cuda" or choice.startswith("cuda:"):
        if not cuda_available():
            raise InvalidArgument.for_field(
                field_path, f"asks for {choice!r} but torch sees no CUDA device on this host"
            )
        index = choice.partition(":")[2]
        if index and not (index.isdigit() and int(index) < _torch().cuda.device_count()):
            raise InvalidArgument.for_field(field_path, f"no CUDA device {choice!r} on this host")
        return choice
    raise InvalidArgument.for_field(
        field_path, f"must be one of auto, cpu, cuda or cuda:N, got {device!r}"
    )


class TorchTiles:
    """Kernel sums between a reduced set z [K, D] and data rows, on a torch device.

    The same quantities as the numpy tiles of `lwdock.rkme.fit` (k(z_i, x_n) =
    exp(-gamma ||z_i - x_n||^2) in float64), computed tile by tile: each tile of rows is
    copied to the device once, so the data never has to fit in device memory.
    """

    def __init__(self, device: str, tile_entries: int = 1 << 24) -> None:
        torch = _torch()
        self.device = torch.device(device)
        self.tile_entries = tile_entries

    def _rows_per_tile(self, k: int, d: int) -> int:
        return max(1, self.tile_entries // max(1, k + d))

    def moments(
        self, z: np.ndarray, x: np.ndarray, gamma: float, *, first: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """c_i = mean_n k(z_i, x_n) and, when `first`, s_i = mean_n k(z_i, x_n) x_n."""
        torch = _torch()
        zt = torch.as_tensor(z, dtype=torch.float64, device=self.device)
        zsq = (zt * zt).sum(dim=1, keepdim=True)
        c = torch.zeros(z.shape[0], dtype=torch.float64, device=self.device)
        s = torch.zeros_like(zt) if first else None
        step = self._rows_per_tile(*z.shape)
        for start in range(0, x.shape[0], step):
            tile = torch.as_tensor(x[start : start + step], device=self.device).double()
            kernel = self._kernel(zt, zsq, tile, gamma)
            c += kernel.sum(dim=1)
            if s is not None:
                s += kernel @ tile
        n = x.shape[0]
        return (c / n).cpu().numpy(), None if s is None else (s / n).cpu().numpy()

    @staticmethod
    def _kernel(zt, zsq, tile, gamma: float):  # type: ignore[no-untyped-def]
        xsq = (tile * tile).sum(dim=1)
        squared = zsq - 2.0 * (zt @ tile.T) + xsq[None, :]
        return torch_exp_neg(squared.clamp_(min=0.0), gamma)


def torch_exp_neg(squared, gamma: float):  # type: ignore[no-untyped-def]
    """exp(-gamma * squared), in place."""
    return squared.mul_(-gamma).exp_()


def tile_backend(device: str) -> TorchTiles | None:
    """The torch tiles for a resolved device, or None for the CPU's numpy tiles."""
    return None if device == "cpu" else TorchTiles(device)
