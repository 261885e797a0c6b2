"""Image RKME specifications (REFERENCE.md §4): a fitter that works, and the reference's format.

Version 2 (ours, `RKME_IMAGE_VERSION = 2`)
------------------------------------------
One fixed preprocessing and one fixed kernel for everyone, so that the specs of different
datasets live in one space and can be compared:

- Input: a 4-D array or tensor of images, NCHW or NHWC (`layout`). Integer images are
  intensities in 0..255 (checked) unless `value_range` says otherwise; float (and bool) images are
  intensities in [0, 1] unless `value_range` says otherwise. +-inf -> NaN -> the image's own
  mean (the reference's per-image nanmean); an image without a finite value is rejected.
- Preprocessing: scale `value_range` to [0, 1]; resize to 32 x 32 with
  `interpolate(mode="bilinear", antialias=True, align_corners=False)` (the reference uses
  torchvision's `Resize(antialias=True)`, the same filter); then the fixed normalisation
  (x - `PIXEL_MEAN`) / `PIXEL_STD` for every channel. No per-dataset standardisation, no ZCA
  (the reference whitens per dataset, so two specs' bases differ).
- Kernel: k(a, b) = phi(a) . phi(b), where phi concatenates the outputs of `n_models` random
  CNNs (the reference's architecture: `depth` blocks of Conv 3x3 (c_in -> `width`, padding 1,
  weights N(0, 2 / (9 c_in)), bias N(0, 0.1^2)) -> ReLU -> AvgPool 2x2), flattened, scaled by
  1 / sqrt(feature count). Unlike the reference the weights are FIXED, drawn from numpy's
  PCG64 seeded by (`seed`, channels, n_models, width, depth), so the kernel is an exact finite
  feature map: MMD^2(a, b) = ||mu_a - mu_b||^2 with mu = sum_i beta_i phi(z_i)
  (`image_embedding`), usable directly as an L2 search vector. The defaults (4 models x 32
  channels x 4 x 4 = 2,048 features) are fast on CPU; the parameters are recorded in the JSON.
- Fit: the target mu_X = mean_n phi(x_n) is computed once, in batches, without gradients (on
  at most `sample_size` images, a seeded subsample, as the reference). z (K x C x 32 x 32) is
  initialised with K images chosen by k-means++ in feature space (plus N(0, 0.01^2) noise),
  then `steps` rounds of: beta-step (the simplex QP `fit.solve_simplex_qp` on the K x K Gram
  matrix of phi(z)), then `ADAM_STEPS_PER_ROUND` Adam steps on z (a real torch parameter) for
  ||sum_i beta_i phi(z_i) - mu_X||^2 with beta fixed, z kept inside the data's value range.
  The best (z, beta) seen is returned, with a final beta-step; its MMD^2 to mu_X is recorded
  as `fit_mmd2`. Rows are never shuffled. Deterministic in (data, parameters, seed) on one
  machine (fixed weights, numpy-seeded initialisation, deterministic CPU kernels).

Version 1 (the reference's files)
---------------------------------
Files with `RKME_IMAGE_VERSION` 1 (or none) load (z -> float32 values, beta -> float64) and
compare with each other under the reference's search-time kernel, the exact NNGP of its
architecture (`nngp_kernel`, REFERENCE.md §4.3). Their z is the reference's fixed seeded
noise (it never optimises z), so they carry only K weights over a shared noise basis: they
are flagged low-information (`is_reference_image_spec`). Versions never compare with each
other (different kernels and preprocessing): `InvalidArgument` on field "kernel".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lwdock.errors import FieldViolation, InvalidArgument
from lwdock.rkme.device import resolve_device
from lwdock.rkme.fit import solve_simplex_qp
from lwdock.rkme.spec import RKMESpec, SpecType, parse_type

Progress = Callable[[str, float], None]
"""`progress(stage, fraction)`: stage is one of "embedding", "initialising", "optimising",
"finalising", "done"; fraction is the overall fraction of the work done, in [0, 1]."""

RKME_IMAGE_VERSION = 2
REFERENCE_IMAGE_VERSION = 1
IMAGE_SIZE = 32  # the reference's IMAGE_WIDTH
PIXEL_MEAN = 0.5  # fixed normalisation of [0, 1] intensities, every channel
PIXEL_STD = 0.25
LAYOUTS = ("NCHW", "NHWC")
KERNEL_NAME = "random-conv-features"  # the version-2 JSON's kernel.name

DEFAULT_N_MODELS = 4
DEFAULT_WIDTH = 32
DEFAULT_DEPTH = 3
DEFAULT_REDUCED_SET_SIZE = 50
DEFAULT_STEPS = 10  # rounds of (beta-step, ADAM_STEPS_PER_ROUND Adam steps on z)
DEFAULT_STEP_SIZE = 0.05  # Adam's learning rate, in normalised pixel units
DEFAULT_SAMPLE_SIZE = 5000  # the reference's sample_size
ADAM_STEPS_PER_ROUND = 3
INIT_NOISE = 0.01  # std of the noise added to the initial images (normalised units)
INIT_ROWS = 2048  # images k-means++ chooses the initial z from
BATCH_IMAGES = 256  # images per preprocessing / feature batch
NNGP_PAIRS_PER_CHUNK = 4096
MAX_CHANNELS = 64
MAX_N_MODELS = 64
MAX_WIDTH = 1024
UNCONSTRAINED_RIDGE = 1e-5  # the reference's ridge for nonnegative_beta=False

# The reference's constructor defaults (version-1 files without these keys).
REFERENCE_N_MODELS = 16
REFERENCE_MODEL_CONFIG: dict[str, Any] = {
    "k": 2,
    "mu": 0,
    "sigma": None,
    "net_width": 128,
    "net_depth": 3,
}


# --- the kernel description ------------------------------------------------------------------


@dataclass(frozen=True)
class ImageKernel:
    """Which kernel (and preprocessing) an image spec lives in.

    Version 2: the fixed random-feature map described in the module docs; every field must
    match for two specs to compare. Version 1: the reference's NNGP (only `depth` matters;
    `pixel_mean`/`pixel_std` are None because the reference standardises per dataset);
    `model_config` keeps the file's own dict so that it is written back unchanged.
    """

    version: int = RKME_IMAGE_VERSION
    n_models: int = DEFAULT_N_MODELS
    width: int = DEFAULT_WIDTH
    depth: int = DEFAULT_DEPTH
    seed: int = 0
    pixel_mean: float | None = PIXEL_MEAN
    pixel_std: float | None = PIXEL_STD
    image_size: int = IMAGE_SIZE
    model_config: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def feature_count(self) -> int:
        side = self.image_size >> self.depth
        return self.n_models * self.width * side * side

    @property
    def low_information(self) -> bool:
        return self.version == REFERENCE_IMAGE_VERSION

    def validate(self, prefix: str = "kernel.") -> ImageKernel:
        problems: list[FieldViolation] = []

        def integer(name: str, value: object, low: int, high: int) -> None:
            if not (isinstance(value, int | np.integer) and not isinstance(value, bool)):
                problems.append(
                    FieldViolation(f"{prefix}{name}", f"must be an integer, got {value!r}")
                )
            elif not low <= value <= high:
                problems.append(
                    FieldViolation(f"{prefix}{name}", f"must be in [{low}, {high}], got {value}")
                )

        if self.version not in (REFERENCE_IMAGE_VERSION, RKME_IMAGE_VERSION):
            problems.append(
                FieldViolation(f"{prefix}version", f"must be 1 or 2, got {self.version!r}")
            )
        integer("n_models", self.n_models, 1, MAX_N_MODELS if self.version == 2 else 1 << 16)
        integer("width", self.width, 1, MAX_WIDTH if self.version == 2 else 1 << 20)
        integer("depth", self.depth, 1, 5)
        integer("seed", self.seed, 0, (1 << 63) - 1)
        if self.image_size != IMAGE_SIZE:
            problems.append(
                FieldViolation(
                    f"{prefix}image_size", f"must be {IMAGE_SIZE}, got {self.image_size}"
                )
            )
        if self.version == RKME_IMAGE_VERSION:
            for name, value, positive in (
                ("pixel_mean", self.pixel_mean, False),
                ("pixel_std", self.pixel_std, True),
            ):
                ok = isinstance(value, int | float) and math.isfinite(value)
                if not ok or (positive and value <= 0):
                    problems.append(
                        FieldViolation(
                            f"{prefix}{name}",
                            f"must be a finite number{' > 0' if positive else ''}, got {value!r}",
                        )
                    )
        if problems:
            raise InvalidArgument.of(problems, "invalid image kernel")
        return self

    def compatible_with(self, other: ImageKernel) -> bool:
        if self.version != other.version:
            return False
        if self.version == REFERENCE_IMAGE_VERSION:  # the NNGP depends on the depth only
            return self.depth == other.depth and self.image_size == other.image_size
        return self == other

    def describe(self) -> dict[str, Any]:
        """Our JSON `kernel` object (version 2)."""
        return {
            "name": KERNEL_NAME,
            "n_models": self.n_models,
            "width": self.width,
            "depth": self.depth,
            "seed": self.seed,
            "image_size": self.image_size,
            "pixel_mean": self.pixel_mean,
            "pixel_std": self.pixel_std,
            "feature_count": self.feature_count,
        }

    def reference_model_config(self) -> dict[str, Any]:
        """The reference's `model_config` (its NNGP reads `net_depth`; k * net_width is the
        CNN width)."""
        if self.model_config is not None:
            return dict(self.model_config)
        return {"k": 1, "mu": 0, "sigma": None, "net_width": self.width, "net_depth": self.depth}


@dataclass
class ImageRKME:
    """An image RKME: the spec (type IMAGE, z [K, C, 32, 32] float64 holding float32 values,
    beta [K]) and the kernel it lives in. `msg` is the reference's free `msg` field."""

    spec: RKMESpec
    kernel: ImageKernel
    msg: str | None = None

    @property
    def low_information(self) -> bool:
        """True for reference (version-1) specs: z is seeded noise; they rank on beta alone."""
        return self.kernel.low_information

    @property
    def channels(self) -> int:
        return int(self.spec.z.shape[1])

    def to_reference_dict(self) -> dict[str, Any]:
        return image_spec_to_reference_dict(self.spec, self.kernel, msg=self.msg)


def is_reference_image_spec(value: ImageRKME | ImageKernel | Mapping[str, Any]) -> bool:
    """Whether `value` (a loaded spec, its kernel, or its JSON dict) is a reference
    (version-1) image spec, whose z is fixed seeded noise: low information, ranks on beta."""
    if isinstance(value, ImageRKME):
        return value.low_information
    if isinstance(value, ImageKernel):
        return value.low_information
    return value.get("RKME_IMAGE_VERSION", REFERENCE_IMAGE_VERSION) == REFERENCE_IMAGE_VERSION


# --- input -------------------------------------------------------------------------------


def _bad(field_path: str, description: str) -> InvalidArgument:
    return InvalidArgument.for_field(field_path, description)


def _as_image_array(images: object, layout: str) -> np.ndarray:
    """The images as a 4-D real numpy array (no copy when possible), checked for shape."""
    if layout not in LAYOUTS:
        raise _bad("layout", f"must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if isinstance(images, torch.Tensor):
        tensor = images.detach().cpu()
        if tensor.is_complex():
            raise _bad("images", f"needs a real numeric dtype, got {tensor.dtype}")
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        array = tensor.numpy()
    else:
        try:
            array = np.asarray(images)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise _bad("images", f"not a numeric array: {exc}") from None
    kind = array.dtype.kind
    if kind == "O":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise _bad("images", f"not a numeric array: {exc}") from None
    elif kind == "b":
        array = array.astype(np.float32)
    elif kind == "f" and array.dtype.itemsize < 4:
        array = array.astype(np.float32)
    elif kind == "f" and array.dtype.itemsize > 8:
        array = array.astype(np.float64)
    elif kind not in "fiu":
        raise _bad("images", f"needs a real numeric dtype, got {array.dtype}")
    if array.ndim != 4:
        raise _bad(
            "images", f"needs 4 dimensions [N, C, H, W] or [N, H, W, C], got shape {array.shape}"
        )
    if 0 in array.shape:
        raise _bad("images", f"is empty (shape {array.shape})")
    channels = array.shape[1] if layout == "NCHW" else array.shape[3]
    if channels > MAX_CHANNELS:
        raise _bad(
            "images",
            f"has {channels} channels (layout {layout}); at most {MAX_CHANNELS} "
            "(is the layout right?)",
        )
    return array


def _value_range(array: np.ndarray, value_range: tuple[float, float] | None) -> tuple[float, float]:
    if value_range is None:
        return (0.0, 255.0) if array.dtype.kind in "iu" else (0.0, 1.0)
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise _bad("value_range", f"must be a pair (low, high), got {value_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise _bad("value_range", f"needs finite low < high, got {value_range!r}")
    return low, high


@dataclass(frozen=True)
class _Preprocessor:
    layout: str
    low: float
    high: float
    check_integer_range: bool
    pixel_mean: float
    pixel_std: float

    def __call__(self, raw: np.ndarray, first: int) -> torch.Tensor:
        """Images raw[0..B) (numbered from `first`) as a [B, C, 32, 32] float32 tensor."""
        batch = np.asarray(raw, dtype=np.float64)
        if self.layout == "NHWC":
            batch = batch.transpose(0, 3, 1, 2)
        if self.check_integer_range and (batch.min() < self.low or batch.max() > self.high):
            raise _bad(
                "images",
                f"integer images must hold values in [{self.low:g}, {self.high:g}]; pass "
                "value_range for other ranges",
            )
        finite = np.isfinite(batch)
        if not finite.all():
            batch = np.array(batch, order="C")  # a writable copy
            for i in np.flatnonzero(~finite.reshape(len(batch), -1).all(axis=1)):
                ok = finite[i]
                if not ok.any():
                    raise _bad("images", f"image {first + int(i)} holds no finite value")
                batch[i][~ok] = batch[i][ok].mean()
        batch = (batch - self.low) * (1.0 / (self.high - self.low))
        tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if not bool(torch.isfinite(tensor).all()):
            raise _bad("images", "holds values too large for float32 after scaling")
        if tensor.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            tensor = F.interpolate(
                tensor,
                size=(IMAGE_SIZE, IMAGE_SIZE),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return (tensor - self.pixel_mean) / self.pixel_std


def _preprocessor(
    array: np.ndarray, layout: str, value_range: tuple[float, float] | None, kernel: ImageKernel
) -> _Preprocessor:
    low, high = _value_range(array, value_range)
    assert kernel.pixel_mean is not None and kernel.pixel_std is not None
    return _Preprocessor(
        layout=layout,
        low=low,
        high=high,
        check_integer_range=value_range is None
        and array.dtype.kind in "iu"
        and array.dtype != np.uint8,
        pixel_mean=float(kernel.pixel_mean),
        pixel_std=float(kernel.pixel_std),
    )


def _batches(
    array: np.ndarray, rows: np.ndarray | None, prepare: _Preprocessor
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(indices, preprocessed images) for the chosen rows (all when None), in order."""
    n = array.shape[0] if rows is None else rows.size
    for start in range(0, n, BATCH_IMAGES):
        if rows is None:
            index = np.arange(start, min(n, start + BATCH_IMAGES))
            raw = array[start : start + BATCH_IMAGES]
        else:
            index = rows[start : start + BATCH_IMAGES]
            raw = array[index]
        yield index, prepare(raw, int(index[0]))


def preprocess_images(
    images: object,
    *,
    layout: str = "NCHW",
    value_range: tuple[float, float] | None = None,
    kernel: ImageKernel | None = None,
) -> torch.Tensor:
    """All images preprocessed as for fitting: a [N, C, 32, 32] float32 tensor in the kernel's
    normalised space (the space z lives in). Raises InvalidArgument on field "images"."""
    kernel = _v2_kernel(kernel)
    array = _as_image_array(images, layout)
    prepare = _preprocessor(array, layout, value_range, kernel)
    return torch.cat([batch for _, batch in _batches(array, None, prepare)])


def to_pixels(spec: ImageRKME) -> np.ndarray:
    """A version-2 spec's z as [0, 1] intensities, NCHW (for display or herding)."""
    kernel = _v2_kernel(spec.kernel, "spec.kernel")
    assert kernel.pixel_mean is not None and kernel.pixel_std is not None
    return spec.spec.z * kernel.pixel_std + kernel.pixel_mean


# --- the version-2 feature map -------------------------------------------------------------


def _v2_kernel(kernel: ImageKernel | None, field_path: str = "kernel") -> ImageKernel:
    kernel = ImageKernel() if kernel is None else kernel
    if kernel.version != RKME_IMAGE_VERSION:
        raise _bad(
            field_path,
            f"needs the version-{RKME_IMAGE_VERSION} random-feature kernel; reference "
            f"(version-{kernel.version}) specs compare only with each other",
        )
    return kernel.validate(f"{field_path}.")


@functools.lru_cache(maxsize=16)
def _feature_weights(
    seed: int, channels: int, n_models: int, width: int, depth: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Per layer (weight, bias) of all models stacked: layer 0 [M W, C, 3, 3], later layers
    [M W, W, 3, 3] used as a grouped convolution (groups = M); model m owns the output
    channels m W .. (m + 1) W. Drawn model by model, layer by layer, weight then bias."""
    rng = np.random.default_rng([seed, channels, n_models, width, depth])
    layers: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in range(depth)]
    for _ in range(n_models):
        c_in = channels
        for weights, biases in layers:
            std = math.sqrt(2.0 / (c_in * 9))
            weights.append(rng.standard_normal((width, c_in, 3, 3)) * std)
            biases.append(rng.standard_normal(width) * 0.1)
            c_in = width
    result = []
    for weights, biases in layers:
        w = torch.from_numpy(np.concatenate(weights).astype(np.float32))
        b = torch.from_numpy(np.concatenate(biases).astype(np.float32))
        result.append((w, b))
    return tuple(result)


@functools.lru_cache(maxsize=16)
def _weights_on(
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...], device: torch.device
) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """`_feature_weights` copied to a GPU once (same values: drawn on the CPU)."""
    return tuple((w.to(device), b.to(device)) for w, b in layers)


def _features(x: torch.Tensor, kernel: ImageKernel) -> torch.Tensor:
    """phi(x) for [B, C, 32, 32] float32 images: [B, feature_count] (differentiable)."""
    layers = _feature_weights(
        kernel.seed, int(x.shape[1]), kernel.n_models, kernel.width, kernel.depth
    )
    if x.device.type != "cpu":
        layers = _weights_on(layers, x.device)
    h = x
    for i, (weight, bias) in enumerate(layers):
        h = F.conv2d(h, weight, bias, padding=1, groups=1 if i == 0 else kernel.n_models)
        h = F.avg_pool2d(F.relu(h), 2)
    h = h.reshape(h.shape[0], -1)
    return h * (1.0 / math.sqrt(h.shape[1]))


def _features_no_grad(x: torch.Tensor, kernel: ImageKernel) -> np.ndarray:
    """phi(x) as float64 numpy, in batches."""
    with torch.no_grad():
        parts = [
            _features(x[s : s + BATCH_IMAGES], kernel).double().numpy()
            for s in range(0, x.shape[0], BATCH_IMAGES)
        ]
    return np.concatenate(parts)


def _z_tensor(spec: RKMESpec) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(spec.z, dtype=np.float32))


def image_embedding(spec: ImageRKME) -> np.ndarray:
    """mu = sum_i beta_i phi(z_i) (float64, [feature_count]) of a version-2 spec. For two specs
    of one kernel, ||mu_a - mu_b||^2 is their squared MMD exactly: an L2 search vector."""
    kernel = _v2_kernel(spec.kernel, "spec.kernel")
    return spec.spec.beta @ _features_no_grad(_z_tensor(spec.spec), kernel)


def _data_mean_features(
    images: object, layout: str, value_range: tuple[float, float] | None, kernel: ImageKernel
) -> tuple[np.ndarray, int]:
    array = _as_image_array(images, layout)
    prepare = _preprocessor(array, layout, value_range, kernel)
    total = np.zeros(kernel.feature_count)
    with torch.no_grad():
        for _, batch in _batches(array, None, prepare):
            total += _features(batch, kernel).double().sum(dim=0).numpy()
    return total / array.shape[0], int(array.shape[1] if layout == "NCHW" else array.shape[3])


# --- the version-1 (reference) search-time kernel: the NNGP ----------------------------------

_F32_TINY = float(np.finfo(np.float32).tiny)


def _nngp_conv(maps: torch.Tensor, size: int, weight: float, bias: float, stride: int, pad: int):
    kernel = torch.full((1, 1, size, size), weight / (size * size), dtype=maps.dtype)
    return F.conv2d(maps, kernel, stride=stride, padding=pad) + bias


def nngp_kernel(z1: np.ndarray, z2: np.ndarray | None = None, depth: int = 3) -> np.ndarray:
    """The reference's search-time kernel (REFERENCE.md §4.3; `cnn_gp` with
    `_build_ConvNet_NNGP`): K [K1, K2] between images [K, C, 32, 32], in float64.

    `z2=None` is the reference's `kernel_fn(Z1)` (same=True: each ReLU's diagonal is set to
    the variance, as cnn_gp does)."""
    same = z2 is None
    a = torch.from_numpy(np.asarray(z1, dtype=np.float64))
    b = a if z2 is None else torch.from_numpy(np.asarray(z2, dtype=np.float64))
    k1, k2 = a.shape[0], b.shape[0]
    side = a.shape[-1]
    var_weight, var_bias = math.sqrt(2.0), 0.1
    xx_all = (a * a).mean(1, keepdim=True)
    yy_all = (b * b).mean(1, keepdim=True)
    result = np.empty((k1, k2))
    rows_per_chunk = max(1, NNGP_PAIRS_PER_CHUNK // k2)
    for start in range(0, k1, rows_per_chunk):
        stop = min(k1, start + rows_per_chunk)
        rows = stop - start
        xy = torch.einsum("ichw,jchw->ijhw", a[start:stop], b) / a.shape[1]
        xy = xy.reshape(rows * k2, 1, side, side)
        xx, yy = xx_all[start:stop], yy_all
        for _ in range(depth):
            xy, xx, yy = (_nngp_conv(m, 3, var_weight, var_bias, 1, 1) for m in (xy, xx, yy))
            h, w = xy.shape[-2:]
            xx_yy = (xx.reshape(rows, 1, h, w) * yy.reshape(1, k2, h, w)).reshape(
                rows * k2, 1, h, w
            ) + _F32_TINY
            cos_theta = (xy * xx_yy.rsqrt()).clamp(-1, 1)
            sin_theta = (xx_yy - xy * xy).clamp(min=0).sqrt()
            xy = (sin_theta + (math.pi - torch.acos(cos_theta)) * xy) / (2 * math.pi)
            xx, yy = xx / 2.0, yy / 2.0
            if same:
                grid = xy.reshape(rows, k2, h, w)
                diagonal = torch.arange(start, stop)
                grid[diagonal - start, diagonal] = xx.reshape(rows, h, w)
                xy = grid.reshape(rows * k2, 1, h, w)
            xy, xx, yy = (_nngp_conv(m, 2, 1.0, 0.0, 2, 0) for m in (xy, xx, yy))
        final = side >> depth
        xy = _nngp_conv(xy, final, 1.0, 0.0, 1, 0)
        result[start:stop] = xy.reshape(rows, k2).numpy()
    return result


# --- comparing specs -----------------------------------------------------------------------


def _check_comparable(left: ImageRKME, right: ImageRKME) -> None:
    if not left.kernel.compatible_with(right.kernel):
        raise _bad(
            "kernel",
            f"the specs use different kernels (version {left.kernel.version} "
            f"{left.kernel.describe()} vs version {right.kernel.version} "
            f"{right.kernel.describe()}); they cannot be compared",
        )
    if left.spec.z.shape[1:] != right.spec.z.shape[1:]:
        raise _bad(
            "z",
            f"the specs' images differ in shape ({left.spec.z.shape[1:]} vs "
            f"{right.spec.z.shape[1:]}); they cannot be compared",
        )


def image_inner_product(left: ImageRKME, right: ImageRKME) -> float:
    """<left, right> in the specs' common kernel (version 2: phi . phi; version 1: NNGP)."""
    _check_comparable(left, right)
    if left.kernel.version == RKME_IMAGE_VERSION:
        return float(image_embedding(left) @ image_embedding(right))
    same = left is right
    gram = nngp_kernel(left.spec.z, None if same else right.spec.z, left.kernel.depth)
    return float(left.spec.beta @ gram @ right.spec.beta)


def image_mmd2(left: ImageRKME, right: ImageRKME) -> float:
    """Squared MMD between two image specs of one kernel; InvalidArgument ("kernel") if their
    kernels differ. Version 2: exactly ||mu_l - mu_r||^2. Version 1: the reference's `dist`."""
    _check_comparable(left, right)
    if left.kernel.version == RKME_IMAGE_VERSION:
        difference = image_embedding(left) - image_embedding(right)
        return float(difference @ difference)
    return (
        image_inner_product(left, left)
        - 2.0 * image_inner_product(left, right)
        + image_inner_product(right, right)
    )


def image_mmd2_to_data(
    spec: ImageRKME,
    images: object,
    *,
    layout: str = "NCHW",
    value_range: tuple[float, float] | None = None,
) -> float:
    """Exact squared MMD between a version-2 spec and the uniform embedding of `images`
    (preprocessed as for fitting, all of them)."""
    kernel = _v2_kernel(spec.kernel, "spec.kernel")
    mean, channels = _data_mean_features(images, layout, value_range, kernel)
    if channels != spec.channels:
        raise _bad("images", f"have {channels} channels but the spec's have {spec.channels}")
    difference = image_embedding(spec) - mean
    return float(difference @ difference)


def uniform_image_spec(
    images: object,
    *,
    layout: str = "NCHW",
    value_range: tuple[float, float] | None = None,
    kernel: ImageKernel | None = None,
) -> ImageRKME:
    """Every image as a reduced-set point with weight 1/N (the reference's `reduce=False`,
    which is broken there): the exact empirical embedding, for small sets and checks."""
    kernel = _v2_kernel(kernel)
    z = preprocess_images(images, layout=layout, value_range=value_range, kernel=kernel)
    n = z.shape[0]
    spec = RKMESpec(
        z=z.numpy().astype(np.float64),
        beta=np.full(n, 1.0 / n),
        num_points=n,
        type=SpecType.IMAGE,
    )
    return ImageRKME(spec=spec, kernel=kernel)


# --- fitting -------------------------------------------------------------------------------


def _check_config(
    reduced_set_size: int, steps: int, step_size: float, sample_size: int | None, seed: int
) -> None:
    problems: list[FieldViolation] = []

    def integer(name: str, value: object, low: int) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= low

    if not integer("reduced_set_size", reduced_set_size, 1):
        problems.append(
            FieldViolation("reduced_set_size", f"must be an integer >= 1, got {reduced_set_size!r}")
        )
    if not integer("steps", steps, 0):
        problems.append(FieldViolation("steps", f"must be an integer >= 0, got {steps!r}"))
    if not (isinstance(step_size, int | float) and math.isfinite(step_size) and step_size > 0):
        problems.append(FieldViolation("step_size", f"must be a number > 0, got {step_size!r}"))
    if sample_size is not None and not integer("sample_size", sample_size, 1):
        problems.append(
            FieldViolation("sample_size", f"must be an integer >= 1 or None, got {sample_size!r}")
        )
    if not integer("seed", seed, 0):
        problems.append(FieldViolation("seed", f"must be an integer >= 0, got {seed!r}"))
    if problems:
        raise InvalidArgument.of(problems, "invalid image RKME configuration")


def effective_image_reduced_set_size(requested: int, n: int) -> int:
    """The reference's small-N rule: K = 2n/3 when n <= K."""
    return max(1, (2 * n) // 3) if requested >= n else requested


def _kmeans_plus_plus_indices(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on rows of x: k row indices, each drawn with probability ~ squared
    distance to the nearest chosen row (distinct unless rows coincide)."""
    sqnorm = np.einsum("ij,ij->i", x, x)
    chosen = [int(rng.integers(x.shape[0]))]
    nearest = np.maximum(sqnorm - 2.0 * (x @ x[chosen[0]]) + sqnorm[chosen[0]], 0.0)
    for _ in range(1, k):
        cumulative = np.cumsum(nearest)
        if cumulative[-1] > 0:
            pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            pick = min(pick, x.shape[0] - 1)
        else:
            pick = int(rng.integers(x.shape[0]))
        chosen.append(pick)
        distance = sqnorm - 2.0 * (x @ x[pick]) + sqnorm[pick]
        np.minimum(nearest, np.maximum(distance, 0.0), out=nearest)
    return np.asarray(chosen)


def _solve_beta(
    phi_z: np.ndarray, target: np.ndarray, nonnegative: bool, start: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """The beta-step for features phi(z) [K, F] and mu_X [F]: (beta, ||phi^T beta - mu_X||^2)."""
    gram = phi_z @ phi_z.T
    c = phi_z @ target
    if nonnegative:
        beta = solve_simplex_qp(gram, c, start=start)
    else:
        hessian = gram + UNCONSTRAINED_RIDGE * np.eye(c.shape[0])
        beta = np.linalg.solve(hessian, c)
    residual = beta @ phi_z - target
    return beta, float(residual @ residual)


def fit_image_rkme(
    images: object,
    *,
    layout: str = "NCHW",
    value_range: tuple[float, float] | None = None,
    reduced_set_size: int = DEFAULT_REDUCED_SET_SIZE,
    steps: int = DEFAULT_STEPS,
    step_size: float = DEFAULT_STEP_SIZE,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
    nonnegative_beta: bool = True,
    kernel: ImageKernel | None = None,
    progress: Progress | None = None,
    device: str | None = "auto",
) -> ImageRKME:
    """Fit a version-2 image RKME to `images` (see the module docs).

    `steps` rounds of (beta-step, `ADAM_STEPS_PER_ROUND` Adam steps of size `step_size` on z);
    `steps=0` gives the k-means++ initialisation with its optimal beta. Above `sample_size`
    images (None: never) a seeded subsample is fitted, as the reference does. `seed` seeds the
    subsample and initialisation (the kernel has its own `kernel.seed`). Raises InvalidArgument
    for bad images ("images", "layout", "value_range") or configuration. `device` ("auto",
    "cpu", "cuda[:N]"; see `lwdock.rkme.device`): where the feature network and the Adam
    steps run (the random features are drawn on the CPU, so the kernel is the same).
    """
    report = progress or (lambda stage, fraction: None)
    _check_config(reduced_set_size, steps, step_size, sample_size, seed)
    on = torch.device(resolve_device(device))
    kernel = _v2_kernel(kernel)
    array = _as_image_array(images, layout)
    prepare = _preprocessor(array, layout, value_range, kernel)
    n_all = int(array.shape[0])
    sample_rng, init_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3)
    )

    rows: np.ndarray | None = None
    if sample_size is not None and n_all > sample_size:
        # validate every image (the reference cleans all of them before subsampling)
        for _ in _batches(array, None, prepare):
            pass
        rows = np.sort(sample_rng.choice(n_all, size=int(sample_size), replace=False))
    n = n_all if rows is None else int(rows.size)
    k = effective_image_reduced_set_size(int(reduced_set_size), n)
    candidates = np.arange(n)
    if n > max(INIT_ROWS, k):
        candidates = np.sort(init_rng.choice(n, size=max(INIT_ROWS, k), replace=False))
    is_candidate = np.zeros(n, dtype=bool)
    is_candidate[candidates] = True

    # 1. the target mu_X (and the candidates' images and features), in one pass
    report("embedding", 0.0)
    total = np.zeros(kernel.feature_count)
    candidate_images: list[torch.Tensor] = []
    candidate_features: list[np.ndarray] = []
    low, high = math.inf, -math.inf
    done = 0
    with torch.no_grad():
        for _, batch in _batches(array, rows, prepare):
            batch = batch.to(on)
            phi = _features(batch, kernel).double()
            total += phi.sum(dim=0).cpu().numpy()
            keep = torch.from_numpy(is_candidate[done : done + batch.shape[0]]).to(on)
            if bool(keep.any()):
                candidate_images.append(batch[keep])
                candidate_features.append(phi[keep].cpu().numpy())
            low, high = min(low, float(batch.min())), max(high, float(batch.max()))
            done += batch.shape[0]
            report("embedding", 0.3 * done / n)
    target = total / n
    pool = torch.cat(candidate_images)
    pool_features = np.concatenate(candidate_features)

    # 2. initialisation: k-means++ in feature space, plus a little noise
    report("initialising", 0.3)
    chosen = _kmeans_plus_plus_indices(pool_features, k, init_rng)
    noise = torch.from_numpy(noise_rng.standard_normal((k, *pool.shape[1:])).astype(np.float32))
    start = pool[torch.from_numpy(chosen).to(on)] + INIT_NOISE * noise.to(on)
    z = torch.nn.Parameter(start.clamp(low, high))

    # 3. rounds of: beta-step on phi(z), then Adam steps on z with beta fixed (the first Adam
    # step reuses the beta-step's forward pass); the best (z, beta) seen is kept
    optimiser = torch.optim.Adam([z], lr=float(step_size))
    target_tensor = torch.from_numpy(target.astype(np.float32)).to(on)
    best: tuple[float, torch.Tensor, np.ndarray] | None = None
    beta: np.ndarray | None = None
    for round_index in range(int(steps) + 1):
        last = round_index == steps
        with torch.set_grad_enabled(not last):
            phi = _features(z, kernel)
        phi_cpu = phi.detach().double().cpu().numpy()
        beta, value = _solve_beta(phi_cpu, target, nonnegative_beta, beta)
        if best is None or value < best[0]:
            best = (value, z.detach().clone(), beta)
        if last:
            break
        beta_tensor = torch.from_numpy(beta.astype(np.float32)).to(on)
        for adam_step in range(ADAM_STEPS_PER_ROUND):
            if adam_step:
                phi = _features(z, kernel)
            optimiser.zero_grad(set_to_none=True)
            residual = beta_tensor @ phi - target_tensor
            (residual @ residual).backward()
            optimiser.step()
            with torch.no_grad():
                z.clamp_(low, high)
        report("optimising", 0.35 + 0.6 * (round_index + 1) / steps)

    report("finalising", 0.95)
    assert best is not None
    value, z_best, beta = best
    spec = RKMESpec(
        z=z_best.cpu().numpy().astype(np.float64),
        beta=beta,
        num_points=n_all,
        type=SpecType.IMAGE,
        fit_mmd2=max(value, 0.0),
    )
    report("done", 1.0)
    return ImageRKME(spec=spec.validate(), kernel=kernel)


# --- the reference's JSON ------------------------------------------------------------------


def _whole(prefix: str) -> str:
    return prefix.rstrip(".") or "specification"


def image_spec_to_reference_dict(
    spec: RKMESpec, kernel: ImageKernel, *, msg: str | None = None
) -> dict[str, Any]:
    """The reference's keys in its order (`RKME_IMAGE_VERSION, msg, z, beta, n_models,
    model_config, type`), then ours, which its loader ignores: `num_points`, `fit_mmd2` and,
    for version 2, `kernel` (the full kernel description)."""
    data: dict[str, Any] = {
        "RKME_IMAGE_VERSION": kernel.version,
        "msg": msg,
        "z": np.asarray(spec.z, dtype=np.float32).tolist(),
        "beta": np.asarray(spec.beta, dtype=np.float64).tolist(),
        "n_models": kernel.n_models,
        "model_config": kernel.reference_model_config(),
        "type": SpecType.IMAGE.value,
    }
    if spec.num_points:
        data["num_points"] = spec.num_points
    if spec.fit_mmd2:
        data["fit_mmd2"] = spec.fit_mmd2
    if kernel.version == RKME_IMAGE_VERSION:
        data["kernel"] = kernel.describe()
    return data


def _kernel_from_dict(data: Mapping[str, Any], version: int, prefix: str) -> ImageKernel:
    n_models = data.get("n_models", REFERENCE_N_MODELS)
    config = data.get("model_config")
    if config is None:
        config = dict(REFERENCE_MODEL_CONFIG)
    if not isinstance(config, dict):
        raise _bad(f"{prefix}model_config", "expected a JSON object")
    try:
        width = round(float(config.get("k", 1)) * float(config.get("net_width", 128)))
    except (TypeError, ValueError, OverflowError):
        raise _bad(f"{prefix}model_config", f"k and net_width must be numbers: {config}") from None
    depth = config.get("net_depth", 3)
    if not (isinstance(depth, int) and not isinstance(depth, bool) and 1 <= depth <= 5):
        raise _bad(
            f"{prefix}model_config.net_depth", f"must be an integer in [1, 5], got {depth!r}"
        )
    if version == REFERENCE_IMAGE_VERSION:
        return ImageKernel(
            version=version,
            n_models=n_models,
            width=width,
            depth=depth,
            pixel_mean=None,
            pixel_std=None,
            model_config=config,
        ).validate(prefix)
    described = data.get("kernel")
    if described is None:
        described = {}
    if not isinstance(described, dict):
        raise _bad(f"{prefix}kernel", "expected a JSON object")
    if described.get("name", KERNEL_NAME) != KERNEL_NAME:
        raise _bad(
            f"{prefix}kernel.name", f"unknown kernel {described.get('name')!r}; {KERNEL_NAME!r}"
        )
    kernel = ImageKernel(
        version=version,
        n_models=described.get("n_models", n_models),
        width=described.get("width", width),
        depth=described.get("depth", depth),
        seed=described.get("seed", 0),
        pixel_mean=described.get("pixel_mean", PIXEL_MEAN),
        pixel_std=described.get("pixel_std", PIXEL_STD),
        image_size=described.get("image_size", IMAGE_SIZE),
    ).validate(f"{prefix}kernel.")
    if (kernel.n_models, kernel.width, kernel.depth) != (n_models, width, depth):
        raise _bad(
            f"{prefix}kernel",
            f"disagrees with n_models / model_config ({n_models}, k * net_width = {width}, "
            f"net_depth = {depth})",
        )
    return kernel


def image_spec_from_reference_dict(data: object, prefix: str = "") -> ImageRKME:
    """Load an image spec from the reference's JSON dict (version 1, or our version 2).

    z is read as float32 values (kept in a float64 array), beta as float64. Raises
    InvalidArgument naming the bad field (with `prefix`)."""
    if not isinstance(data, dict):
        raise _bad(_whole(prefix), "expected a JSON object")
    if "type" in data and parse_type(data.get("type")) is not SpecType.IMAGE:
        raise _bad(f"{prefix}type", f"expected {SpecType.IMAGE.value}, got {data.get('type')!r}")
    version = data.get("RKME_IMAGE_VERSION", REFERENCE_IMAGE_VERSION)
    if version not in (REFERENCE_IMAGE_VERSION, RKME_IMAGE_VERSION) or isinstance(version, bool):
        raise _bad(f"{prefix}RKME_IMAGE_VERSION", f"must be 1 or 2, got {version!r}")
    missing = [key for key in ("z", "beta") if key not in data]
    if missing:
        raise InvalidArgument.of(
            [FieldViolation(f"{prefix}{key}", "required") for key in missing],
            "incomplete specification",
        )
    try:
        z = np.asarray(data["z"], dtype=np.float32).astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise _bad(f"{prefix}z", f"not a numeric array: {exc}") from None
    try:
        beta = np.asarray(data["beta"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise _bad(f"{prefix}beta", f"not a numeric array: {exc}") from None
    if z.ndim != 4 or z.shape[0] == 0 or z.shape[1] == 0 or z.shape[2:] != (IMAGE_SIZE,) * 2:
        raise _bad(
            f"{prefix}z", f"needs shape [K >= 1, C >= 1, {IMAGE_SIZE}, {IMAGE_SIZE}], got {z.shape}"
        )
    msg = data.get("msg")
    try:
        num_points = int(data.get("num_points") or 0)
        fit_mmd2 = float(data.get("fit_mmd2") or 0.0)
    except (TypeError, ValueError):
        raise _bad(f"{prefix}num_points", "num_points / fit_mmd2 must be numbers") from None
    kernel = _kernel_from_dict(data, int(version), prefix)
    spec = RKMESpec(
        z=z, beta=beta, num_points=num_points, type=SpecType.IMAGE, fit_mmd2=fit_mmd2
    ).validate(prefix)
    return ImageRKME(spec=spec, kernel=kernel, msg=None if msg is None else str(msg))
