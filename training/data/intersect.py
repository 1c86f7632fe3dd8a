"""Rays against the scene's three analytic primitives: where each ray first meets one.

Every function takes one ray origin and a block of directions (``[H, W]`` arrays per
axis, world frame) and uses only IEEE-754 basic arithmetic, for the determinism
`training.data.render` explains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.data.scene_description import Box, Cylinder, Ellipsoid, Primitive

F64 = npt.NDArray[np.float64]
EPS = 1e-6


@dataclass
class Hit:
    """Intersections of one primitive with a block of rays; t = inf where missed."""

    t: F64
    normal: tuple[F64, F64, F64]
    s: F64  # texture coordinate along the surface, metres
    v: F64  # texture coordinate up the surface, metres


def intersect(part: Primitive, origin: tuple[float, float, float], d: tuple[F64, F64, F64]) -> Hit:
    """The nearest hit of each ray in ``d`` (``[H, W]`` per axis) with ``part``."""
    if isinstance(part, Box):
        return intersect_box(part, origin, d)
    if isinstance(part, Cylinder):
        return intersect_cylinder(part, origin, d)
    return intersect_ellipsoid(part, origin, d)


def corners(part: Primitive) -> list[tuple[float, float, float]]:
    """The eight corners of ``part``'s bounding box, metres, world frame."""
    if isinstance(part, Box):
        (cx, cy, cz), (hx, hy, hz) = part.center, part.half
        c, s = math.cos(part.yaw), math.sin(part.yaw)
        return [
            (cx + c * lx + s * lz, cy + ly, cz - s * lx + c * lz)
            for lx in (-hx, hx)
            for ly in (-hy, hy)
            for lz in (-hz, hz)
        ]
    if isinstance(part, Cylinder):
        lo = (part.x - part.radius, part.y0, part.z - part.radius)
        hi = (part.x + part.radius, part.y1, part.z + part.radius)
    else:
        lo = tuple(c - r for c, r in zip(part.center, part.radii, strict=True))  # type: ignore[assignment]
        hi = tuple(c + r for c, r in zip(part.center, part.radii, strict=True))  # type: ignore[assignment]
    return [(x, y, z) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]


def intersect_box(box: Box, origin: tuple[float, float, float], d: tuple[F64, F64, F64]) -> Hit:
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    qx, qy, qz = (o - b for o, b in zip(origin, box.center, strict=True))
    # Into the box's frame, where it is axis-aligned (inverse of the yaw rotation).
    local_o = (c * qx - s * qz, qy, s * qx + c * qz)
    local_d = (c * d[0] - s * d[2], d[1], s * d[0] + c * d[2])
    near, far, axis_of_near = None, None, None
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inv = 1.0 / local_d[axis]
            t1 = (-box.half[axis] - local_o[axis]) * inv
            t2 = (box.half[axis] - local_o[axis]) * inv
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            if near is None or far is None or axis_of_near is None:
                near, far, axis_of_near = lo, hi, np.zeros(lo.shape, dtype=np.int8)
            else:
                later = lo > near
                axis_of_near = np.where(later, axis, axis_of_near).astype(np.int8)
                near, far = np.maximum(near, lo), np.minimum(far, hi)
    assert near is not None and far is not None and axis_of_near is not None
    hit = (near <= far) & (near > EPS)
    t = np.where(hit, near, np.inf)
    tt = np.where(hit, near, 0.0)
    px, py, pz = (local_o[a] + tt * local_d[a] for a in range(3))
    lnx = np.where(axis_of_near == 0, -np.sign(local_d[0]), 0.0)
    lny = np.where(axis_of_near == 1, -np.sign(local_d[1]), 0.0)
    lnz = np.where(axis_of_near == 2, -np.sign(local_d[2]), 0.0)
    normal = (c * lnx + s * lnz, lny, -s * lnx + c * lnz)
    along = np.where(axis_of_near == 0, pz + box.half[2], px + box.half[0])
    return Hit(t, normal, along, py + box.half[1])


def intersect_cylinder(cyl: Cylinder, origin: tuple[float, float, float], d: tuple[F64, F64, F64]) -> Hit:
    ox, oy, oz = origin[0] - cyl.x, origin[1], origin[2] - cyl.z
    a = d[0] * d[0] + d[2] * d[2]
    half_b = ox * d[0] + oz * d[2]
    c = ox * ox + oz * oz - cyl.radius * cyl.radius
    disc = half_b * half_b - a * c
    ok = (disc >= 0) & (a > EPS)
    t_side = np.where(ok, (-half_b - np.sqrt(np.where(ok, disc, 0.0))) / np.where(ok, a, 1.0), np.inf)
    y = oy + t_side * d[1]
    t_side = np.where((t_side > EPS) & (y >= cyl.y0) & (y <= cyl.y1), t_side, np.inf)
    t_cap = np.full(d[0].shape, np.inf)
    if oy > cyl.y1:  # the top cap is only visible from above
        going_down = d[1] < -EPS
        tc = np.where(going_down, (cyl.y1 - oy) / np.where(going_down, d[1], -1.0), np.inf)
        cx, cz = ox + tc * d[0], oz + tc * d[2]
        t_cap = np.where(going_down & (cx * cx + cz * cz <= cyl.radius * cyl.radius), tc, np.inf)
    on_cap = t_cap < t_side
    t = np.minimum(t_side, t_cap)
    tt = np.where(np.isfinite(t), t, 0.0)
    hx, hz = ox + tt * d[0], oz + tt * d[2]
    normal = (
        np.where(on_cap, 0.0, hx / cyl.radius),
        np.where(on_cap, 1.0, 0.0),
        np.where(on_cap, 0.0, hz / cyl.radius),
    )
    return Hit(t, normal, (hx + hz) * 1.0 + cyl.x + cyl.z, oy + tt * d[1])


def intersect_ellipsoid(ell: Ellipsoid, origin: tuple[float, float, float], d: tuple[F64, F64, F64]) -> Hit:
    # Scale space so the ellipsoid becomes the unit sphere; t is unchanged by the scaling.
    o = [(origin[a] - ell.center[a]) / ell.radii[a] for a in range(3)]
    ds = [d[a] / ell.radii[a] for a in range(3)]
    a = ds[0] * ds[0] + ds[1] * ds[1] + ds[2] * ds[2]
    half_b = o[0] * ds[0] + o[1] * ds[1] + o[2] * ds[2]
    c = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - 1.0
    disc = half_b * half_b - a * c
    ok = disc >= 0
    t = np.where(ok, (-half_b - np.sqrt(np.where(ok, disc, 0.0))) / a, np.inf)
    t = np.where(t > EPS, t, np.inf)
    tt = np.where(np.isfinite(t), t, 0.0)
    p = [o[i] + tt * ds[i] for i in range(3)]  # on the unit sphere
    g = [p[i] / ell.radii[i] for i in range(3)]  # gradient direction of the implicit surface
    norm = np.sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2])
    norm = np.where(norm > 0, norm, 1.0)
    world = [ell.center[i] + p[i] * ell.radii[i] for i in range(3)]
    return Hit(t, (g[0] / norm, g[1] / norm, g[2] / norm), world[0] + world[2], world[1])
