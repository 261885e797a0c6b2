"""Image RKME (version 2): specs that separate datasets, a z that really moves, one fixed
preprocessing for every layout and dtype, determinism, input errors, and the JSON format,
including the reference's version-1 files and their NNGP kernel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lwdock.errors import InvalidArgument
from lwdock.rkme.image import (
    PIXEL_MEAN,
    PIXEL_STD,
    RKME_IMAGE_VERSION,
    ImageKernel,
    ImageRKME,
    fit_image_rkme,
    image_embedding,
    image_inner_product,
    image_mmd2,
    image_mmd2_to_data,
    image_spec_from_reference_dict,
    image_spec_to_reference_dict,
    is_reference_image_spec,
    nngp_kernel,
    preprocess_images,
    to_pixels,
    uniform_image_spec,
)
from lwdock.rkme.spec import SpecType

K = 12
SIDE = 28
SMALL = ImageKernel(n_models=2, width=8)  # a cheap kernel for the tests of plumbing


def _stripes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Horizontal sinusoidal stripes, random frequency/phase/tint: [n, 28, 28, 3] uint8."""
    rows = np.arange(SIDE)[None, :, None, None]
    frequency = rng.uniform(0.3, 0.9, (n, 1, 1, 1))
    phase = rng.uniform(0.0, 2 * np.pi, (n, 1, 1, 1))
    tint = rng.uniform(0.6, 1.0, (n, 1, 1, 3))
    image = (0.5 + 0.4 * np.sin(frequency * rows + phase)) * tint
    image = image + rng.normal(0.0, 0.04, (n, SIDE, SIDE, 3))
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _blobs(n: int, rng: np.random.Generator) -> np.ndarray:
    """One Gaussian blob at a random place and size: [n, 28, 28, 3] uint8."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    centre = rng.uniform(6, SIDE - 6, (n, 2, 1, 1))
    radius = rng.uniform(3.0, 7.0, (n, 1, 1))
    squared = (yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2
    image = np.exp(-squared / (2 * radius**2))[..., None] * rng.uniform(0.6, 1.0, (n, 1, 1, 3))
    image = image + rng.normal(0.0, 0.04, (n, SIDE, SIDE, 3))
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """Two NHWC uint8 image sets, each split into 200 training and 100 held-out images."""
    rng = np.random.default_rng(1234)
    stripes, blobs = _stripes(300, rng), _blobs(300, rng)
    return {
        "stripes": stripes[:200],
        "stripes_held_out": stripes[200:],
        "blobs": blobs[:200],
        "blobs_held_out": blobs[200:],
    }


@pytest.fixture(scope="module")
def specs(data: dict[str, np.ndarray]) -> dict[str, ImageRKME]:
    return {
        name: fit_image_rkme(data[name], layout="NHWC", reduced_set_size=K)
        for name in ("stripes", "blobs")
    }


def _nchw(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


# --- (1) the required proof -----------------------------------------------------------------


def test_each_spec_is_nearest_to_held_out_images_of_its_own_set(data, specs):
    stripes, blobs = specs["stripes"], specs["blobs"]
    assert stripes.spec.type is SpecType.IMAGE
    assert stripes.spec.z.shape == (K, 3, 32, 32) and stripes.spec.beta.shape == (K,)
    assert not np.allclose(stripes.spec.z, blobs.spec.z)
    between = image_mmd2(stripes, blobs)
    assert between > 0
    assert image_mmd2(stripes, stripes) == pytest.approx(0.0, abs=1e-12)
    for own, other in (("stripes", "blobs"), ("blobs", "stripes")):
        spec = specs[own]
        to_own = image_mmd2_to_data(spec, data[f"{own}_held_out"], layout="NHWC")
        to_other = image_mmd2_to_data(spec, data[f"{other}_held_out"], layout="NHWC")
        assert to_own * 10 < to_other, (own, to_own, to_other)
        # the same through a uniform-weight spec of the held-out images
        held_out = uniform_image_spec(data[f"{own}_held_out"], layout="NHWC")
        assert image_mmd2(spec, held_out) == pytest.approx(to_own, rel=1e-5)
        assert image_mmd2(spec, held_out) * 10 < image_mmd2(specs[other], held_out)


def test_the_embedding_is_an_exact_l2_vector_of_the_mmd(specs):
    stripes, blobs = specs["stripes"], specs["blobs"]
    left, right = image_embedding(stripes), image_embedding(blobs)
    assert left.shape == (stripes.kernel.feature_count,) == (2048,)
    assert image_mmd2(stripes, blobs) == pytest.approx(float((left - right) @ (left - right)))
    assert image_inner_product(stripes, blobs) == pytest.approx(float(left @ right))


# --- (2) z is optimised ---------------------------------------------------------------------


def test_z_moves_and_the_fit_improves_on_the_initialisation(data, specs):
    fitted = specs["stripes"]
    initial = fit_image_rkme(data["stripes"], layout="NHWC", reduced_set_size=K, steps=0)
    assert np.abs(fitted.spec.z - initial.spec.z).max() > 0.1
    initial_mmd2 = image_mmd2_to_data(initial, data["stripes"], layout="NHWC")
    fitted_mmd2 = image_mmd2_to_data(fitted, data["stripes"], layout="NHWC")
    assert fitted_mmd2 < 0.5 * initial_mmd2
    # fit_mmd2 is the exact MMD^2 to the fitted data (all of it: N < sample_size)
    assert fitted.spec.fit_mmd2 == pytest.approx(fitted_mmd2, rel=1e-5, abs=1e-12)
    assert fitted.spec.num_points == 200
    assert np.all(fitted.spec.beta >= 0) and fitted.spec.beta.sum() == pytest.approx(1.0)
    # z stays inside the data's value range: intensities in [0, 1]
    pixels = to_pixels(fitted)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_small_sets_use_two_thirds_of_the_rows(data):
    spec = fit_image_rkme(
        data["blobs"][:9], layout="NHWC", reduced_set_size=50, steps=1, kernel=SMALL
    )
    assert spec.spec.z.shape[0] == 6


def test_progress_is_reported_up_to_done(data):
    reports: list[tuple[str, float]] = []
    fit_image_rkme(
        data["blobs"][:20],
        layout="NHWC",
        reduced_set_size=4,
        steps=2,
        kernel=SMALL,
        progress=lambda stage, fraction: reports.append((stage, fraction)),
    )
    fractions = [fraction for _, fraction in reports]
    assert fractions == sorted(fractions) and reports[-1] == ("done", 1.0)
    assert {stage for stage, _ in reports} >= {"embedding", "initialising", "optimising"}


def test_sample_size_fits_a_seeded_subsample(data):
    spec = fit_image_rkme(
        data["blobs"], layout="NHWC", reduced_set_size=5, steps=1, sample_size=50, kernel=SMALL
    )
    assert spec.spec.num_points == 200 and spec.spec.z.shape[0] == 5


# --- (3) layouts and dtypes -------------------------------------------------------------------


def test_nhwc_and_nchw_give_the_same_spec(data):
    images = data["blobs"][:60]
    nhwc = fit_image_rkme(images, layout="NHWC", reduced_set_size=6, steps=2, kernel=SMALL)
    nchw = fit_image_rkme(_nchw(images), layout="NCHW", reduced_set_size=6, steps=2, kernel=SMALL)
    assert np.array_equal(nhwc.spec.z, nchw.spec.z)
    assert np.array_equal(nhwc.spec.beta, nchw.spec.beta)
    from_tensor = fit_image_rkme(
        torch.from_numpy(images), layout="NHWC", reduced_set_size=6, steps=2, kernel=SMALL
    )
    assert np.array_equal(nhwc.spec.z, from_tensor.spec.z)


def test_one_fixed_preprocessing_for_uint8_float_and_value_range(data):
    images = data["stripes"][:20]
    as_uint8 = preprocess_images(images, layout="NHWC")
    assert as_uint8.shape == (20, 3, 32, 32) and as_uint8.dtype == torch.float32
    as_float = preprocess_images(images / 255.0, layout="NHWC")
    as_255 = preprocess_images(images.astype(np.float32), layout="NHWC", value_range=(0, 255))
    as_int64 = preprocess_images(images.astype(np.int64), layout="NHWC")
    for other in (as_float, as_255, as_int64):
        torch.testing.assert_close(other, as_uint8, atol=1e-6, rtol=0)
    # the fixed normalisation: a constant grey image of intensity v maps to (v - 0.5) / 0.25
    grey = np.full((1, 1, 32, 32), 0.75, dtype=np.float32)
    assert torch.allclose(preprocess_images(grey), torch.tensor((0.75 - PIXEL_MEAN) / PIXEL_STD))


def test_nonfinite_values_become_the_images_own_mean():
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 1, (3, 1, 32, 32))
    dirty = images.copy()
    dirty[1, 0, 3, 4], dirty[1, 0, 5, 6], dirty[2, 0, 0, 0] = np.nan, np.inf, -np.inf
    filled = images.copy()
    filled[1, 0, 3, 4] = filled[1, 0, 5, 6] = np.delete(
        images[1].ravel(), [3 * 32 + 4, 5 * 32 + 6]
    ).mean()
    filled[2, 0, 0, 0] = images[2].ravel()[1:].mean()
    torch.testing.assert_close(preprocess_images(dirty), preprocess_images(filled))


def test_grey_and_colour_specs_do_not_compare(data, specs):
    grey = fit_image_rkme(data["blobs"][:30, :, :, :1], layout="NHWC", reduced_set_size=4, steps=1)
    assert grey.spec.z.shape == (4, 1, 32, 32)
    with pytest.raises(InvalidArgument) as caught:
        image_mmd2(grey, specs["blobs"])
    assert caught.value.violations[0].field == "z"


# --- (4) determinism --------------------------------------------------------------------------


def test_fits_are_deterministic_under_a_seed(data):
    images = data["stripes"][:60]
    first, second = (
        fit_image_rkme(images, layout="NHWC", reduced_set_size=6, steps=2, seed=7) for _ in range(2)
    )
    assert np.array_equal(first.spec.z, second.spec.z)
    assert np.array_equal(first.spec.beta, second.spec.beta)
    other = fit_image_rkme(images, layout="NHWC", reduced_set_size=6, steps=2, seed=8)
    assert not np.array_equal(first.spec.z, other.spec.z)


# --- (5) bad inputs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "words"),
    [
        (np.zeros((4, 32, 32)), "4 dimensions"),
        (np.zeros((2, 1, 3, 32, 32)), "4 dimensions"),
        (np.zeros((0, 3, 32, 32)), "empty"),
        (np.zeros((2, 3, 0, 32)), "empty"),
        (np.full((2, 1, 4, 4), "a"), "numeric"),
        (np.zeros((2, 1, 4, 4), dtype=complex), "numeric"),
        ([[[[1.0, 2.0]]], [[[1.0]]]], "numeric"),
        (np.full((2, 1, 4, 4), None), "no finite value"),
        (np.stack([np.ones((1, 4, 4)), np.full((1, 4, 4), np.nan)]), "image 1 holds no finite"),
        (np.full((2, 1, 4, 4), 300, dtype=np.int16), "value_range"),
        (np.zeros((2, 100, 4, 4)), "channels"),
    ],
)
def test_bad_images_are_invalid_arguments_naming_images(images, words):
    with pytest.raises(InvalidArgument) as caught:
        fit_image_rkme(images, steps=0)
    assert [v.field for v in caught.value.violations] == ["images"]
    assert words in caught.value.message


def test_bad_options_are_invalid_arguments(data):
    images = data["blobs"][:10]
    for kwargs, field in (
        ({"layout": "HWC"}, "layout"),
        ({"value_range": (1, 1)}, "value_range"),
        ({"reduced_set_size": 0}, "reduced_set_size"),
        ({"steps": -1}, "steps"),
        ({"step_size": 0.0}, "step_size"),
        ({"kernel": ImageKernel(width=0)}, "kernel.width"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            fit_image_rkme(images, **{"layout": "NHWC", **kwargs})
        assert caught.value.violations[0].field == field


def test_specs_of_different_kernels_do_not_compare(data, specs):
    other = fit_image_rkme(
        data["blobs"][:30],
        layout="NHWC",
        reduced_set_size=4,
        steps=1,
        kernel=ImageKernel(seed=1),
    )
    with pytest.raises(InvalidArgument) as caught:
        image_mmd2(other, specs["blobs"])
    assert caught.value.violations[0].field == "kernel"


# --- (6) JSON ---------------------------------------------------------------------------------


def test_our_spec_round_trips_through_the_reference_json(specs):
    spec = specs["stripes"]
    data = json.loads(json.dumps(spec.to_reference_dict()))
    assert list(data)[:7] == [
        "RKME_IMAGE_VERSION",
        "msg",
        "z",
        "beta",
        "n_models",
        "model_config",
        "type",
    ]
    assert data["RKME_IMAGE_VERSION"] == RKME_IMAGE_VERSION == 2
    assert data["type"] == "RKMEImageSpecification"
    assert data["model_config"]["net_depth"] == 3 and data["kernel"]["seed"] == 0
    assert not is_reference_image_spec(data)
    loaded = image_spec_from_reference_dict(data)
    assert np.array_equal(loaded.spec.z, spec.spec.z)
    assert np.array_equal(loaded.spec.beta, spec.spec.beta)
    assert loaded.kernel == spec.kernel and not loaded.low_information
    assert loaded.spec.fit_mmd2 == spec.spec.fit_mmd2
    assert loaded.spec.num_points == spec.spec.num_points
    assert image_mmd2(loaded, spec) == 0.0
    assert image_spec_to_reference_dict(loaded.spec, loaded.kernel) == data


def _reference_dict(z: np.ndarray, beta: list[float], **extra: object) -> dict:
    return {
        "RKME_IMAGE_VERSION": 1,
        "msg": None,
        "z": z.tolist(),
        "beta": beta,
        "n_models": 16,
        "model_config": {"k": 2, "mu": 0, "sigma": None, "net_width": 128, "net_depth": 3},
        "type": "RKMEImageSpecification",
        **extra,
    }


# Computed with the reference package (learnware 0.4.0.post1, `_build_ConvNet_NNGP` and
# `RKMEImageSpecification.dist`) on the z below.
REFERENCE_K11 = [
    [0.37251701951026917, 0.2572580575942993, 0.25262826681137085],
    [0.2572580575942993, 0.3704991340637207, 0.2513519823551178],
    [0.25262826681137085, 0.2513519823551178, 0.3610565662384033],
]
REFERENCE_K12 = [
    [0.19444681704044342, 0.1900206059217453],
    [0.19246134161949158, 0.18937551975250244],
    [0.1912539005279541, 0.18749123811721802],
]
REFERENCE_DIST = 0.0929260593652726


def test_reference_version_1_specs_load_and_compare_with_the_nngp(specs):
    rng = np.random.default_rng(7)
    z1 = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    z2 = (rng.standard_normal((2, 3, 32, 32)) * 0.5 + 0.3).astype(np.float32)
    np.testing.assert_allclose(nngp_kernel(z1), REFERENCE_K11, rtol=1e-6)
    np.testing.assert_allclose(nngp_kernel(z1, z2), REFERENCE_K12, rtol=1e-6)

    first = image_spec_from_reference_dict(
        json.loads(json.dumps(_reference_dict(z1, [0.2, 0.5, 0.3])))
    )
    without_msg = _reference_dict(z2, [0.6, 0.4])
    del without_msg["msg"]
    second = image_spec_from_reference_dict(without_msg)
    assert first.spec.z.dtype == np.float64 and np.array_equal(first.spec.z, z1)
    assert first.spec.beta.dtype == np.float64
    assert first.low_information and is_reference_image_spec(first)
    assert is_reference_image_spec(first.kernel) and first.kernel.version == 1
    assert image_mmd2(first, second) == pytest.approx(REFERENCE_DIST, rel=1e-6)
    assert image_mmd2(first, first) == pytest.approx(0.0, abs=1e-12)
    # written back as it came (the file's own model_config)
    assert image_spec_to_reference_dict(first.spec, first.kernel) == _reference_dict(
        z1, [0.2, 0.5, 0.3]
    )
    # versions never compare
    with pytest.raises(InvalidArgument) as caught:
        image_mmd2(first, specs["blobs"])
    assert caught.value.violations[0].field == "kernel"
    with pytest.raises(InvalidArgument):
        image_embedding(first)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"z": [[1.0, 2.0]]}, "z"),
        ({"z": "noise"}, "z"),
        ({"beta": [0.5]}, "beta"),
        ({"RKME_IMAGE_VERSION": 3}, "RKME_IMAGE_VERSION"),
        ({"type": "RKMETableSpecification"}, "type"),
        ({"model_config": {"net_depth": 9}}, "model_config.net_depth"),
        ({"RKME_IMAGE_VERSION": 2, "kernel": {"name": "ntk"}}, "kernel.name"),
        ({"RKME_IMAGE_VERSION": 2, "kernel": {"net_depth": 2, "depth": 2}}, "kernel"),
    ],
)
def test_bad_image_json_is_an_invalid_argument(change, field):
    data = _reference_dict(np.zeros((2, 1, 32, 32)), [0.5, 0.5])
    data.update(change)
    with pytest.raises(InvalidArgument) as caught:
        image_spec_from_reference_dict(data, prefix="rkme.")
    assert caught.value.violations[0].field == f"rkme.{field}"
