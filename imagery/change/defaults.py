"""Defaults of the change evidence that commands show in ``--help``, declared once and without heavy imports.

``pipelines.map_event`` and ``pipelines.assess`` (``--event-date``), and the service's ``/v1/assess``, take the
same windows (:func:`imagery.change.acquisition.event_windows`) and the same item cloud limit.
"""

from __future__ import annotations

import datetime as dt

#: No Sentinel-2 imagery before the launch of Sentinel-2A (its first acquisitions): an earlier event date or
#: assessment date has nothing to map.
S2_FIRST_DATE = dt.date(2015, 6, 23)

#: Days before the event, ``[event - PRE_DAYS, event)``: 90 days give a few clear views even in a cloudy season.
PRE_DAYS = 90
#: Days after the event, ``(event, event + POST_DAYS]``: the scar is still fresh (before regrowth) and
#: several revisits (5 days) have passed.
POST_DAYS = 45
#: Largest ``eo:cloud_cover`` of an item in a composite, percent: SCL masks the clouds per pixel, so a cloudy
#: item still gives its clear pixels.
MAX_CLOUD = 80.0
#: GDAL's raster block cache while mapping an event, MB (``common.geo.block_cache``; an explicit ``GDAL_CACHEMAX`` in
#: the environment wins). GDAL's own default, 5 % of RAM, let the cache take 1.1 GB of a 23 GB machine's RSS over two
#: full tiles (peak 3.2 GB); at 2 x 4096 px a 64 MB cache ran at the same speed as the default (238 vs 243 s) and
#: took 666 MB off the peak. 256 MB keeps room for a block's reads (``benchmarks/RESULTS.md``, "Map an event").
GDAL_CACHE_MB = 256
