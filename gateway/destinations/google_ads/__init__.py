"""Google Ads click-conversion upload (`customers/{id}:uploadClickConversions`, REST).

`destination.py` holds the settings, the event → ClickConversion mapping and the request;
`answers.py` reads Google's answers (request errors and per-row partial failures) into outcomes.
The OAuth2 refresh-token flow it needs is the shared `gateway.destinations.tokens`.
"""
