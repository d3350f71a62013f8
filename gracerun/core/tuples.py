"""`NamedTuple` for gracerun's own records: typing.NamedTuple's syntax and
behaviour, at a fifth of its start-up cost.

Why.  Under `from __future__ import annotations` every field's annotation is a
string, and typing.NamedTuple turns each into a ForwardRef, compiling it: the
fifteen record classes on the path to the spawn cost 6.8 ms that way, 1.4 ms as
plain `collections.namedtuple` classes (measured on the 2-core CI machine).
So at run time `NamedTuple` here is a base whose metaclass builds the
collections.namedtuple from the class body (field names in order, defaults,
methods, docstring) and keeps the annotations as they are; type checkers see
typing.NamedTuple itself, so fields stay typed.

    from gracerun.core.tuples import NamedTuple

    class Trigger(NamedTuple):
        name: str
        signum: int | None = None
"""

from __future__ import annotations

from collections import namedtuple
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    # What the class body holds that is not for the namedtuple to copy.
    _SKIP = frozenset({"__module__", "__qualname__", "__annotations__", "__dict__",
                       "__weakref__", "__orig_bases__"})

    class _Meta(type):
        def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
            if ns.get("_base"):
                return super().__new__(mcls, name, bases, ns)
            fields = list(ns.get("__annotations__", {}))
            defaulted = [f in ns for f in fields]
            if defaulted != sorted(defaulted):  # every required field first
                raise TypeError(f"{name}: a field without a default follows one with a default")
            defaults = [ns[f] for f in fields if f in ns]
            made = namedtuple(name, fields, defaults=defaults, module=ns.get("__module__"))
            made.__qualname__ = ns.get("__qualname__", name)
            made.__annotations__ = dict(ns.get("__annotations__", {}))
            for key, value in ns.items():
                if key not in _SKIP and key not in fields:
                    setattr(made, key, value)
            return made

    class NamedTuple(metaclass=_Meta):
        _base = True
