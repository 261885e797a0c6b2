"""Where RKME fits run: device resolution, and the torch tile path that a GPU uses.

The torch tiles are exercised on the CPU here (the same code runs on CUDA), against the numpy
tiles; the CUDA comparisons run where torch sees a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lwdock.errors import InvalidArgument
from lwdock.rkme import fit as fit_module
from lwdock.rkme.device import TorchTiles, cuda_available, resolve_device
from lwdock.rkme.fit import clean_data, fit_table_rkme
from lwdock.rkme.image import fit_image_rkme

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")


def test_auto_is_cuda_exactly_when_torch_sees_a_gpu() -> None:
    assert cuda_available() == torch.cuda.is_available()
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device(" CPU ") == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu:0", "cuda:99"])
def test_unknown_or_missing_devices_name_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        resolve_device(bad, "LWDOCK_FIT_DEVICE")
    assert caught.value.violations[0].field == "LWDOCK_FIT_DEVICE"
    assert bad.strip() in caught.value.violations[0].description


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_asking_for_cuda_without_a_gpu_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="no CUDA device"):
        resolve_device("cuda")


def test_torch_tile_moments_equal_the_numpy_tiles() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5000, 6)).astype(np.float32)
    z = rng.normal(size=(40, 6))
    rows = fit_module._Rows.of(x)
    c, s = fit_module._moments(z, rows, 0.3, first=True)
    tiles = TorchTiles("cpu", tile_entries=4096)  # many tiles, to test their reduction
    c_t, s_t = tiles.moments(z, x, 0.3, first=True)
    assert s is not None and s_t is not None
    np.testing.assert_allclose(c_t, c, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(s_t, s, rtol=1e-9, atol=1e-13)
    c_only, none = tiles.moments(z, x, 0.3, first=False)
    assert none is None
    np.testing.assert_array_equal(c_only, c_t)


def test_a_fit_through_the_torch_tiles_equals_the_numpy_fit() -> None:
    x = np.random.default_rng(4).normal(size=(3000, 5)).astype(np.float32)
    expected = fit_table_rkme(x, device="cpu")
    cleaned, shape = clean_data(x)
    with fit_module._POOL.session():
        via_torch = fit_module._fit(
            cleaned, shape, 0.1, 100, 3, 0, True, lambda stage, f: None, TorchTiles("cpu")
        )
    np.testing.assert_allclose(via_torch.z, expected.z, atol=1e-8)
    np.testing.assert_allclose(via_torch.beta, expected.beta, atol=1e-8)
    assert via_torch.fit_mmd2 == pytest.approx(expected.fit_mmd2, rel=1e-8)


@needs_cuda
def test_a_table_fit_on_the_gpu_equals_the_cpu_fit() -> None:
    x = np.random.default_rng(5).normal(size=(20_000, 10)).astype(np.float32)
    on_cpu = fit_table_rkme(x, device="cpu")
    on_gpu = fit_table_rkme(x, device="cuda")
    np.testing.assert_allclose(on_gpu.z, on_cpu.z, atol=1e-6)
    assert on_gpu.fit_mmd2 == pytest.approx(on_cpu.fit_mmd2, rel=1e-6)


@needs_cuda
def test_an_image_fit_on_the_gpu_fits_as_well_as_on_the_cpu() -> None:
    images = np.random.default_rng(6).integers(0, 256, size=(120, 3, 32, 32), dtype=np.uint8)
    on_cpu = fit_image_rkme(images, reduced_set_size=10, steps=2, device="cpu")
    on_gpu = fit_image_rkme(images, reduced_set_size=10, steps=2, device="cuda")
    assert on_gpu.spec.z.shape == on_cpu.spec.z.shape
    assert on_gpu.spec.fit_mmd2 == pytest.approx(on_cpu.spec.fit_mmd2, rel=0.2)
