"""Fast construction of the frozen event types, and the request path's rebuilds of an event
(another channel, hashed identifiers instead of raw PII)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from operator import attrgetter
from typing import Any, Final, ParamSpec, TypeVar

from gateway.core.event import Content, Data, Event, PiiHasher, User

_P = ParamSpec("_P")
_T = TypeVar("_T")

# -- Fast construction --------------------------------------------------------------------------
# A frozen dataclass's __init__ stores every field with `object.__setattr__` (its own
# __setattr__ refuses), a generic attribute lookup per field. Each event on the request path
# builds six of these objects (Content, Data, User, Event when parsed; User, Event when hashed),
# which made construction about a tenth of the event's CPU cost. The builders below take the
# same arguments as the classes (same order, names, defaults and default factories) and store
# each field through its slot descriptor instead, about twice as fast; what they return is an
# ordinary instance of the class, indistinguishable from one made by calling it.


def _slot_builder(cls: Callable[_P, _T]) -> Callable[_P, _T]:
    """Return a faster equivalent of a frozen slots dataclass's constructor.

    Generated from the class's own fields, as dataclasses generates __init__; only for classes
    without __post_init__, init=False or keyword-only fields (none here).
    """
    if not (isinstance(cls, type) and is_dataclass(cls) and "__slots__" in vars(cls)):
        raise TypeError(f"{cls!r} is not a slots dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__")
    # The fields are stored on an instance of a plain twin class with the very same slots
    # (an ordinary, specialised attribute store each), then the instance becomes a `cls`
    # (``__class__`` assignment, allowed between identical layouts): about 40% cheaper than a
    # descriptor call per field. If this Python refuses the assignment, the builder stores
    # through the frozen class's own slot descriptors instead.
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": vars(cls)["__slots__"]})
    env: dict[str, Any] = {
        "_new": object.__new__,
        "_cls": cls,
        "_twin": twin,
        "_MISSING": MISSING,
    }
    params: list[str] = []
    defaults: list[str] = []
    stores: list[str] = []
    sets: list[str] = []
    for f in fields(cls):
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name} is init=False or keyword-only")
        env[f"_set_{f.name}"] = vars(cls)[f.name].__set__  # the slot's member descriptor
        if f.default is not MISSING:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            defaults.append(f"    if {f.name} is _MISSING:\n        {f.name} = _factory_{f.name}()")
        else:
            params.append(f.name)
        stores.append(f"    self.{f.name} = {f.name}")
        sets.append(f"    _set_{f.name}(self, {f.name})")
    head = f"def build({', '.join(params)}):"
    swap = [head, *defaults, "    self = _new(_twin)", *stores, "    self.__class__ = _cls"]
    plain = [head, *defaults, "    self = _new(_cls)", *sets]
    for lines in (swap, plain):
        namespace = dict(env)
        exec("\n".join([*lines, "    return self"]), namespace)  # noqa: S102 - field names only
        builder: Callable[_P, _T] = namespace["build"]
        probe: Callable[..., object] = namespace["build"]
        try:
            sample = probe(*[_SAMPLE] * len(_required(cls)))
        except TypeError:
            continue  # this Python refuses the __class__ assignment: the descriptor builder
        if type(sample) is cls:
            return builder
    raise TypeError(f"cannot build {cls.__name__} quickly")


_SAMPLE: Final = object()


def _required(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]


_new_content: Final = _slot_builder(Content)
_new_data: Final = _slot_builder(Data)
_new_user: Final = _slot_builder(User)
_new_event: Final = _slot_builder(Event)
_EVENT_FIELDS: Final = tuple(f.name for f in fields(Event))
_event_values: Final = attrgetter(*_EVENT_FIELDS)
"""Every field of an Event in declaration (= constructor) order, read in one call."""
_USER_AT: Final = _EVENT_FIELDS.index("user")


_CHANNEL_AT: Final = _EVENT_FIELDS.index("channel")
_LDU_AT: Final = _EVENT_FIELDS.index("ldu")


def with_channel(event: Event, channel: str, *, ldu: bool | None = None) -> Event:
    """Return ``replace(event, channel=channel)`` (and ``ldu=ldu`` unless None), for the
    request path: one fast build instead of `replace`'s generic field walk."""
    values: list[Any] = list(_event_values(event))
    values[_CHANNEL_AT] = channel
    if ldu is not None:
        values[_LDU_AT] = ldu
    return _new_event(*values)


def with_hashed(event: Event, hashed: Mapping[str, Mapping[str, tuple[str, ...]]]) -> Event:
    """Return the event with its raw PII dropped and `hashed` as its hashed identifiers.

    Same as ``replace(event, user=User(hashed=hashed, ip=…, …, click_ids=…))`` (every other
    field of the event and the user's plain browser ids carried over), for the request path.
    """
    u = event.user
    user = _new_user({}, hashed, u.ip, u.user_agent, u.visitor_id, u.fbc, u.fbp, u.click_ids)
    values: list[Any] = list(_event_values(event))
    values[_USER_AT] = user
    return _new_event(*values)


def _hash_user(event: Event, hasher: PiiHasher) -> Event:
    """Return the parsed event with its PII replaced by what `hasher` makes of it."""
    u = event.user
    if not u.pii:
        return event
    user = _new_user({}, hasher(u.pii), u.ip, u.user_agent, u.visitor_id, u.fbc, u.fbp, u.click_ids)
    values: list[Any] = list(_event_values(event))
    values[_USER_AT] = user
    return _new_event(*values)
