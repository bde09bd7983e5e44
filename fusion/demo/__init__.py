"""Demo material: synthetic data generators for the quick start (``pipelines.quickstart``), the tests and the
benchmarks. No library module imports this package; nothing here is a model of real landslides.

* :mod:`fusion.demo.paired`: paired synthetic regions (a tabular row and a Sentinel-2-like patch per region).
* :mod:`fusion.demo.world`: paired regions laid out as a georeferenced world (scene, DEM, factor rasters,
  region polygons, inventory), assessed by the quick start's last step.
* :mod:`fusion.demo.synthetic_scene`: a synthetic Sentinel-2 L2A scene on disk, up to a full tile (tests and
  ``benchmarks/scene_bench.py``).

It lives under ``fusion`` because ``fusion`` is the one library layer that may import all it needs
(``common``, ``tabular``, ``imagery.data``), and it imports no torch.
"""
