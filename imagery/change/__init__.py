"""Change evidence without a trained model: before/after composites, indices, a training-free detector.

Torch-free; all geospatial I/O goes through :mod:`common.geo`. Used by ``pipelines.map_event``.

* :mod:`.acquisition`: Sentinel-2 L2A items (saved ItemCollection or STAC search) split into the pre-event
  window ``[event - pre_days, event)`` and the post-event window ``(event, event + post_days]``, as
  :class:`Observation` s; the output grid (the area's UTM zone at 10 m).
* :mod:`.composite`: per window, a cloud-masked (SCL) per-pixel median of each composite band and index,
  block by block, with the clear-observation count.
* :mod:`.indices`: NDVI, bare-soil index, dNDVI, relative dNDVI (HazMapper), slope.
* :mod:`.detector`: the documented training-free detector (:class:`DetectorParams`, :func:`change_score`).
* :mod:`.inventory`: polygons with geodesic areas and per-polygon evidence and reasons in words.
* :mod:`.event`: :func:`map_event`, the whole run written to an output folder; :mod:`.report`: report.html.
"""
