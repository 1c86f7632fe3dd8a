"""Ray casting of a `Scene` into an image and exact ground truth.

One ray per pixel centre is intersected analytically with the ground plane and
every primitive (`training.data.intersect`); the nearest hit owns the pixel, and
the image, semantic class, instance id and depth are all read from that same hit,
so the labels are exact and occlusion is right by construction.

Speed comes from testing each primitive only against the pixels inside the
screen rectangle its bounding box projects to, and from doing every step as a
whole-array numpy operation.

Determinism: every per-pixel step uses only IEEE-754 basic arithmetic (+, -, *,
/, sqrt, comparisons) and integer hashing, which give bit-identical results on
every machine. Vectorised transcendental functions (exp, pow) and BLAS products,
whose results differ between CPUs and numpy builds, are avoided on purpose: haze
uses a rational approximation of Beer-Lambert attenuation, gamma is a square
root, and sensor noise comes from uniform draws. The few per-scene scalars that
use the C library's sin, cos and pow (camera angles, sun direction, crowd level)
agree wherever that library rounds correctly, as glibc does on x86-64 and ARM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.data.classes import train_id
from training.data.intersect import EPS, F64, corners, intersect
from training.data.sample import SceneSample
from training.data.scene_description import Camera, Material, Primitive, Scene

_ROAD, _SIDEWALK, _TERRAIN = train_id("road"), train_id("sidewalk"), train_id("terrain")


def render(scene: Scene, height: int, width: int, *, cull: bool = True) -> SceneSample:
    """Render ``scene`` at ``height`` x ``width`` pixels; see `SceneSample` for the format.

    ``cull=False`` tests every primitive against every pixel instead of its screen
    rectangle; the result is identical, only slower (the benchmark's baseline).
    """
    rays = _Rays.build(scene.camera, height, width)
    frame = _Frame.empty(height, width)
    _cast_ground(scene, rays, frame)
    for obj in scene.objects:
        class_id = train_id(obj.class_name)
        for part in obj.parts:
            _cast_primitive(part, class_id, obj.instance_id, rays, frame, cull)
    image = _shade(scene, rays, frame)
    return SceneSample(
        image=image,
        semantic=frame.semantic,
        instance=frame.instance,
        depth=frame.t.astype(np.float32),
        name="",
    )


@dataclass
class _Rays:
    """Per-pixel ray directions ``[H, W]`` scaled so that the hit parameter t is the depth."""

    origin: tuple[float, float, float]
    dx: F64
    dy: F64
    dz: F64
    rotation: tuple[tuple[float, float, float], ...]  # camera -> world, row-major
    focal: float
    height: int
    width: int

    @staticmethod
    def build(camera: Camera, height: int, width: int) -> _Rays:
        focal = camera.focal_ratio * width
        cp, sp = math.cos(camera.pitch), math.sin(camera.pitch)
        cy, sy = math.cos(camera.yaw), math.sin(camera.yaw)
        # R = R_yaw @ R_pitch: pitch tilts the optical axis down, yaw turns it right.
        rotation = ((cy, sy * sp, sy * cp), (0.0, cp, -sp), (-sy, cy * sp, cy * cp))
        xc = (np.arange(width, dtype=np.float64) + 0.5 - width / 2) / focal
        yc = -(np.arange(height, dtype=np.float64) + 0.5 - height / 2) / focal
        xc, yc = xc[None, :], yc[:, None]
        # Explicit multiply-adds instead of a matrix product keep results bit-exact across BLAS builds.
        dx, dy, dz = (r[0] * xc + r[1] * yc + r[2] for r in rotation)
        return _Rays((camera.x, camera.height, 0.0), dx, dy, dz, rotation, focal, height, width)

    def project_bounds(self, corners: list[tuple[float, float, float]]) -> tuple[int, int, int, int] | None:
        """Pixel rectangle (row0, row1, col0, col1) covering a box's projection; None if off screen.

        ``corners`` are the 8 corners of a box, corner ``i`` having bit 2, 1, 0 of
        ``i`` select the high x, y, z side. The part of the box in front of the
        camera is the hull of its corners there and of its edges' crossings of the
        near plane, so projecting those points bounds it even when the box reaches
        behind the camera, as buildings beside the street do.
        """
        r = self.rotation
        points = []
        for x, y, z in corners:
            qx, qy, qz = x - self.origin[0], y - self.origin[1], z - self.origin[2]
            points.append(
                (
                    r[0][0] * qx + r[1][0] * qy + r[2][0] * qz,
                    r[0][1] * qx + r[1][1] * qy + r[2][1] * qz,
                    r[0][2] * qx + r[1][2] * qy + r[2][2] * qz,
                )
            )
        visible = [p for p in points if p[2] >= _NEAR]
        for a, b in _BOX_EDGES:
            (xa, ya, za), (xb, yb, zb) = points[a], points[b]
            if (za < _NEAR) != (zb < _NEAR):
                w = (_NEAR - za) / (zb - za)
                visible.append((xa + w * (xb - xa), ya + w * (yb - ya), _NEAR))
        if not visible:
            return None
        us = [self.focal * x / z + self.width / 2 for x, _, z in visible]
        vs = [-self.focal * y / z + self.height / 2 for _, y, z in visible]
        col0 = max(0, math.floor(min(us) - 1.5))
        col1 = min(self.width, math.ceil(max(us) + 1.5))
        row0 = max(0, math.floor(min(vs) - 1.5))
        row1 = min(self.height, math.ceil(max(vs) + 1.5))
        if row0 >= row1 or col0 >= col1:
            return None
        return row0, row1, col0, col1


_NEAR = 0.01  # metres; nothing in a scene is closer to the camera than this
_BOX_EDGES = tuple((a, b) for a in range(8) for b in range(a + 1, 8) if (a ^ b) in (1, 2, 4))


@dataclass
class _Frame:
    """What the nearest hit so far left in each pixel."""

    t: F64
    semantic: npt.NDArray[np.uint8]
    instance: npt.NDArray[np.int32]
    normal: F64  # [3, H, W]
    albedo: F64  # [3, H, W], linear RGB

    @staticmethod
    def empty(height: int, width: int) -> _Frame:
        return _Frame(
            t=np.full((height, width), np.inf),
            semantic=np.full((height, width), train_id("sky"), dtype=np.uint8),
            instance=np.zeros((height, width), dtype=np.int32),
            normal=np.zeros((3, height, width)),
            albedo=np.zeros((3, height, width)),
        )


def _cast_ground(scene: Scene, rays: _Rays, frame: _Frame) -> None:
    layout = scene.layout
    ox, oy, oz = rays.origin
    down = rays.dy < -EPS
    t = np.where(down, -oy / np.where(down, rays.dy, -1.0), np.inf)
    x = ox + t * rays.dx
    z = oz + t * rays.dz
    x = np.where(down, x, 0.0)
    z = np.where(down, z, 0.0)
    ax = np.abs(x)
    edge = layout.road_half_width
    road = down & (ax < edge)
    sidewalk = down & (ax >= edge) & (ax < edge + layout.sidewalk_width)
    terrain = down & ~road & ~sidewalk

    frame.t[:] = t
    frame.semantic[road] = _ROAD
    frame.semantic[sidewalk] = _SIDEWALK
    frame.semantic[terrain] = _TERRAIN
    frame.normal[1][down] = 1.0

    albedo = frame.albedo
    for mask, material in (
        (road, layout.road),
        (sidewalk, layout.sidewalk),
        (terrain, layout.terrain),
    ):
        albedo[:, mask] = _material_albedo(material, x[mask], z[mask], np.ones(int(mask.sum())))

    # Lane markings: dashed lines between lanes, solid lines along both edges, maybe a zebra crossing.
    lanes = 2 * edge / layout.lane_width
    m = (x + edge) / layout.lane_width
    nearest = np.floor(m + 0.5)
    between = (np.abs(m - nearest) * layout.lane_width < 0.08) & (nearest >= 1) & (nearest <= lanes - 0.5)
    dashed = between & (np.mod(z, 9.0) < 3.0)
    solid = np.abs(ax - (edge - 0.3)) < 0.07
    zebra = (z >= layout.crosswalk_z) & (z < layout.crosswalk_z + 3.5) & (np.mod(x, 1.0) < 0.5)
    paint = road & (dashed | solid | zebra)
    for c in range(3):
        albedo[c][paint] = layout.marking[c] * (0.85 + 0.15 * _value_noise(x[paint] * 3, z[paint] * 3, 11))
    curb = sidewalk & (ax - edge < 0.18)
    albedo[:, curb] = albedo[:, curb] * 1.6 + 0.05


def _cast_primitive(
    part: Primitive, class_id: int, instance_id: int, rays: _Rays, frame: _Frame, cull: bool
) -> None:
    bounds = rays.project_bounds(corners(part)) if cull else (0, rays.height, 0, rays.width)
    if bounds is None:
        return
    r0, r1, c0, c1 = bounds
    window = np.s_[r0:r1, c0:c1]
    d = (rays.dx[window], rays.dy[window], rays.dz[window])
    hit = intersect(part, rays.origin, d)
    t = frame.t[window]
    nearer = hit.t < t
    if not nearer.any():
        return
    t[nearer] = hit.t[nearer]
    frame.semantic[window][nearer] = class_id
    frame.instance[window][nearer] = instance_id
    normal_y = hit.normal[1][nearer]
    for c in range(3):
        frame.normal[c][window][nearer] = hit.normal[c][nearer]
    frame.albedo[(slice(None), *window)][:, nearer] = _material_albedo(
        part.material, hit.s[nearer], hit.v[nearer], normal_y
    )


def _hash01(i: npt.NDArray[np.int64], j: npt.NDArray[np.int64], seed: int) -> F64:
    """Integer lattice hash to [0, 1); 32-bit arithmetic carried in int64, so it never overflows."""
    mask = 0xFFFFFFFF
    h = ((i & mask) * 374761393 + (j & mask) * 668265263 + seed * 2654435761) & mask
    h = ((h ^ (h >> 13)) * 1274126177) & mask
    h = h ^ (h >> 16)
    return h.astype(np.float64) / 4294967296.0


def _value_noise(s: F64, v: F64, seed: int) -> F64:
    """Smooth value noise in [0, 1) with unit lattice spacing."""
    fs, fv = np.floor(s), np.floor(v)
    i, j = fs.astype(np.int64), fv.astype(np.int64)
    ws, wv = s - fs, v - fv
    ws, wv = ws * ws * (3 - 2 * ws), wv * wv * (3 - 2 * wv)
    top = _hash01(i, j, seed) * (1 - ws) + _hash01(i + 1, j, seed) * ws
    bottom = _hash01(i, j + 1, seed) * (1 - ws) + _hash01(i + 1, j + 1, seed) * ws
    return top * (1 - wv) + bottom * wv


def _material_albedo(material: Material, s: F64, v: F64, normal_y: F64) -> F64:
    """Albedo ``[3, K]`` of K surface points with texture coordinates (s, v) in metres."""
    base = np.asarray(material.albedo, dtype=np.float64)[:, None]
    kind, p = material.kind, material.params
    if kind == "plain":
        return np.broadcast_to(base, (3, s.shape[0])).copy()
    if kind == "noise":
        amplitude, frequency = p
        n = 0.65 * _value_noise(s * frequency, v * frequency, 3) + 0.35 * _value_noise(
            s * frequency * 4.1, v * frequency * 4.1, 5
        )
        return base * (1 + amplitude * 2 * (n - 0.5))[None, :]
    if kind == "foliage":
        amplitude, frequency = p
        n = _value_noise(s * frequency, v * frequency, 7) * 0.6 + _value_noise(s * 7.3, v * 7.3, 9) * 0.4
        return base * (1 - amplitude + 2 * amplitude * n)[None, :]
    if kind == "glass":
        return base * (0.8 + 0.5 * _value_noise(s * 0.7, v * 2.0, 13))[None, :]
    if kind == "facade":
        spacing, floor_height, margin, wr, wg, wb = p
        wall = base * (0.85 + 0.3 * _value_noise(s * 0.5, v * 0.5, 17))[None, :]
        cols, rows = np.floor(s / spacing), np.floor(v / floor_height)
        fs, fv = s / spacing - cols, v / floor_height - rows
        is_window = (fs > margin) & (fs < 1 - margin) & (fv > 0.3) & (fv < 0.85) & (rows >= 1)
        is_window &= normal_y < 0.5  # roofs have no windows
        shade = _hash01(cols.astype(np.int64), rows.astype(np.int64), 19)
        glass = np.asarray((wr, wg, wb))[:, None] * (0.6 + 0.8 * shade)[None, :]
        lit = shade > 0.93  # the odd lit window
        glass = np.where(lit[None, :], np.array([0.9, 0.75, 0.4])[:, None], glass)
        roof = normal_y >= 0.5
        out = np.where(is_window[None, :], glass, wall)
        return np.where(roof[None, :], base * 0.55, out)
    raise ValueError(f"unknown material kind {kind!r}")


def _shade(scene: Scene, rays: _Rays, frame: _Frame) -> npt.NDArray[np.uint8]:
    """Lambertian shading, sky, haze, exposure, gamma and sensor noise -> uint8 [H, W, 3]."""
    light = scene.lighting
    sun = light.sun_direction
    n = frame.normal
    lambert = np.maximum(0.0, n[0] * sun[0] + n[1] * sun[1] + n[2] * sun[2])
    hit = np.isfinite(frame.t)
    length = np.sqrt(rays.dx * rays.dx + rays.dy * rays.dy + rays.dz * rays.dz)
    elevation = np.clip(rays.dy / length * 2.5, 0.0, 1.0)
    toward_sun = np.maximum(0.0, (rays.dx * sun[0] + rays.dy * sun[1] + rays.dz * sun[2]) / length)
    glow = toward_sun * toward_sun
    glow = glow * glow
    glow = glow * glow  # cos^8 without pow, for bit-exact results
    haze_x = np.where(hit, frame.t, 0.0) / light.haze_distance
    transmittance = 1.0 / (1.0 + haze_x * (1.0 + haze_x * (0.5 + haze_x / 6.0)))  # ~exp(-x)

    image = np.empty((rays.height, rays.width, 3))
    for c in range(3):
        lit = frame.albedo[c] * (light.ambient[c] + light.sun_color[c] * lambert)
        lit = lit * transmittance + light.haze_color[c] * (1.0 - transmittance)
        sky = light.sky_horizon[c] + (light.sky_zenith[c] - light.sky_horizon[c]) * elevation
        sky = sky + 0.35 * light.sun_color[c] * glow
        image[:, :, c] = np.where(hit, lit, sky)
    image *= light.exposure
    image = image / (1.0 + 0.15 * image)  # soft highlight roll-off
    image = np.sqrt(np.maximum(image, 0.0)) * 255.0
    rng = np.random.Generator(np.random.PCG64(scene.noise_seed))
    noise = rng.random(image.shape) + rng.random(image.shape) - 1.0  # triangular, std 1/sqrt(6)
    image += noise * (light.noise_sigma * 2.449489742783178)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
