"""X (formerly Twitter) Conversion API: one web pixel's conversions, OAuth 1.0a signed.

`destination.py` holds the settings, the event-id table, the pure mapping Event → conversion,
request building and answer classification; `signing.py` the OAuth 1.0a HMAC-SHA1
`Authorization` header (oauthlib does the signing; the nonce and timestamp are passed in).
"""
