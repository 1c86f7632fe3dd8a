"""Reading a model card's JSON field by field, so a wrong field is named by its path.

`scene_contract.card` reads every field through `CardObject`; the first one missing or
of the wrong type raises `ModelCardError` with its dotted path (``input.size``).
"""

from __future__ import annotations

from typing import Any


class ModelCardError(ValueError):
    """The model card is missing, or a field is missing or malformed; the message names it."""


class CardObject:
    """One JSON object of the card being read, with its path for error messages."""

    _REQUIRED: Any = object()

    def __init__(self, value: dict[str, Any], path: str) -> None:
        self.value = value
        self.path = path  # "" for the card itself

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _REQUIRED) -> Any:
        """The value at ``key`` if it is a ``kind`` (a bool is never an int or a float)."""
        if key not in self.value:
            if default is CardObject._REQUIRED:
                raise ModelCardError(f"model card lacks {self.where(key)}")
            return default
        node = self.value[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(node, kinds) or (bool not in kinds and isinstance(node, bool)):
            raise ModelCardError(f"model card field {self.where(key)} has the wrong type: {node!r}")
        return node

    def flag(self, key: str, default: Any = _REQUIRED) -> Any:
        """A true/false field (``default`` when absent and a default is given)."""
        if key in self.value and not isinstance(self.value[key], bool):
            raise ModelCardError(
                f"model card {self.where(key)} must be true or false, got {self.value[key]!r}"
            )
        return self.get(key, bool, default)

    def child(self, key: str) -> CardObject:
        return CardObject(self.get(key, dict), self.where(key))

    def strings(self, key: str) -> dict[str, str]:
        """A JSON object of strings, e.g. ``versions``."""
        node = self.child(key)
        return {name: node.get(name, str) for name in node.value}
