"""The analyst-facing application: assess a region from its coordinates, and serve it over HTTP.

* :mod:`service.assess`: one region (point, box or polygons) and a date to a fused verdict per region,
  landslide polygons, a probability GeoTIFF and a self-contained ``report.html`` (``pipelines.assess``).
* :mod:`service.api`: the FastAPI application (``pipelines.serve``): ``/v1/score``, ``/v1/assess`` jobs,
  ``/healthz``, the map page.
* :mod:`service.jobs`: the bounded worker pool and the on-disk job store behind ``/v1/assess``.

It composes ``tabular``, ``imagery`` and ``fusion``; only ``pipelines`` imports it.
"""
