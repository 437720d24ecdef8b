"""Meta (Facebook, Instagram): the Conversions API destination (``destination.py``), ``/tr``
pixel hits (``hits.py``, fast road ``hitwire.py``), fbclid and the ``_fbc``/``_fbp`` cookies
(``clickids.py``).

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.meta import clickids
from gateway.destinations.meta.destination import Meta, MetaSettings
from gateway.destinations.meta.hits import read_hits
from gateway.destinations.platform import HitFormat, Platform, Registration

PLATFORM: Final = Platform(
    "meta",
    destination=Registration(MetaSettings, Meta, Meta.hash_rules),
    hits=HitFormat(
        vendor="meta",
        upstream_path="/tr/",
        methods=("GET", "POST"),
        cookies=frozenset({"_fbp", "_fbc"}),
        parse=read_hits,
        mirror_to=frozenset({"meta"}),
        digest_rules="meta",
    ),
    click_ids=clickids.CLICK_IDS,
    cookies=clickids.COOKIES,
    click_window=clickids.CLICK_WINDOW,
)
