"""Let an answered delivery request be freed at once instead of by the cycle collector.

`httpx.AsyncClient.send` wraps each response's body stream in a stream that points back at the
response (so closing it can set ``response.elapsed``): every response is part of a reference
cycle, and through ``response.request`` it keeps the request, whose body is the whole batch
sent (a 500-event Meta batch is ~350 kB). Reference counting cannot free a cycle; the server
raises the young-generation GC threshold to 200,000 tracked objects (gateway/cli.py), which a
delivery round reaches only after thousands of requests, and requests in flight at a collection
move on to older generations, collected more rarely still. Draining a deep outbox thus kept
every body sent in memory until a collection happened to run: RSS grew by about the size of
everything delivered (bench/drain_rss.py: +660 MB for 1,000,000 deliveries).

`unbind` is called by the worker once it has read the answer (`aread`, which keeps the body as
``response.content``) and judged it: it swaps the wrapping stream for an empty one, so the
response, its request and the batch's bytes go as soon as the worker drops them.
"""

from __future__ import annotations

from typing import Final

import httpx

_EMPTY: Final = httpx.ByteStream(b"")


def unbind(response: httpx.Response) -> None:
    """Break the response's reference cycle; its content (read already) stays readable."""
    response.stream = _EMPTY
