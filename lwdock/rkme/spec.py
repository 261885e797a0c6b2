"""The RKME specification value and the reference package's JSON format for it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from lwdock.errors import FieldViolation, InvalidArgument


class SpecType(StrEnum):
    """The reference's JSON `type` strings."""

    TABLE = "RKMETableSpecification"
    IMAGE = "RKMEImageSpecification"
    TEXT = "RKMETextSpecification"


# Older packages write the alias class name; it is a table spec.
TYPE_ALIASES = {"RKMEStatSpecification": SpecType.TABLE}


def parse_type(value: str | None) -> SpecType:
    if not value:  # Beimingwu reads a JSON without `type` as a table spec.
        return SpecType.TABLE
    if value in TYPE_ALIASES:
        return TYPE_ALIASES[value]
    try:
        return SpecType(value)
    except ValueError:
        allowed = ", ".join(t.value for t in SpecType)
        raise InvalidArgument.for_field(
            "type", f"unknown type {value!r}; one of {allowed}"
        ) from None


def _whole(prefix: str) -> str:
    """The field path of the whole specification, from a prefix like `left.rkme.`."""
    return prefix.rstrip(".") or "specification"


@dataclass
class RKMESpec:
    """sum_i beta_i k(z_i, .) with k(a, b) = exp(-gamma ||a - b||^2).

    z has shape [K, *sample_shape] (float64); beta has shape [K].
    """

    z: np.ndarray
    beta: np.ndarray
    gamma: float = 0.1
    num_points: int = 0
    type: SpecType = SpecType.TABLE
    language: list[str] = field(default_factory=list)
    embedding_model: str = ""
    fit_mmd2: float = 0.0
    # Image specs: the kernel they live in (lwdock.rkme.image.ImageKernel) and the
    # reference's free-text `msg`.
    image_kernel: Any = None
    msg: str | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.z.shape[1:])

    @property
    def flat_z(self) -> np.ndarray:
        return self.z.reshape(self.z.shape[0], -1)

    def validate(self, prefix: str = "") -> RKMESpec:
        """Raise InvalidArgument naming every problem; return self when valid."""
        problems: list[FieldViolation] = []
        if self.z.ndim < 2 or self.z.shape[0] == 0 or self.flat_z.shape[1] == 0:
            problems.append(
                FieldViolation(f"{prefix}z", f"needs shape [K >= 1, d >= 1], got {self.z.shape}")
            )
        elif not np.all(np.isfinite(self.z)):
            problems.append(FieldViolation(f"{prefix}z", "contains NaN or infinite values"))
        if self.beta.ndim != 1 or self.beta.shape[0] != (self.z.shape[0] if self.z.ndim else -1):
            problems.append(
                FieldViolation(
                    f"{prefix}beta",
                    f"needs one weight per reduced-set point ({self.z.shape[:1]}), "
                    f"got shape {self.beta.shape}",
                )
            )
        elif not np.all(np.isfinite(self.beta)):
            problems.append(FieldViolation(f"{prefix}beta", "contains NaN or infinite values"))
        if not (np.isfinite(self.gamma) and self.gamma > 0):
            problems.append(FieldViolation(f"{prefix}gamma", f"must be > 0, got {self.gamma}"))
        if self.num_points < 0:
            problems.append(FieldViolation(f"{prefix}num_points", "must be >= 0"))
        if problems:
            raise InvalidArgument(
                "invalid specification: "
                + "; ".join(f"{p.field}: {p.description}" for p in problems),
                problems,
            )
        return self

    # --- the reference's JSON (RKMETableSpecification.save / load) ---------------------

    @classmethod
    def from_reference_dict(cls, data: dict, prefix: str = "") -> RKMESpec:
        if not isinstance(data, dict):
            raise InvalidArgument.for_field(_whole(prefix), "expected a JSON object")
        if "RKME_IMAGE_VERSION" in data or parse_type(data.get("type")) is SpecType.IMAGE:
            from lwdock.rkme.image import image_spec_from_reference_dict

            image = image_spec_from_reference_dict(data, prefix)
            image.spec.image_kernel, image.spec.msg = image.kernel, image.msg
            return image.spec
        missing = [key for key in ("z", "beta") if key not in data]
        if missing:
            raise InvalidArgument.of(
                [FieldViolation(f"{prefix}{key}", "required") for key in missing],
                "incomplete specification",
            )
        try:
            z = np.asarray(data["z"], dtype=np.float64)
            beta = np.asarray(data["beta"], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument.for_field(f"{prefix}z", f"not a numeric array: {exc}") from None
        if z.ndim == 1:
            z = z.reshape(1, -1)
        spec = cls(
            z=z,
            beta=beta,
            gamma=float(data.get("gamma", 0.1)),
            num_points=int(data.get("num_points", 0) or 0),
            type=parse_type(data.get("type")),
            language=list(data.get("language") or []),
            embedding_model=str(data.get("embedding_model") or ""),
            fit_mmd2=float(data.get("fit_mmd2") or 0.0),
        )
        return spec.validate(prefix)

    @classmethod
    def from_reference_json(cls, text: str | bytes, prefix: str = "") -> RKMESpec:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument.for_field(_whole(prefix), f"not JSON: {exc}") from None
        return cls.from_reference_dict(data, prefix)

    def to_reference_dict(self) -> dict:
        """Keys in the reference's order (`z, beta, gamma, num_points, type`, then text's
        `language`); our extra keys are ignored by the reference's loader."""
        if self.type is SpecType.IMAGE:
            from lwdock.rkme.image import image_spec_to_reference_dict

            if self.image_kernel is None:
                raise InvalidArgument.for_field("image_kernel", "an image spec needs its kernel")
            return image_spec_to_reference_dict(self, self.image_kernel, msg=self.msg)
        data: dict = {
            "z": self.z.tolist(),
            "beta": self.beta.tolist(),
            "gamma": self.gamma,
            "num_points": self.num_points,
            "type": self.type.value,
        }
        if self.type is SpecType.TEXT:
            data["language"] = list(self.language)
            data["embedding_model"] = self.embedding_model
        if self.fit_mmd2:
            data["fit_mmd2"] = self.fit_mmd2
        return data

    def to_reference_json(self) -> str:
        return json.dumps(self.to_reference_dict(), separators=(",", ":"))
