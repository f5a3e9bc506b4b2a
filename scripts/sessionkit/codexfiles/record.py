"""Value classes that cost nothing to define: each lists its fields in __slots__ and sets them in an
explicit __init__, and gets a dataclass's equality and repr from Record. A @dataclass execs
generated code for every class at import, which a small home's read-only run pays (issue 24)."""
from __future__ import annotations

from typing import Any, Dict, Tuple, TypeVar

R = TypeVar("R", bound="Record")


class Record:
    """Fields in __slots__ order; equal when of the same class with equal fields; unhashable (as a
    dataclass with eq) unless a subclass says otherwise (FrozenRecord)."""
    __slots__ = ()

    def _values(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"

    def replaced(self: R, **changes: Any) -> R:
        """A copy with some fields changed (dataclasses.replace)."""
        return type(self)(**{**dict(zip(self.__slots__, self._values())), **changes})  # type: ignore[call-arg]

    def as_dict(self) -> Dict[str, Any]:
        """The fields by name (lists copied), as dataclasses.asdict gives them for flat records."""
        return {n: list(v) if isinstance(v, list) else v for n, v in zip(self.__slots__, self._values())}


class FrozenRecord(Record):
    """A record used as a key or in a set: hashed by its fields (its fields are never reassigned)."""
    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._values())
