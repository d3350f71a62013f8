"""Frozen keyword records for the configuration, without `dataclasses`.

Why not dataclasses.  Config validation runs before the service is spawned, and
the records of a hook or probe were frozen dataclasses: importing `dataclasses`
(which imports `inspect`, `ast`, `dis`, `tokenize`) cost ~9 ms, and creating the
record classes, each a handful of functions compiled with exec(), ~15 ms more;
together a third of the service's start-up delay with a full configuration.
A subclass of Record gets the same behaviour from generic methods instead: a
keyword __init__ taking each field (its default, or a fresh one from its factory,
when not given) followed by __post_init__, frozen attributes (raising
dataclasses.FrozenInstanceError), __eq__ and __hash__ over the fields, and a repr
that leaves out the fields declared repr=False.

Fields are the class's own annotated names, after its bases' (a redeclared field
keeps its place), as with dataclasses; a value that is not a Field is the field's
default.  `fields()` lists them.  `dataclasses.fields()` and `dataclasses.replace()`
work on records too (tests and tools use them): `__dataclass_fields__` builds the
dataclasses' view of the fields on first use, importing dataclasses only then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda cls: cls


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a field without a default (a required key)


class Field:
    """One field: its default or default factory, metadata (opt()'s declarations)
    and whether the repr shows it.  `name` is set when the class is created."""

    __slots__ = ("default", "default_factory", "metadata", "name", "repr", "type")

    def __init__(self, default: Any = MISSING, *, default_factory: Any = MISSING,
                 metadata: Mapping[str, Any] | None = None, repr: bool = True) -> None:
        self.default = default
        self.default_factory: Callable[[], Any] | Any = default_factory
        self.metadata: Mapping[str, Any] = metadata or {}
        self.repr = repr
        self.name = ""
        self.type: Any = None

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, default={self.default!r})"


def fields(cls_or_record: Any) -> tuple[Field, ...]:
    """The record's fields, in order (the dataclasses.fields() of a Record)."""
    cls = cls_or_record if isinstance(cls_or_record, type) else type(cls_or_record)
    found: tuple[Field, ...] = cls.__dict__["_record_fields"]
    return found


class _DataclassFields(Mapping[str, Any]):
    """`__dataclass_fields__` of one record class: dataclasses.Field objects, made
    (and dataclasses imported) on first use only."""

    def __init__(self, cls: type) -> None:
        self._cls = cls
        self._made: dict[str, Any] | None = None

    def _fields(self) -> dict[str, Any]:
        if self._made is None:
            import dataclasses

            made = {}
            for f in fields(self._cls):
                given: dict[str, Any] = {"repr": f.repr, "metadata": f.metadata,
                                         "kw_only": self._cls.__dict__["_record_kw_only"]}
                if f.default_factory is not MISSING:
                    given["default_factory"] = f.default_factory
                elif f.default is not MISSING:
                    given["default"] = f.default
                g: Any = dataclasses.field(**given)
                g.name, g.type = f.name, f.type
                g._field_type = dataclasses._FIELD  # type: ignore[attr-defined]
                made[f.name] = g
            self._made = made
        return self._made

    def __getitem__(self, name: str) -> Any:
        return self._fields()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields())

    def __len__(self) -> int:
        return len(self._fields())


# opt() (kinds.py) is no field specifier to mypy: its fields all count as having
# defaults, as they did for dataclasses (a missing key is the reader's to report).
@dataclass_transform(kw_only_default=True, frozen_default=True)
class Record:
    """A frozen record whose fields are its annotated class attributes (see above).

    `class X(Record, kw_only=False)` also takes the fields positionally, in order.
    """

    _record_fields: tuple[Field, ...] = ()
    _record_kw_only: bool = True

    def __init_subclass__(cls, kw_only: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inherited = {f.name: f for f in fields(cls.__mro__[1])} \
            if "_record_fields" in cls.__mro__[1].__dict__ else {}
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063 (no inspect: start-up time)
            value = cls.__dict__.get(name, MISSING)
            f = value if isinstance(value, Field) else Field(value)
            f.name, f.type = name, annotation
            inherited[name] = f  # a redeclared field keeps its base's place
            # As dataclasses do: the class attribute is the default, or absent.
            if f.default is MISSING:
                if name in cls.__dict__:
                    delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        cls._record_fields = tuple(inherited.values())
        cls._record_kw_only = kw_only
        cls.__dataclass_fields__ = _DataclassFields(cls)  # type: ignore[attr-defined]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        spec = cls._record_fields
        if args:
            if cls._record_kw_only or len(args) > len(spec):
                raise TypeError(f"{cls.__name__}() takes keyword arguments only"
                                if cls._record_kw_only else
                                f"{cls.__name__}() takes at most {len(spec)} positional "
                                f"arguments ({len(args)} given)")
            for f, value in zip(spec, args, strict=False):
                if f.name in kwargs:
                    raise TypeError(f"{cls.__name__}() got multiple values for argument "
                                    f"{f.name!r}")
                kwargs[f.name] = value
        for f in spec:
            if f.name in kwargs:
                value = kwargs.pop(f.name)
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            elif f.default is not MISSING:
                value = f.default
            else:
                raise TypeError(f"{cls.__name__}() missing 1 required keyword-only "
                                f"argument: {f.name!r}")
            object.__setattr__(self, f.name, value)
        if kwargs:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument "
                            f"{next(iter(kwargs))!r}")
        post = getattr(self, "__post_init__", None)
        if post is not None:
            post()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in type(self)._record_fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                          for f in type(self)._record_fields if f.repr)
        return f"{type(self).__qualname__}({shown})"

    def __setattr__(self, name: str, value: Any) -> None:
        import dataclasses  # the same error as a frozen dataclass's, imported only now

        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        import dataclasses

        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
