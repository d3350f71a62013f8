"""gracerun.core.tuples.NamedTuple behaves as typing.NamedTuple does for our records."""

from __future__ import annotations

import pickle
import typing

import pytest

from gracerun.core.tuples import NamedTuple

pytestmark = pytest.mark.timeout(10)


class Point(NamedTuple):
    """A point."""

    x: int
    y: int = 0
    label: str | None = None

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)

    @property
    def origin(self) -> bool:
        return self.x == self.y == 0


class Typed(typing.NamedTuple):
    x: int
    y: int = 0
    label: str | None = None


def test_fields_defaults_and_methods_match_typing_namedtuple() -> None:
    p = Point(3, -4)
    assert isinstance(p, tuple) and p == (3, -4, None)
    assert Point._fields == Typed._fields == ("x", "y", "label")
    assert Point._field_defaults == Typed._field_defaults == {"y": 0, "label": None}
    assert p.norm1() == 7 and not p.origin and Point(0).origin
    assert p._replace(y=1) == Point(3, 1) and p._asdict() == {"x": 3, "y": -4, "label": None}
    assert Point.__doc__ == "A point." and Point.__module__ == __name__
    assert Point.__annotations__ == {"x": "int", "y": "int", "label": "str | None"}
    assert repr(p) == "Point(x=3, y=-4, label=None)"
    assert pickle.loads(pickle.dumps(p)) == p
    with pytest.raises(AttributeError):
        p.x = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default follows"):
        class Bad(NamedTuple):
            a: int = 0
            b: int  # type: ignore[misc]
