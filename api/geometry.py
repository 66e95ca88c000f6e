"""H3 cell geometry for GeoJSON answers: cell sizes, boundaries, convex hulls, bounding boxes, distances."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import h3


def edge_m(res: int) -> float:
    """The mean edge of an H3 cell at ``res``, metres (one decimal)."""
    return round(h3.average_hexagon_edge_length(res, unit="m"), 1)


def edge_text(res: int) -> str:
    """The size of a cell in words, as the charter's explanation gives it: 76 m, 200 m, 1.4 km."""
    m = h3.average_hexagon_edge_length(res, unit="m")
    if m >= 1000:
        return f"{m / 1000:.1f} km"
    return f"{round(m, -1 if m >= 100 else 0):.0f} m"


@lru_cache(maxsize=100_000)
def centre(cell: str) -> tuple[float, float]:
    """(lat, lon) of the cell's centre."""
    return h3.cell_to_latlng(cell)


@lru_cache(maxsize=100_000)
def cell_ring(cell: str) -> list[list[float]]:
    """The cell's boundary as a closed GeoJSON ring (lon, lat), counter-clockwise as RFC 7946 asks of an
    exterior ring (H3 gives its vertices clockwise): what every GeoJSON answer of the API uses. Cached: a
    page of observations repeats its cells."""
    ring = [[round(lon, 7), round(lat, 7)] for lat, lon in h3.cell_to_boundary(cell)]
    if _area2(ring) < 0:
        ring.reverse()
    return [*ring, ring[0]]


def cell_polygon(cell: str) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [cell_ring(cell)]}


def _area2(ring: list[list[float]]) -> float:
    return sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, ring[1:] + ring[:1], strict=True))


def hull_polygon(cells: set[str]) -> dict[str, Any] | None:
    """GeoJSON Polygon: the convex hull of the cells' boundaries (closed ring, counter-clockwise)."""
    points = sorted({(lon, lat) for c in cells for lon, lat in cell_ring(c)})
    if len(points) < 3:
        return None

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    for p in points:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(points):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    ring = [list(p) for p in lower[:-1] + upper[:-1]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def bbox(cells: set[str]) -> list[float] | None:
    """[west, south, east, north] of the cells' boundaries (GeoJSON bbox order)."""
    pts = [p for c in cells for p in cell_ring(c)]
    if not pts:
        return None
    return [min(p[0] for p in pts), min(p[1] for p in pts), max(p[0] for p in pts), max(p[1] for p in pts)]


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Equirectangular distance: exact enough within a city."""
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return 6_371_000 * math.hypot(x, y)
