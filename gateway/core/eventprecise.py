"""The precise event parser: every field checked, every problem reported with its JSON path."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping

from gateway.core.event import (
    CLICK_ID_KEYS,
    CONSENT_KEYS,
    LIST_PII,
    PII_FIELDS,
    VALUE_EVENTS,
    Consent,
    Content,
    Data,
    Event,
    Source,
    User,
    derive_event_id,
    ga_client_id,
)
from gateway.core.eventschema import (
    _CONSENT_KEY_SET,
    _CONTENT_KEYS,
    _COOKIE_SAFE_RE,
    _CURRENCY_RE,
    _CUSTOM_KEY_RE,
    _DATA_KEYS,
    _EVENT_KEYS,
    _FB_COOKIE_RE,
    _IDENTIFIER_RE,
    _IPV4_RE,
    _NAME_RE,
    _PRINTABLE_RE,
    _URL_RE,
    _USER_KEYS,
    FUTURE_SKEW,
    JSON,
    MAX_CONTENTS,
    MAX_CUSTOM_KEYS,
    MAX_ID,
    MAX_LIST,
    MAX_NAME,
    MAX_TEXT,
    MAX_UA,
    MAX_URL,
    ParseLimits,
    _isfinite,
    parse_time,
)
from gateway.core.fielderrors import FieldError, _Errors


def _unknown(obj: Mapping[str, JSON], allowed: frozenset[str], path: str, errs: _Errors) -> None:
    for key in obj:
        if key not in allowed:
            errs.add(f"{path}{_key(key)}", "unknown field")


def _key(key: str) -> str:
    return f".{key}" if _IDENTIFIER_RE.fullmatch(key) else f"[{key[:40]!r}]"


def _string(
    obj: Mapping[str, JSON],
    key: str,
    path: str,
    errs: _Errors,
    *,
    max_len: int = MAX_TEXT,
    allow_number: bool = False,
) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is str and len(value) <= max_len and value.isprintable():
        return value.strip() or None  # the common case, checked in C
    if allow_number and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif allow_number and type(value) is float and abs(value) >= 2**63:
        errs.add(f"{path}.{key}", "integer beyond 64 bits: send such ids as strings")
        return None
    if not isinstance(value, str):
        errs.add(f"{path}.{key}", "expected a string" + (" or an integer" if allow_number else ""))
        return None
    value = value.strip()
    if len(value) > max_len:
        errs.add(f"{path}.{key}", f"longer than {max_len} characters")
        return None
    if not _PRINTABLE_RE.match(value):
        errs.add(f"{path}.{key}", "contains control characters")
        return None
    return value or None


def _number(
    obj: Mapping[str, JSON], key: str, path: str, errs: _Errors, *, minimum: float | None = None
) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            errs.add(f"{path}.{key}", "expected a number")
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        errs.add(f"{path}.{key}", "expected a number")
        return None
    if not _isfinite(value) or abs(value) > 1e12:
        errs.add(f"{path}.{key}", "expected a finite number below 1e12")
        return None
    if minimum is not None and value < minimum:
        errs.add(f"{path}.{key}", f"must be >= {minimum:g}")
        return None
    return float(value)


def _integer(obj: Mapping[str, JSON], key: str, path: str, errs: _Errors) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        errs.add(f"{path}.{key}", "expected an integer between 0 and 1000000")
        return None
    return value


def _parse_user(obj: JSON, errs: _Errors) -> User:
    if obj is None:
        return User()
    if not isinstance(obj, dict):
        errs.add(".user", "expected an object")
        return User()
    _unknown(obj, _USER_KEYS, ".user", errs)
    pii: dict[str, tuple[str, ...]] = {}
    for name in [n for n in PII_FIELDS if n in obj]:
        key = PII_FIELDS[name]
        raw = obj[name]
        if raw is None:
            continue
        path = f".user.{name}"
        values: list[JSON] = raw if isinstance(raw, list) and name in LIST_PII else [raw]
        if len(values) > MAX_LIST:
            errs.add(path, f"at most {MAX_LIST} values")
            continue
        kept: list[str] = []
        for i, item in enumerate(values):
            item_path = path if values is not raw else f"{path}[{i}]"
            if (
                isinstance(item, int)
                and not isinstance(item, bool)
                and name in {"phone", "zip", "external_id", "date_of_birth"}
            ):
                item = str(item)
            if not isinstance(item, str):
                hint = " or a list of strings" if name in LIST_PII else ""
                errs.add(item_path, f"expected a string{hint}")
                continue
            if len(item) > MAX_TEXT:
                errs.add(item_path, f"longer than {MAX_TEXT} characters")
                continue
            if item.strip():
                kept.append(item)
        if kept:
            pii[key] = tuple(dict.fromkeys(kept))
    click_ids: dict[str, str] = {}
    raw_ids = obj.get("click_ids")
    if raw_ids is not None:
        if not isinstance(raw_ids, dict):
            errs.add(".user.click_ids", "expected an object")
        else:
            for k, v in raw_ids.items():
                if k.lower() not in CLICK_ID_KEYS:
                    errs.add(f".user.click_ids{_key(k)}", "unknown click id")
                elif not isinstance(v, str) or not _COOKIE_SAFE_RE.match(v):
                    errs.add(f".user.click_ids{_key(k)}", "expected 1-500 URL-safe characters")
                elif k.lower() == "ga":
                    client_id = ga_client_id(v)
                    if client_id is None:
                        errs.add(
                            f".user.click_ids{_key(k)}",
                            "expected a GA client id <random>.<seconds> or a _ga cookie value",
                        )
                    else:
                        click_ids["ga"] = client_id
                else:
                    click_ids[k.lower()] = v
    fbc = _string(obj, "fbc", ".user", errs, max_len=500)
    fbp = _string(obj, "fbp", ".user", errs, max_len=200)
    for key, val in (("fbc", fbc), ("fbp", fbp)):
        if val is not None and not _FB_COOKIE_RE.fullmatch(val):
            errs.add(f".user.{key}", "expected fb.<index>.<ms>.<id> as set by the pixel")
    return User(
        pii=pii,
        ip=_ip(obj, errs),
        user_agent=_string(obj, "user_agent", ".user", errs, max_len=MAX_UA),
        visitor_id=_string(obj, "visitor_id", ".user", errs, max_len=MAX_ID),
        fbc=fbc,
        fbp=fbp,
        click_ids=click_ids,
    )


def _ip(obj: Mapping[str, JSON], errs: _Errors) -> str | None:
    value = _string(obj, "ip", ".user", errs, max_len=64)
    if value is None:
        return None
    if _IPV4_RE.match(value):
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        errs.add(".user.ip", "expected an IPv4 or IPv6 address")
        return None


def _parse_contents(raw: JSON, errs: _Errors) -> tuple[Content, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errs.add(".data.contents", "expected a list of {id, quantity, price}")
        return ()
    if len(raw) > MAX_CONTENTS:
        errs.add(".data.contents", f"at most {MAX_CONTENTS} items")
        return ()
    items: list[Content] = []
    for i, item in enumerate(raw):
        path = f".data.contents[{i}]"
        if not isinstance(item, dict):
            errs.add(path, "expected an object")
            continue
        _unknown(item, _CONTENT_KEYS, path, errs)
        cid = _string(item, "id", path, errs, max_len=MAX_ID, allow_number=True)
        if cid is None:
            if "id" not in item:
                errs.add(f"{path}.id", "required")
            continue
        items.append(
            Content(
                id=cid,
                quantity=_integer(item, "quantity", path, errs),
                price=_number(item, "price", path, errs),
            )
        )
    return tuple(items)


def _parse_custom(raw: JSON, errs: _Errors) -> dict[str, str | float | bool]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errs.add(".data.custom", "expected an object")
        return {}
    if len(raw) > MAX_CUSTOM_KEYS:
        errs.add(".data.custom", f"at most {MAX_CUSTOM_KEYS} keys")
        return {}
    out: dict[str, str | float | bool] = {}
    for k, v in raw.items():
        path = f".data.custom{_key(k)}"
        if not _CUSTOM_KEY_RE.fullmatch(k):
            errs.add(path, "keys are 1-64 letters, digits or underscores")
        elif isinstance(v, bool):
            out[k] = v
        elif isinstance(v, int | float) and _isfinite(v):
            out[k] = float(v)
        elif isinstance(v, str) and len(v) <= MAX_TEXT and _PRINTABLE_RE.match(v):
            out[k] = v
        else:
            errs.add(path, f"expected a boolean, number or string up to {MAX_TEXT} characters")
    return out


def _parse_data(obj: JSON, errs: _Errors) -> Data:
    if obj is None:
        return Data()
    if not isinstance(obj, dict):
        errs.add(".data", "expected an object")
        return Data()
    _unknown(obj, _DATA_KEYS, ".data", errs)
    currency = _string(obj, "currency", ".data", errs, max_len=3)
    if currency is not None and not _CURRENCY_RE.match(currency):
        errs.add(".data.currency", "expected an ISO 4217 code such as EUR")
        currency = None
    return Data(
        value=_number(obj, "value", ".data", errs),
        currency=currency.upper() if currency else None,
        order_id=_string(obj, "order_id", ".data", errs, max_len=MAX_ID, allow_number=True),
        contents=_parse_contents(obj.get("contents"), errs),
        content_type=_string(obj, "content_type", ".data", errs, max_len=MAX_NAME),
        content_name=_string(obj, "content_name", ".data", errs),
        content_category=_string(obj, "content_category", ".data", errs),
        num_items=_integer(obj, "num_items", ".data", errs),
        search_string=_string(obj, "search_string", ".data", errs),
        status=_string(obj, "status", ".data", errs, max_len=MAX_NAME),
        predicted_ltv=_number(obj, "predicted_ltv", ".data", errs),
        custom=_parse_custom(obj.get("custom"), errs),
    )


def _parse_consent(obj: JSON, errs: _Errors) -> Consent | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        errs.add(".consent", "expected an object")
        return None
    _unknown(obj, _CONSENT_KEY_SET, ".consent", errs)
    values: dict[str, bool | None] = {}
    for key in CONSENT_KEYS:
        raw = obj.get(key)
        if raw is None:
            values[key] = None
        elif raw == "granted" or raw is True:  # not `in`: 1 == True and 0 == False
            values[key] = True
        elif raw == "denied" or raw is False:
            values[key] = False
        else:
            errs.add(f".consent.{key}", 'expected "granted" or "denied"')
    return Consent(**values)


def _url(obj: Mapping[str, JSON], key: str, errs: _Errors) -> str | None:
    value = _string(obj, key, "", errs, max_len=MAX_URL)
    if value is not None and not _URL_RE.match(value):
        errs.add(f".{key}", "expected an absolute http(s) URL")
        return None
    return value


def _parse_precise(
    obj: JSON, *, now: float, new_id: Callable[[], str], path: str, limits: ParseLimits
) -> Event | list[FieldError]:
    """Parse one event object field by field, collecting every error with its path."""
    errs = _Errors(path)
    if not isinstance(obj, dict):
        errs.add("", "expected an object")
        return errs.items
    _unknown(obj, _EVENT_KEYS, "", errs)
    name = obj.get("event")
    if name is None:
        errs.add(".event", "required")
    elif not isinstance(name, str) or not _NAME_RE.match(name):
        errs.add(".event", "expected a name of 1-100 letters, digits, '_', '-', '.', ':' or spaces")
        name = None
    event_id = _string(obj, "event_id", "", errs, max_len=MAX_ID, allow_number=True)
    url = _url(obj, "url", errs)
    referrer = _url(obj, "referrer", errs)
    source_raw = obj.get("source")
    source: Source | None
    if source_raw is None:
        source = Source.WEBSITE if url else Source.OTHER
    else:
        try:
            source = Source(source_raw)
        except ValueError:
            errs.add(".source", "expected one of " + ", ".join(s.value for s in Source))
            source = None
    when = now
    if obj.get("time") is not None:
        parsed = parse_time(obj["time"])
        if isinstance(parsed, str):
            errs.add(".time", parsed)
        else:
            max_age = (
                limits.max_age_offline_seconds
                if source is Source.PHYSICAL_STORE
                else limits.max_age_seconds
            )
            if parsed > now + FUTURE_SKEW:
                errs.add(".time", "is in the future")
            elif parsed < now - max_age:
                errs.add(".time", f"is older than {max_age / 86400:g} days")
            else:
                when = min(parsed, now)
    user = _parse_user(obj.get("user"), errs)
    data = _parse_data(obj.get("data"), errs)
    consent = _parse_consent(obj.get("consent"), errs)
    test_code = _string(obj, "test_code", "", errs, max_len=MAX_NAME)
    if source is Source.WEBSITE and url is None and "url" not in obj:
        errs.add(".url", "required when source is website")
    if name in VALUE_EVENTS and not errs.items:
        if data.value is None:
            errs.add(".data.value", f"required for {name}")
        if data.currency is None:
            errs.add(".data.currency", f"required for {name}")
    if errs.items or name is None or source is None:
        return errs.items
    if event_id is None:
        event_id = derive_event_id(data.order_id) if data.order_id else new_id()
    return Event(
        event=name,
        event_id=event_id,
        time=int(when),
        source=source,
        url=url,
        referrer=referrer,
        user=user,
        data=data,
        consent=consent,
        test_code=test_code,
    )
