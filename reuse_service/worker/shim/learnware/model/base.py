"""`learnware.model.base.BaseModel` with the reference's constructor and no-op fit/finetune."""

from __future__ import annotations

from typing import Any


class BaseModel:
    def __init__(self, input_shape: tuple | None, output_shape: tuple | None) -> None:
        self.input_shape = input_shape
        self.output_shape = output_shape

    def predict(self, X: Any) -> Any:
        raise NotImplementedError("predict is not implemented by this learnware")

    def fit(self, X: Any, y: Any) -> None:
        pass

    def finetune(self, X: Any, y: Any) -> None:
        pass
