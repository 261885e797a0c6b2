from learnware.model.base import BaseModel

__all__ = ["BaseModel"]
