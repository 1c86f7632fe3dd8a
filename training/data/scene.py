"""The random sampling of street scenes.

`sample_scene` draws a `Scene` (`training.data.scene_description`, whose types are
importable from here too) from a seeded generator; `training.data.render` turns it
into an image and exact ground truth at any resolution.

World frame: metres, x to the right of the street axis, y up, z along the street.
The ground is the plane y = 0; the road is |x| < road_half_width, then sidewalks,
then terrain up to the building fronts.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field, fields

import numpy as np

from training.data.classes import INSTANCE_DIVISOR, train_id
from training.data.sample import DataConfigError
from training.data.scene_description import Box as Box
from training.data.scene_description import Camera as Camera
from training.data.scene_description import Cylinder as Cylinder
from training.data.scene_description import Ellipsoid as Ellipsoid
from training.data.scene_description import Lighting as Lighting
from training.data.scene_description import Material as Material
from training.data.scene_description import Primitive as Primitive
from training.data.scene_description import Scene as Scene
from training.data.scene_description import SceneObject as SceneObject
from training.data.scene_description import StreetLayout as StreetLayout
from training.data.scene_description import Vec3 as Vec3

Range = tuple[float, float]


@dataclass(frozen=True)
class SceneConfig:
    """Ranges the scene sampler draws from. Every range is (low, high), low <= high.

    Object counts are drawn per scene as ``round(max_count * crowd**1.5 * u)``
    with ``crowd`` and ``u`` uniform in [0, 1], so scenes range from empty
    streets to crowded ones.
    """

    camera_height_m: Range = (1.2, 1.9)
    pitch_deg: Range = (-2.0, 6.0)
    yaw_deg: Range = (-6.0, 6.0)
    focal_ratio: Range = (0.6, 1.1)
    road_half_width_m: Range = (3.5, 7.5)
    sidewalk_width_m: Range = (1.8, 4.5)
    max_cars: int = 14
    max_people: int = 18
    max_poles: int = 8
    max_trees: int = 8
    view_distance_m: float = 90.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            where = f"SceneConfig.{f.name}"
            if isinstance(value, tuple):
                if len(value) != 2 or not all(math.isfinite(v) for v in value):
                    raise DataConfigError(f"{where}: expected (low, high), got {value!r}")
                if value[0] > value[1]:
                    raise DataConfigError(f"{where}: range {value!r} is inverted (low > high)")
            elif isinstance(value, int) and value < 0:
                raise DataConfigError(f"{where}: must be >= 0, got {value}")
        positive = ("camera_height_m", "focal_ratio", "road_half_width_m", "sidewalk_width_m")
        for name in positive:
            if getattr(self, name)[0] <= 0:
                raise DataConfigError(f"SceneConfig.{name}: must be positive, got {getattr(self, name)!r}")
        if not -60.0 <= self.pitch_deg[0] <= self.pitch_deg[1] <= 60.0:
            raise DataConfigError(f"SceneConfig.pitch_deg: must lie in [-60, 60], got {self.pitch_deg!r}")
        if self.view_distance_m <= 0:
            raise DataConfigError(
                f"SceneConfig.view_distance_m: must be positive, got {self.view_distance_m}"
            )


def sample_scene(rng: np.random.Generator, config: SceneConfig | None = None) -> Scene:
    """Draw one street scene. The same generator state always gives the same scene."""
    config = config or SceneConfig()
    builder = _SceneBuilder(rng, config)
    return builder.build()


def _hsv(h: float, s: float, v: float) -> Vec3:
    return colorsys.hsv_to_rgb(h % 1.0, s, v)


@dataclass
class _SceneBuilder:
    rng: np.random.Generator
    config: SceneConfig
    objects: list[SceneObject] = field(default_factory=list)
    instance_counts: dict[str, int] = field(default_factory=dict)

    def u(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def count(self, maximum: int, crowd: float) -> int:
        return int(maximum * crowd**1.5 * self.u(0.0, 1.0) + 0.5)

    def add(self, class_name: str, *parts: Primitive) -> None:
        instance_id = 0
        if class_name in ("person", "car"):
            k = self.instance_counts.get(class_name, 0)
            self.instance_counts[class_name] = k + 1
            instance_id = train_id(class_name) * INSTANCE_DIVISOR + k
        self.objects.append(SceneObject(class_name, instance_id, parts))

    def build(self) -> Scene:
        c = self.config
        road_half = self.u(*c.road_half_width_m)
        sidewalk = self.u(*c.sidewalk_width_m)
        lane = road_half / max(1, round(road_half / 3.5))
        layout = self.layout(road_half, sidewalk, lane)
        camera = Camera(
            x=self.u(0.25 * lane, road_half - 1.0) * (1 if self.chance(0.8) else -1),
            height=self.u(*c.camera_height_m),
            pitch=math.radians(self.u(*c.pitch_deg)),
            yaw=math.radians(self.u(*c.yaw_deg)),
            focal_ratio=self.u(*c.focal_ratio),
        )
        crowd = self.u(0.0, 1.0)
        for side in (-1.0, 1.0):
            if self.chance(0.88):
                self.buildings(side, road_half + sidewalk)
        self.cars(road_half, lane, self.count(c.max_cars, crowd), camera.x)
        self.people(road_half, sidewalk, self.count(c.max_people, crowd))
        self.poles(road_half, self.count(c.max_poles, max(crowd, 0.5)))
        self.trees(road_half, sidewalk, self.count(c.max_trees, max(crowd, 0.4)))
        return Scene(
            camera=camera,
            lighting=self.lighting(),
            layout=layout,
            objects=tuple(self.objects),
            noise_seed=int(self.rng.integers(0, 2**63 - 1)),
        )

    def layout(self, road_half: float, sidewalk: float, lane: float) -> StreetLayout:
        asphalt = self.u(0.06, 0.22)
        paving = _hsv(self.u(0.02, 0.15), self.u(0.0, 0.35), self.u(0.2, 0.55))
        grass = (
            _hsv(self.u(0.17, 0.3), self.u(0.35, 0.8), self.u(0.12, 0.4))
            if self.chance(0.75)
            else _hsv(self.u(0.05, 0.12), self.u(0.3, 0.6), self.u(0.15, 0.35))  # dry earth
        )
        return StreetLayout(
            road_half_width=road_half,
            sidewalk_width=sidewalk,
            lane_width=lane,
            crosswalk_z=self.u(6.0, 40.0) if self.chance(0.25) else math.inf,
            road=Material("noise", (asphalt, asphalt, asphalt * self.u(0.95, 1.15)), (0.25, 1.5)),
            sidewalk=Material("noise", paving, (0.15, 0.9)),
            terrain=Material("noise", grass, (0.45, 0.7)),
            marking=_hsv(0.13, self.u(0.0, 0.5), self.u(0.55, 0.85)),
        )

    def lighting(self) -> Lighting:
        elevation = math.radians(self.u(12.0, 70.0))
        azimuth = self.u(0.0, 2 * math.pi)
        sun = (
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.cos(azimuth),
        )
        overcast = self.u(0.0, 1.0)
        warmth = self.u(0.0, 0.25) * (1 - overcast)
        sun_strength = self.u(0.8, 1.5) * (1.0 - 0.75 * overcast)
        sun_color = (
            sun_strength,
            sun_strength * (1 - 0.3 * warmth),
            sun_strength * (1 - 0.6 * warmth),
        )
        sky_v = self.u(0.55, 0.95)
        zenith = _hsv(self.u(0.55, 0.62), self.u(0.35, 0.75) * (1 - overcast), sky_v * self.u(0.6, 0.9))
        horizon = _hsv(self.u(0.05, 0.6), self.u(0.0, 0.3) * (1 - overcast), sky_v)
        ambient_level = self.u(0.25, 0.5) + 0.3 * overcast
        ambient = tuple(ambient_level * (0.7 + 0.3 * z) for z in zenith)
        return Lighting(
            sun_direction=sun,
            sun_color=sun_color,
            ambient=(ambient[0], ambient[1], ambient[2]),
            sky_horizon=horizon,
            sky_zenith=zenith,
            haze_color=horizon,
            haze_distance=self.u(60.0, 260.0),
            exposure=self.u(0.75, 1.3),
            noise_sigma=self.u(0.8, 4.5),
        )

    def buildings(self, side: float, front: float) -> None:
        z = self.u(-25.0, -5.0)
        while z < self.config.view_distance_m + 40.0:
            if self.chance(0.3):
                z += self.u(2.0, 12.0)  # a gap between blocks, terrain or trees show through
            length = self.u(7.0, 30.0)
            depth = self.u(8.0, 20.0)
            height = self.u(5.0, 36.0)
            setback = self.u(0.0, 5.0) if self.chance(0.4) else self.u(0.0, 0.4)
            near = front + setback
            base = _hsv(self.u(0.0, 0.15), self.u(0.0, 0.55), self.u(0.12, 0.75))
            window = _hsv(self.u(0.5, 0.65), self.u(0.05, 0.4), self.u(0.03, 0.3))
            facade = Material(
                "facade",
                base,
                (
                    self.u(2.2, 4.0),
                    self.u(2.8, 3.8),
                    self.u(0.15, 0.35),
                    window[0],
                    window[1],
                    window[2],
                ),
            )
            center_x = side * (near + depth / 2)
            self.add(
                "building",
                Box(
                    (center_x, height / 2, z + length / 2),
                    (depth / 2, height / 2, length / 2),
                    0.0,
                    facade,
                ),
            )
            z += length

    def cars(self, road_half: float, lane: float, n: int, camera_x: float) -> None:
        lanes = [-road_half + lane * (i + 0.5) for i in range(round(2 * road_half / lane))]
        occupied: dict[int, list[tuple[float, float]]] = {}
        for _ in range(n):
            parked = self.chance(0.3)
            lane_index = int(self.rng.integers(0, len(lanes)))
            x = (
                (road_half - 1.1) * (1 if self.chance(0.5) else -1)
                if parked
                else lanes[lane_index] + self.u(-0.35, 0.35)
            )
            length, width = self.u(3.7, 5.0), self.u(1.65, 2.0)
            z = self.u(3.5, self.config.view_distance_m * 0.8)
            if abs(x - camera_x) < 2.0 and z < 7.0:
                continue  # the camera rides on a car: nothing sits on its bonnet
            key = round(x * 2)
            if any(abs(z - oz) < (length + ol) / 2 + 0.8 for oz, ol in occupied.get(key, [])):
                continue  # would overlap a car already in that lane
            occupied.setdefault(key, []).append((z, length))
            yaw = self.u(-0.12, 0.12) + (math.pi if x < 0 and self.chance(0.85) else 0.0)
            self.add("car", *self.car_parts(x, z, yaw, length, width))

    def car_parts(self, x: float, z: float, yaw: float, length: float, width: float) -> list[Primitive]:
        hue = self.u(0.0, 1.0)
        paint = _hsv(hue, self.u(0.0, 1.0) if self.chance(0.5) else self.u(0.0, 0.15), self.u(0.05, 0.9))
        body = Material("noise", paint, (0.04, 4.0))
        glass = Material("glass", _hsv(self.u(0.5, 0.65), self.u(0.0, 0.3), self.u(0.03, 0.15)))
        rubber = Material("plain", (0.02, 0.02, 0.025))
        clearance, body_h, cabin_h = self.u(0.22, 0.35), self.u(0.5, 0.8), self.u(0.42, 0.62)
        cabin_len = length * self.u(0.45, 0.6)
        cabin_shift = length * self.u(-0.12, 0.05)
        sin_y, cos_y = math.sin(yaw), math.cos(yaw)

        def along(offset: float, y: float) -> Vec3:
            return (x + sin_y * offset, y, z + cos_y * offset)

        parts: list[Primitive] = [
            Box(along(0.0, clearance + body_h / 2), (width / 2, body_h / 2, length / 2), yaw, body),
            Box(
                along(cabin_shift, clearance + body_h + cabin_h / 2),
                (width * 0.44, cabin_h / 2, cabin_len / 2),
                yaw,
                glass,
            ),
        ]
        wheel_r = clearance + 0.18
        for axle in (-0.33 * length, 0.33 * length):
            parts.append(Box(along(axle, wheel_r), (width / 2 + 0.02, wheel_r, 0.32), yaw, rubber))
        return parts

    def people(self, road_half: float, sidewalk: float, n: int) -> None:
        for _ in range(n):
            side = 1.0 if self.chance(0.5) else -1.0
            if self.chance(0.12):
                x = self.u(-road_half, road_half)  # crossing the street
            else:
                x = side * (road_half + self.u(0.3, sidewalk - 0.3))
            z = self.u(2.5, self.config.view_distance_m * 0.6)
            radius = self.u(0.16, 0.26)
            legs = self.u(0.72, 0.95)
            shoulders = legs + self.u(0.55, 0.72)
            head = self.u(0.095, 0.125)
            top = Material("noise", _hsv(self.u(0, 1), self.u(0, 0.9), self.u(0.04, 0.85)), (0.1, 6.0))
            bottom = Material("noise", _hsv(self.u(0, 1), self.u(0, 0.6), self.u(0.03, 0.6)), (0.1, 6.0))
            skin = Material("plain", _hsv(self.u(0.03, 0.1), self.u(0.3, 0.6), self.u(0.25, 0.85)))
            self.add(
                "person",
                Cylinder(x, z, radius * 0.85, 0.0, legs, bottom),
                Cylinder(x, z, radius, legs, shoulders, top),
                Ellipsoid((x, shoulders + head * 1.05, z), (head, head * 1.2, head), skin),
            )

    def poles(self, road_half: float, n: int) -> None:
        for _ in range(n):
            side = 1.0 if self.chance(0.5) else -1.0
            x, z = side * (road_half + self.u(0.25, 0.6)), self.u(3.0, self.config.view_distance_m)
            radius, height = self.u(0.05, 0.13), self.u(3.0, 9.0)
            metal = Material("noise", _hsv(self.u(0, 1), self.u(0, 0.2), self.u(0.1, 0.6)), (0.1, 3.0))
            self.add("pole", Cylinder(x, z, radius, 0.0, height, metal))
            if self.chance(0.45):
                size = self.u(0.45, 0.8)
                y = min(height - size / 2, self.u(2.0, 3.0))
                color = _hsv(self.rng.choice([0.0, 0.6, 0.13, 0.33]), self.u(0.0, 0.9), self.u(0.3, 0.9))
                self.add(
                    "traffic sign",
                    Box(
                        (x - side * size / 2, y, z - radius - 0.04),
                        (size / 2, size / 2, 0.03),
                        0.0,
                        Material("plain", color),
                    ),
                )

    def trees(self, road_half: float, sidewalk: float, n: int) -> None:
        for _ in range(n):
            side = 1.0 if self.chance(0.5) else -1.0
            x = side * (
                road_half + sidewalk * self.u(0.55, 0.95) + (self.u(0.0, 4.0) if self.chance(0.3) else 0.0)
            )
            z = self.u(3.0, self.config.view_distance_m)
            trunk_h = self.u(1.4, 3.5)
            crown = (self.u(1.0, 2.6), self.u(1.2, 3.2))
            autumn = self.chance(0.15)
            leaf = (
                _hsv(self.u(0.05, 0.12), self.u(0.5, 0.9), self.u(0.2, 0.6))
                if autumn
                else _hsv(self.u(0.18, 0.36), self.u(0.3, 0.85), self.u(0.06, 0.4))
            )
            bark = Material("noise", _hsv(self.u(0.04, 0.1), self.u(0.2, 0.6), self.u(0.06, 0.3)), (0.2, 5.0))
            self.add(
                "vegetation",
                Cylinder(x, z, self.u(0.1, 0.25), 0.0, trunk_h + crown[1] * 0.5, bark),
                Ellipsoid(
                    (x, trunk_h + crown[1], z),
                    (crown[0], crown[1], crown[0]),
                    Material("foliage", leaf, (0.5, 2.2)),
                ),
            )
