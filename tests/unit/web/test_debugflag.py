"""web.debugflag: the debug header's value becomes the test code of events without one."""

from __future__ import annotations

import msgspec
import pytest

from gateway.core.fielderrors import FieldError
from gateway.core.wire import WireEvent
from gateway.web.debugflag import debug_code, mark_items, mark_typed


@pytest.mark.parametrize("value", [None, "", "  ", "0", "false", "OFF", "no"])
def test_no_flag(value: str | None) -> None:
    assert debug_code(value) is None


@pytest.mark.parametrize(("value", "code"), [("1", "1"), (" TEST12345 ", "TEST12345")])
def test_flag_is_the_code(value: str, code: str) -> None:
    assert debug_code(value) == code


@pytest.mark.parametrize("value", ["x" * 101, "tést", "a\tb"])
def test_bad_values_name_the_header(value: str) -> None:
    problem = debug_code(value)
    assert isinstance(problem, FieldError)
    assert problem.path == "headers.X-Signalgate-Debug"
    assert "printable ASCII" in problem.reason


def test_marks_only_events_without_their_own_code() -> None:
    typed = msgspec.json.decode(
        b'[{"event":"Purchase"},{"event":"Lead","test_code":"OWN1"},{"event":"A","test_code":""}]',
        type=list[WireEvent],
    )
    mark_typed(typed, "TEST9")
    assert [t.test_code for t in typed] == ["TEST9", "OWN1", "TEST9"]
    items: list[object] = [
        {"event": "Purchase"},
        {"event": "Lead", "test_code": "OWN1"},
        {"event": "Bad", "test_code": 5},
        "not an object",
    ]
    mark_items(items, "TEST9")
    assert items == [
        {"event": "Purchase", "test_code": "TEST9"},
        {"event": "Lead", "test_code": "OWN1"},
        {"event": "Bad", "test_code": 5},  # left for the parser to refuse
        "not an object",
    ]
