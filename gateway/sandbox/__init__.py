"""Local emulators of ad-platform conversion APIs, for tests and the demo.

Independent of the rest of the gateway on purpose: written from the platform reference, they
check what our mappers send rather than mirror them.
"""

from __future__ import annotations

from .base import Fault, FaultInjector, Faults, Recorder
from .meta import META_SANDBOX, MetaSandbox, create_app

__all__ = [
    "META_SANDBOX",
    "Fault",
    "FaultInjector",
    "Faults",
    "MetaSandbox",
    "Recorder",
    "create_app",
]
