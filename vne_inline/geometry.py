"""Slice geometry in patient coordinates (ISMRMRD conventions, design §3).

`position` is the image centre (mm); `read_dir` runs along x (columns), `phase_dir` along y (rows),
`slice_dir` is the normal; `fov` is (x, y, thickness) in mm; image data is (..., y, x). Pixel (ix, iy)
has its centre at

    position + ((ix + 0.5) - nx/2) * fov_x/nx * read_dir + ((iy + 0.5) - ny/2) * fov_y/ny * phase_dir

Every resampling in the project goes through :class:`SliceGeometry`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

__all__ = ["SliceGeometry", "PlaneMatch", "Resampled", "plane_from_normal"]


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n == 0:
        raise ValueError(f"direction vector {v.tolist()} has no length")
    return v / n


@dataclass(frozen=True)
class PlaneMatch:
    """How two slices relate: |cos| of the normals, through-plane distance (mm), in-plane offset (mm)."""

    cosine: float
    distance_mm: float
    in_plane_offset_mm: float

    def accepted(self, min_cosine: float = 0.9, max_distance_mm: float = 4.0) -> bool:
        """The paper's criteria: normals' cosine similarity > 0.9 and slice distance < 4 mm."""
        return self.cosine > min_cosine and self.distance_mm < max_distance_mm


@dataclass(frozen=True)
class Resampled:
    """An image resampled onto a target grid; `outside` marks target pixels not covered by the source."""

    data: np.ndarray
    outside: np.ndarray

    @property
    def outside_fraction(self) -> float:
        return float(self.outside.mean()) if self.outside.size else 0.0


@dataclass(frozen=True)
class SliceGeometry:
    """One 2-D slice: centre `position` (mm), unit directions, field of view (mm) and matrix (nx, ny)."""

    position: np.ndarray
    read_dir: np.ndarray
    phase_dir: np.ndarray
    slice_dir: np.ndarray
    fov: np.ndarray
    matrix: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", np.asarray(self.position, dtype=np.float64).reshape(3))
        for name in ("read_dir", "phase_dir", "slice_dir"):
            object.__setattr__(self, name, _unit(getattr(self, name)))
        object.__setattr__(self, "fov", np.asarray(self.fov, dtype=np.float64).reshape(3))
        nx, ny = (int(m) for m in self.matrix)
        if nx < 1 or ny < 1:
            raise ValueError(f"matrix {self.matrix} must be positive")
        object.__setattr__(self, "matrix", (nx, ny))
        if not np.all(np.isfinite(self.position)) or not np.all(np.isfinite(self.fov)):
            raise ValueError("position and field of view must be finite")
        if np.any(self.fov[:2] <= 0):
            raise ValueError(f"field of view {self.fov.tolist()} must be positive in plane")
        if abs(float(self.read_dir @ self.phase_dir)) > 1e-3:
            raise ValueError("read_dir and phase_dir must be orthogonal")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_header(cls, head) -> SliceGeometry:
        """From an `ismrmrd.ImageHeader` (or anything with the same attribute names)."""
        return cls(
            position=np.array(head.position[:]),
            read_dir=np.array(head.read_dir[:]),
            phase_dir=np.array(head.phase_dir[:]),
            slice_dir=np.array(head.slice_dir[:]),
            fov=np.array(head.field_of_view[:]),
            matrix=(int(head.matrix_size[0]), int(head.matrix_size[1])),
        )

    @classmethod
    def from_dicom(
        cls, position, orientation, spacing, rows: int, columns: int, thickness_mm: float = 0.0,
    ) -> SliceGeometry:
        """From DICOM's ImagePositionPatient (centre of the first, top-left pixel; mm),
        ImageOrientationPatient (row direction = `read_dir`, then column direction = `phase_dir`) and
        PixelSpacing (row spacing dy, then column spacing dx; mm): the image centre is
        ``IPP + (nx-1)/2 dx read + (ny-1)/2 dy phase`` and the field of view ``(nx dx, ny dy, thickness)``."""
        ipp = np.asarray(position, dtype=np.float64).reshape(3)
        iop = np.asarray(orientation, dtype=np.float64).reshape(6)
        read, phase = iop[:3], iop[3:]
        dy, dx = (float(s) for s in spacing)
        if not (dx > 0 and dy > 0):
            raise ValueError(f"PixelSpacing {list(spacing)} must be positive")
        centre = ipp + 0.5 * (columns - 1) * dx * read + 0.5 * (rows - 1) * dy * phase
        return cls(position=centre, read_dir=read, phase_dir=phase, slice_dir=np.cross(read, phase),
                   fov=(columns * dx, rows * dy, thickness_mm), matrix=(columns, rows))

    def to_dicom(self) -> tuple[list[float], list[float], list[float]]:
        """(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) of this grid (inverse of `from_dicom`)."""
        dx, dy = self.pixel_spacing
        ipp = self.position - 0.5 * (self.nx - 1) * dx * self.read_dir - 0.5 * (self.ny - 1) * dy * self.phase_dir
        return ipp.tolist(), [*self.read_dir.tolist(), *self.phase_dir.tolist()], [dy, dx]

    def to_header(self, head) -> None:
        """Write the geometry into an `ismrmrd.ImageHeader` field by field (matrix_size x, y only)."""
        for i in range(3):
            head.position[i] = float(self.position[i])
            head.read_dir[i] = float(self.read_dir[i])
            head.phase_dir[i] = float(self.phase_dir[i])
            head.slice_dir[i] = float(self.slice_dir[i])
            head.field_of_view[i] = float(self.fov[i])
        head.matrix_size[0] = self.matrix[0]
        head.matrix_size[1] = self.matrix[1]

    def translated(self, offset_mm: np.ndarray) -> SliceGeometry:
        """The same grid with its centre moved by `offset_mm` (3-vector in patient coordinates)."""
        return replace(self, position=self.position + np.asarray(offset_mm, dtype=np.float64).reshape(3))

    def in_plane_vector(self, x_mm: float, y_mm: float) -> np.ndarray:
        """Patient-coordinate vector (mm) of `x_mm` along the columns (read) and `y_mm` along the rows (phase)."""
        return x_mm * self.read_dir + y_mm * self.phase_dir

    # ------------------------------------------------------------------ properties
    @property
    def nx(self) -> int:
        return self.matrix[0]

    @property
    def ny(self) -> int:
        return self.matrix[1]

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape (ny, nx) of an image on this grid."""
        return (self.ny, self.nx)

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(dx, dy) in mm: along read (columns) and phase (rows)."""
        return (float(self.fov[0] / self.nx), float(self.fov[1] / self.ny))

    @property
    def thickness(self) -> float:
        return float(self.fov[2])

    # ------------------------------------------------------------------ coordinates
    def pixel_centres(self) -> np.ndarray:
        """Patient coordinates (mm) of every pixel centre, shape (ny, nx, 3)."""
        dx, dy = self.pixel_spacing
        u = ((np.arange(self.nx) + 0.5) - self.nx / 2) * dx
        v = ((np.arange(self.ny) + 0.5) - self.ny / 2) * dy
        return (
            self.position[None, None, :]
            + u[None, :, None] * self.read_dir[None, None, :]
            + v[:, None, None] * self.phase_dir[None, None, :]
        )

    def to_pixel(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fractional pixel indices (ix, iy) and signed through-plane distance (mm) of points (..., 3)."""
        d = np.asarray(points, dtype=np.float64) - self.position
        dx, dy = self.pixel_spacing
        ix = d @ self.read_dir / dx + self.nx / 2 - 0.5
        iy = d @ self.phase_dir / dy + self.ny / 2 - 0.5
        return ix, iy, d @ self.normal

    @cached_property
    def normal(self) -> np.ndarray:
        """Unit normal: `slice_dir` when it is perpendicular to the plane, else read x phase (read-only)."""
        (rx, ry, rz), (px, py, pz) = self.read_dir.tolist(), self.phase_dir.tolist()
        n = np.array([ry * pz - rz * py, rz * px - rx * pz, rx * py - ry * px])
        n = n if float(n @ self.slice_dir) >= 0 else -n
        n.flags.writeable = False
        return n

    # ------------------------------------------------------------------ matching
    def same_grid(self, other: SliceGeometry, tol_mm: float = 1e-3) -> bool:
        """The same pixel grid: matrix, and centre, directions and field of view within `tol_mm`."""
        return self.matrix == other.matrix and all(
            np.allclose(getattr(self, name), getattr(other, name), rtol=0.0, atol=tol_mm)
            for name in ("position", "read_dir", "phase_dir", "fov"))

    def compare(self, other: SliceGeometry) -> PlaneMatch:
        """Cosine of the normals (sign ignored), mean through-plane distance and in-plane centre offset (mm)."""
        cosine = abs(float(self.normal @ other.normal))
        d = other.position - self.position
        distance = 0.5 * (abs(float(d @ self.normal)) + abs(float(d @ other.normal)))
        in_plane = d - (d @ self.normal) * self.normal
        return PlaneMatch(cosine=cosine, distance_mm=distance, in_plane_offset_mm=float(np.linalg.norm(in_plane)))

    # ------------------------------------------------------------------ resampling
    def resample_from(self, image: np.ndarray, source: SliceGeometry) -> Resampled:
        """Resample `image` (..., ny_src, nx_src) on `source` onto this grid, in plane, bilinearly.

        Target pixel centres are projected onto the source plane (the through-plane component is
        ignored: match planes first with :meth:`compare`); beyond the source's edge pixel centres the
        edge value is used. Target pixels whose projection falls more than half a pixel outside the
        source are filled with 0 and flagged in `outside`.
        """
        image = np.asarray(image)
        if image.shape[-2:] != source.shape:
            raise ValueError(f"image shape {image.shape[-2:]} does not match the source grid {source.shape}")
        ix, iy, _ = source.to_pixel(self.pixel_centres())
        outside = (ix < -0.5) | (ix > source.nx - 0.5) | (iy < -0.5) | (iy > source.ny - 0.5)
        dtype = np.result_type(image.dtype, np.float32)
        flat = image.reshape((-1, *source.shape)).astype(dtype, copy=False)
        out = _bilinear(flat, iy, ix)
        out[:, outside] = 0
        return Resampled(data=out.reshape((*image.shape[:-2], *self.shape)), outside=outside)


def _axis_weights(coord: np.ndarray, n: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper neighbour indices along one axis of length `n` and the upper one's weight
    (coordinates clamped to the edge pixel centres)."""
    c = np.clip(coord, 0.0, n - 1.0)
    lower = np.minimum(np.floor(c).astype(np.intp), max(n - 2, 0))
    return lower, np.minimum(lower + 1, n - 1), (c - lower).astype(dtype)


def _bilinear(frames: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Bilinear samples of every frame (k, ny, nx) at fractional pixel indices (iy, ix): one set of
    weights for all frames."""
    y0, y1, fy = _axis_weights(iy, frames.shape[-2], frames.dtype)
    x0, x1, fx = _axis_weights(ix, frames.shape[-1], frames.dtype)
    top = frames[:, y0, x0] * (1 - fx) + frames[:, y0, x1] * fx
    bottom = frames[:, y1, x0] * (1 - fx) + frames[:, y1, x1] * fx
    return top * (1 - fy) + bottom * fy

def plane_from_normal(
    centre: np.ndarray,
    normal: np.ndarray,
    fov_mm: tuple[float, float, float],
    matrix: tuple[int, int],
    in_plane_rotation_deg: float = 0.0,
    up: np.ndarray | None = None,
) -> SliceGeometry:
    """A slice through `centre` with the given normal; read/phase are chosen from `up` then rotated in plane."""
    n = _unit(normal)
    up = _unit(np.array([0.0, 0.0, 1.0]) if up is None else up)
    if abs(float(up @ n)) > 0.99:
        up = _unit(np.array([0.0, 1.0, 0.0]))
    read = _unit(np.cross(up, n))
    phase = np.cross(n, read)
    a = np.deg2rad(in_plane_rotation_deg)
    read, phase = np.cos(a) * read + np.sin(a) * phase, -np.sin(a) * read + np.cos(a) * phase
    return SliceGeometry(position=centre, read_dir=read, phase_dir=phase, slice_dir=n, fov=fov_mm, matrix=matrix)
