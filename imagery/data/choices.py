"""Choices and defaults of the data flags, without NumPy or GDAL, so that a command's ``--help`` shows them at
once (re-exported by :mod:`imagery.data.bands`; implemented in :mod:`imagery.data.sentinel2`,
:mod:`imagery.data.chips`, :mod:`imagery.data.sen12_temporal` and :mod:`imagery.data.stac`)."""

from __future__ import annotations

from typing import Literal, get_args

#: How the digital numbers of a scene (``imagery.data.sentinel2``) or of chip files (``imagery.data.chips``) become
#: reflectance; here (no GDAL) so that a command's --help shows them at once.
SceneScale = Literal["auto", "reflectance", "dn", "dn-offset"]
ImageScale = Literal["auto", "reflectance", "dn", "dn-offset", "l4s"]
SCENE_SCALES: tuple[str, ...] = get_args(SceneScale)
IMAGE_SCALES: tuple[str, ...] = get_args(ImageScale)
#: Sen12Landslides (``imagery.data.sen12_temporal``): the temporal channel sets and the sensors.
TemporalSet = Literal["post", "pre-post", "pre-post-diff"]
Sensor = Literal["s2", "s1", "s2+s1"]
TEMPORAL_SETS: tuple[str, ...] = get_args(TemporalSet)
SENSORS: tuple[str, ...] = get_args(Sensor)

#: The STAC collection of Sentinel-2 L2A products searched by default (Earth Search v1, Planetary Computer).
DEFAULT_COLLECTION = "sentinel-2-l2a"
#: The STAC API searched by default: Earth Search v1 (public COGs, no account).
DEFAULT_STAC_URL = "https://earth-search.aws.element84.com/v1"
