"""GA4 Measurement Protocol: everything the `ga4` destination owns is found in this package.

`mapping` holds the event-name table, GA4's name and parameter rules and the pure mapping of an
event to its Measurement Protocol parts; `destination` the settings, request building and answer
classification. Its emulator is `gateway.sandbox.ga4`.
"""
