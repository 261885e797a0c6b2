"""The semantic specification: the reference's vocabulary (and, later, its checker rules)."""

from lwdock.semantic.vocabulary import VOCABULARY, SemanticKey

__all__ = ["VOCABULARY", "SemanticKey"]
