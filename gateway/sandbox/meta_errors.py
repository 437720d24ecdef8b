"""Meta's Graph error answers, as the Meta sandbox (gateway/sandbox/meta.py) sends them.

Error subcodes: 2804003 (event too old) comes from the reference; the reference only says that
"other 2804xxx" subcodes are field-level validation failures, so every other field failure here
uses the sandbox's own `SUBCODE_INVALID_FIELD`. Clients should classify by `code`.
Errors without a meaningful subcode carry `"error_subcode": null`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUBCODE_TOO_OLD = 2804003
SUBCODE_INVALID_FIELD = 2804050  # sandbox's pick within Meta's 2804xxx field-validation range
SUBCODE_PIXEL_NOT_FOUND = 33
SUBCODE_TOKEN_EXPIRED = 463
SUBCODE_TOKEN_INVALID = 467


@dataclass(frozen=True)
class MetaError:
    """One Graph-style error answer: HTTP status plus the fields of the `error` object."""

    status: int
    code: int
    subcode: int | None
    message: str
    title: str
    user_msg: str
    transient: bool = False

    def body(self, fbtrace_id: str) -> dict[str, Any]:
        """Return the JSON body Meta would send for this error."""
        return {
            "error": {
                "message": self.message,
                "type": "OAuthException",
                "code": self.code,
                "error_subcode": self.subcode,
                "error_user_title": self.title,
                "error_user_msg": self.user_msg,
                "fbtrace_id": fbtrace_id,
                "is_transient": self.transient,
            }
        }


class Rejected(Exception):
    """Raised inside request handling to answer with a Graph error."""

    def __init__(self, error: MetaError) -> None:
        super().__init__(error.user_msg)
        self.error = error


def invalid(
    user_msg: str, *, subcode: int | None = None, title: str = "Invalid parameter"
) -> Rejected:
    return Rejected(
        MetaError(
            status=400,
            code=100,
            subcode=subcode,
            message="(#100) Invalid parameter",
            title=title,
            user_msg=user_msg,
        )
    )


def bad_field(
    index: int, path: str, problem: str, *, subcode: int = SUBCODE_INVALID_FIELD
) -> Rejected:
    return invalid(f"Event data[{index}], field {path}: {problem}", subcode=subcode)


TOKEN_MISSING = MetaError(
    status=400,
    code=190,
    subcode=None,
    message="An access token is required to request this resource.",
    title="Access token required",
    user_msg="Pass access_token in the query string, the body or an Authorization header.",
)
TOKEN_INVALID = MetaError(
    status=400,
    code=190,
    subcode=SUBCODE_TOKEN_INVALID,
    message="Invalid OAuth access token - Cannot parse access token",
    title="Invalid access token",
    user_msg="The access token is not valid for this dataset.",
)
TOKEN_EXPIRED = MetaError(
    status=400,
    code=190,
    subcode=SUBCODE_TOKEN_EXPIRED,
    message="Error validating access token: Session has expired.",
    title="Access token expired",
    user_msg="The access token has expired; generate a new one in Events Manager.",
)
THROTTLED = MetaError(
    status=429,
    code=4,
    subcode=None,
    message="(#4) Application request limit reached",
    title="Too many calls",
    user_msg="The app has made too many calls; retry later.",
    transient=True,
)


def server_error(status: int) -> MetaError:
    return MetaError(
        status=status,
        code=2,
        subcode=None,
        message="Service temporarily unavailable",
        title="Service unavailable",
        user_msg="A temporary error occurred; retry the request.",
        transient=True,
    )
