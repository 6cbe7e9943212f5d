"""Cheaper construction of frozen, slotted dataclasses made once per message (messages,
verdicts, decisions): :func:`quick_init` and :func:`quick_maker`."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, TypeVar

_FrozenT = TypeVar("_FrozenT")
_NOT_GIVEN = object()


def quick_init(cls: type[_FrozenT]) -> type[_FrozenT]:
    """Give a frozen, slotted dataclass a cheaper ``__init__`` (every message, verdict and
    decision is made through it): same parameters, defaults and factories; the instances stay
    frozen.

    The generated ``__init__`` calls ``object.__setattr__`` per field. This one lends the new
    instance a twin class with the same slots that is not frozen, fills each field with a
    plain attribute store (which the interpreter specialises for slots), and gives the
    instance its class back: two class swaps instead of a call per field, under half the
    cost for a decision's 13 fields. An instance of a subclass (whose layout may differ) is
    filled through the slots' descriptors instead."""
    target: Any = cls  # its __init__ is replaced below
    twin = type(f"_{cls.__name__}Filling", (), {"__slots__": target.__slots__,
                                                 "__module__": cls.__module__})
    probe: Any = object.__new__(twin)
    probe.__class__ = target  # raises TypeError now if the layouts differ
    namespace: dict[str, Any] = {"_NOT_GIVEN": _NOT_GIVEN, "_cls": cls, "_twin": twin,
                                 "_set_attribute": object.__setattr__}
    parameters, fill, fill_subclass = [], [], []
    for spec in fields(target):
        name = spec.name
        namespace[f"_set_{name}"] = getattr(target, name).__set__  # the slot's descriptor
        if spec.default is not MISSING:
            namespace[f"_default_{name}"] = spec.default
            parameters.append(f"{name}=_default_{name}")
            value = name
        elif spec.default_factory is not MISSING:
            namespace[f"_factory_{name}"] = spec.default_factory
            parameters.append(f"{name}=_NOT_GIVEN")
            value = f"_factory_{name}() if {name} is _NOT_GIVEN else {name}"
        else:
            parameters.append(name)
            value = name
        fill.append(f"        self.{name} = {value}")
        fill_subclass.append(f"        _set_{name}(self, {value})")
    source = "\n".join([
        f"def __init__(self, {', '.join(parameters)}):",
        "    if type(self) is _cls:",
        "        _set_attribute(self, '__class__', _twin)",
        *fill,
        "        self.__class__ = _cls",
        "    else:",
        *fill_subclass,
    ])
    exec(source, namespace)  # as dataclasses builds its own __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    target.__init__ = init
    _TWINS[cls] = twin
    return cls


#: The twin class of each :func:`quick_init` class (for :func:`quick_maker`).
_TWINS: dict[type, type] = {}


def quick_maker(cls: type, given: tuple[str, ...]) -> Any:
    """A function ``make(*values)`` that returns ``cls(**dict(zip(given, values)))``, the
    other fields at their defaults (a factory called for each), for a :func:`quick_init` class
    on a hot path: made as its ``__init__`` makes it, without the type call and the first
    class swap."""
    names = [spec.name for spec in fields(cls)]
    if [name for name in names if name in given] != list(given):
        raise ValueError(f"{given} are not fields of {cls.__name__} in their order")
    namespace: dict[str, Any] = {"_cls": cls, "_twin": _TWINS[cls], "_new": object.__new__}
    body = []
    for spec in fields(cls):
        value = spec.name
        if value not in given:
            if spec.default is not MISSING:
                namespace[f"_default_{value}"] = spec.default
                value = f"_default_{value}"
            elif spec.default_factory is dict:
                value = "{}"  # a new dict for each, as the factory makes it, without the call
            elif spec.default_factory is not MISSING:
                namespace[f"_factory_{value}"] = spec.default_factory
                value = f"_factory_{value}()"
            else:
                raise ValueError(f"{cls.__name__}.{value} has no default")
        body.append(f"    made.{spec.name} = {value}")
    source = "\n".join([f"def make({', '.join(given)}):", "    made = _new(_twin)", *body,
                        "    made.__class__ = _cls", "    return made"])
    exec(source, namespace)
    make = namespace["make"]
    make.__qualname__ = f"make_{cls.__qualname__}"
    return make
