"""delivery.unbind: an answered response (and the request body it keeps) is freed by reference
counting alone once the worker drops it, not only by the cycle collector."""

from __future__ import annotations

import gc
import weakref

import httpx

from gateway.delivery.unbind import unbind


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"received": len(request.content)})


async def test_an_unbound_response_and_its_request_go_without_the_cycle_collector() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        gc.disable()
        try:
            kept: list[tuple[weakref.ref[httpx.Response], weakref.ref[httpx.Request]]] = []
            for unbound in (False, True):
                request = httpx.Request("POST", "http://platform.test/events", content=b"x" * 1000)
                response = await client.send(request)
                await response.aread()
                if unbound:
                    unbind(response)
                    assert response.json() == {"received": 1000}  # the content stays readable
                kept.append((weakref.ref(response), weakref.ref(request)))
                del request, response
            (bound_response, bound_request), (free_response, free_request) = kept
            # httpx's client makes every response part of a cycle (what unbind is for) ...
            assert bound_response() is not None
            assert bound_request() is not None
            # ... which unbind breaks: reference counting freed the response and its request.
            assert free_response() is None
            assert free_request() is None
        finally:
            gc.enable()
            gc.collect()
