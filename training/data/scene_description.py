"""What a street scene is, independent of resolution.

A `Scene` is a pinhole camera, lighting, the street layout on the ground plane, and a
list of objects built from three analytic primitives (yawed boxes, vertical capped
cylinders, ellipsoids). `training.data.scene` samples one; `training.data.render`
draws it.

World frame: metres, x to the right of the street axis, y up, z along the street.
The ground is the plane y = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Material:
    """Surface appearance.

    Attributes:
        kind: ``"plain"``, ``"noise"`` (value-noise modulated), ``"facade"`` (window
            grid), ``"glass"`` (dark, face-dependent reflection) or ``"foliage"``.
        albedo: linear RGB in [0, 1].
        params: kind-specific numbers, see `training.data.render`.
    """

    kind: str
    albedo: Vec3
    params: tuple[float, ...] = ()


@dataclass(frozen=True)
class Box:
    """Box with half sizes ``half`` around ``center``, rotated by ``yaw`` about +y."""

    center: Vec3
    half: Vec3
    yaw: float
    material: Material


@dataclass(frozen=True)
class Cylinder:
    """Vertical cylinder with a top cap, axis at (x, z), spanning y in [y0, y1]."""

    x: float
    z: float
    radius: float
    y0: float
    y1: float
    material: Material


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid with semi-axes ``radii`` around ``center``."""

    center: Vec3
    radii: Vec3
    material: Material


Primitive = Box | Cylinder | Ellipsoid


@dataclass(frozen=True)
class SceneObject:
    """A thing or stuff object: its class, its instance id (0 for stuff), its parts."""

    class_name: str
    instance_id: int
    parts: tuple[Primitive, ...]


@dataclass(frozen=True)
class Camera:
    """Pinhole camera. ``focal_ratio`` is the focal length over the image width."""

    x: float
    height: float
    pitch: float  # radians, positive looks down
    yaw: float  # radians, positive turns right
    focal_ratio: float


@dataclass(frozen=True)
class Lighting:
    """Sun, sky, haze and sensor settings."""

    sun_direction: Vec3  # unit vector towards the sun
    sun_color: Vec3
    ambient: Vec3
    sky_horizon: Vec3
    sky_zenith: Vec3
    haze_color: Vec3
    haze_distance: float  # metres at which ~63% of the colour is haze
    exposure: float
    noise_sigma: float  # sensor noise, in 8-bit levels


@dataclass(frozen=True)
class StreetLayout:
    """The ground plane's regions and markings."""

    road_half_width: float
    sidewalk_width: float
    lane_width: float
    crosswalk_z: float  # start of a zebra crossing; inf when there is none
    road: Material
    sidewalk: Material
    terrain: Material
    marking: Vec3


@dataclass(frozen=True)
class Scene:
    camera: Camera
    lighting: Lighting
    layout: StreetLayout
    objects: tuple[SceneObject, ...]
    noise_seed: int
