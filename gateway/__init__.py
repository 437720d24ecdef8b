"""signalgate: a self-hosted, first-party tracking gateway.

Path of an event
----------------
1. **Endpoint** (`gateway.web.api`): `POST /v1/events` authenticates the shop backend by API
   key, reads the body within size limits and hands each event object to the pipeline. The only
   I/O on the request path is the durable append; nothing waits on a platform.
2. **Parse** (`gateway.core.eventparse.parse_event`): JSON → `Event`, or field-path errors.
3. **Hash** (`gateway.core.identity`, `gateway.core.normalize`): raw PII is normalised and
   SHA-256-hashed per rule set the site's destinations need; raw values are dropped here, so
   they never reach disk or logs.
4. **Outbox** (`gateway.store`): one delivery row per (event, destination route), committed in
   group transactions before the HTTP answer; dedup by (route, event_name, event_id) for 48 h.
5. **Worker** (`gateway.delivery.worker`): leases due rows, drops what the platform would refuse,
   batches, sends through one `httpx.AsyncClient` per route, bisects whole-batch rejections.
6. **Destination** (`gateway.destinations.<platform>`): pure mapping Event → request and
   response → outcome (delivered, retry with backoff, dead letter with reason, pause).
7. **Outcome**: recorded in the store (`counts`, `recent`, `dead_letters`) and in route stats
   shown by `/readyz` and `/v1/debug/recent`.
"""

__version__ = "0.1.0"
