"""The analytic beating heart of one patient: LV (truncated thick-walled ellipsoid), RV crescent, atria,
papillary muscles, trabeculae and epicardial fat, in a heart frame attached to patient coordinates.

Heart frame (mm): `w` along the long axis from the base (0) to the apex, `s` towards the RV (septum),
`t` towards inferior; angle theta = atan2(t, s): 0 septum, +90 deg inferior, -90 deg anterior,
+-180 deg lateral. Shape maps are tabulated on an end-diastolic (ED) polar grid (theta, w; 1 deg x
0.5 mm, nearest node); surfaces are ellipsoids whose equatorial semi-axes vary with (theta, w), so
every evaluation is a few vector operations per point. Edges are soft (partial volume, `fields.Edge`).

Motion (phase 0 = ED at the R wave): contraction c(phase) in [0, 1]; the base descends towards the
fixed apex (long-axis shortening), the apex twists, the epicardium moves in slightly and the wall
thickens by `thickening` (40-60 %) less in fibrotic and hypertrophied segments; the endocardium
follows from wall mass conservation in-plane (thicker wall, smaller cavity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.synth.composite import Layers
from vne_inline.synth.fields import Edge, project, ramp, smooth_grid
from vne_inline.synth.labels import Label
from vne_inline.synth.patient import HeartParams

__all__ = [
    "HeartFrame",
    "heart_frame",
    "contraction",
    "diastasis_phase",
    "PolarGrid",
    "WallShape",
    "build_wall_shape",
    "HeartPoints",
    "HeartModel",
    "ellipsoid_distance",
    "wrap_angle",
]

THETA_BINS = 360  # 1 degree bins (0.5 mm at a 30 mm radius)
W_STEP_MM = 0.5
W_MARGIN_MM = 12.0  # tables extend this far beyond the base and the apex
ATRIUM_WALL_MM = 2.0  # atrial wall about 1-3 mm thick (chosen)
# Proximal coronary lumen diameter about 3.5-4 mm (Dodge et al., Circulation 1992;86:232-246).
CORONARY_RADIUS_MM = 1.8


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles (rad) wrapped to [-pi, pi)."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def ellipsoid_distance(coords: tuple[np.ndarray, ...], semi_axes: tuple) -> np.ndarray:
    """First-order signed distance (mm, > 0 outside) to the ellipsoid sum (x_i / a_i)^2 = 1."""
    q2 = sum((x / a) ** 2 for x, a in zip(coords, semi_axes, strict=True))
    g2 = sum((x / (a * a)) ** 2 for x, a in zip(coords, semi_axes, strict=True))
    q = np.sqrt(q2)
    grad = np.sqrt(g2) / np.maximum(q, 1e-6)
    return (q - 1.0) / np.maximum(grad, 1e-6)


# ----------------------------------------------------------------------------------------------- frame
@dataclass(frozen=True)
class HeartFrame:
    """Origin (LV base centre) and axes (rows e_sept, e_inf, e_long) in patient coordinates (mm)."""

    origin: np.ndarray
    axes: np.ndarray

    def local(self, points: np.ndarray) -> np.ndarray:
        """Heart-frame coordinates (N, 3) = (s, t, w), float32, of patient points (N, 3)."""
        return project(points, self.axes, self.origin).T

    def to_patient(self, local: np.ndarray) -> np.ndarray:
        return np.asarray(local, dtype=np.float64) @ self.axes + self.origin

    @property
    def e_inf(self) -> np.ndarray:
        return self.axes[1]

    @property
    def e_long(self) -> np.ndarray:
        return self.axes[2]


def heart_frame(p: HeartParams) -> HeartFrame:
    """The heart frame: long axis from azimuth (from anterior towards left) and elevation (downwards);
    the septal direction starts towards the patient's right-anterior and is rolled about the long axis."""
    az, el, roll = np.deg2rad([p.azimuth_deg, p.elevation_deg, p.roll_deg])
    # patient coordinates (LPS): +x left, +y posterior, +z head
    e_long = np.array([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), -np.sin(el)])
    ref = np.array([-1.0, -1.0, 0.0]) / np.sqrt(2.0)
    e_sept = ref - (ref @ e_long) * e_long
    e_sept /= np.linalg.norm(e_sept)
    e_inf0 = np.cross(e_long, e_sept)
    e_sept = np.cos(roll) * e_sept + np.sin(roll) * e_inf0
    e_inf = np.cross(e_long, e_sept)
    return HeartFrame(origin=np.asarray(p.base_centre_mm, dtype=np.float64), axes=np.stack([e_sept, e_inf, e_long]))


# ----------------------------------------------------------------------------------------------- timing
def _systole_ms(rr_ms: float) -> float:
    """R wave to end-systole (ms): electromechanical systole QS2 = 546 - 2.1 HR (men; Weissler et al.,
    Circulation 1968;37:149-159) less about 30 ms from Q onset to the R wave."""
    return 546.0 - 2.1 * (60000.0 / rr_ms) - 30.0


def _diastole_ms(rr_ms: float) -> tuple[float, float, float]:
    """End-systole, end of rapid filling and start of atrial contraction (ms after the R wave)."""
    t_es = _systole_ms(rr_ms)
    dia = rr_ms - t_es
    return t_es, t_es + min(180.0, 0.35 * dia), rr_ms - min(150.0, 0.25 * dia)


def contraction(phase: float, rr_ms: float) -> float:
    """Contraction state c in [0, 1] (0 end-diastole, 1 end-systole) at `phase` (fraction of RR)."""
    t = (phase % 1.0) * rr_ms
    t_es, t_fill, t_atrial = _diastole_ms(rr_ms)
    if t < t_es:  # ejection
        return 0.5 * (1.0 - np.cos(np.pi * t / t_es))
    if t < t_fill:  # rapid filling: 80 % of the volume returns
        return 1.0 - 0.8 * 0.5 * (1.0 - np.cos(np.pi * (t - t_es) / (t_fill - t_es)))
    if t < t_atrial:  # diastasis: slow filling
        return 0.2 - 0.05 * (t - t_fill) / max(t_atrial - t_fill, 1e-6)
    return 0.15 * 0.5 * (1.0 + np.cos(np.pi * (t - t_atrial) / (rr_ms - t_atrial)))  # atrial kick


def diastasis_phase(rr_ms: float) -> float:
    """Mid-diastasis as a fraction of RR: the trigger delay of T1 mapping and LGE readouts."""
    _, t_fill, t_atrial = _diastole_ms(rr_ms)
    return 0.5 * (t_fill + t_atrial) / rr_ms


# ----------------------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class PolarGrid:
    """Regular (theta, w) grid: theta in [-pi, pi) (periodic), w from `w_min` (mm) in steps `w_step`."""

    n_theta: int
    w_min: float
    w_step: float
    n_w: int

    @property
    def theta(self) -> np.ndarray:
        return -np.pi + 2 * np.pi * np.arange(self.n_theta) / self.n_theta

    @property
    def w(self) -> np.ndarray:
        return self.w_min + self.w_step * np.arange(self.n_w)

    def bins(self, theta_deg: float, w_mm: float) -> tuple[float, float]:
        """A (theta, w) length in grid steps (for smoothing widths)."""
        return theta_deg * self.n_theta / 360.0, w_mm / self.w_step

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """(theta, w) of every node, each (n_theta, n_w)."""
        return np.meshgrid(self.theta, self.w, indexing="ij")

    def weights(self, theta: np.ndarray, w: np.ndarray):
        """Flat node indices (4, N) and bilinear weights (4, N) of points; theta wraps, w clamps."""
        u = (np.asarray(theta, dtype=np.float32) + np.float32(np.pi)) * np.float32(self.n_theta / (2 * np.pi))
        v = np.clip((np.asarray(w, dtype=np.float32) - np.float32(self.w_min)) / np.float32(self.w_step), 0, self.n_w - 1.001)
        i0 = np.floor(u)
        fu = u - i0
        i0 = i0.astype(np.int64) % self.n_theta
        i1 = (i0 + 1) % self.n_theta
        j0 = v.astype(np.int64)
        fv = v - j0
        idx = np.stack([i0 * self.n_w + j0, i0 * self.n_w + j0 + 1, i1 * self.n_w + j0, i1 * self.n_w + j0 + 1])
        wts = np.stack([(1 - fu) * (1 - fv), (1 - fu) * fv, fu * (1 - fv), fu * fv])
        return idx, wts

    def nearest(self, table: np.ndarray, theta: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Values (N, F) of a stacked table (n_theta, n_w, F) at the nearest node (one gather)."""
        i = np.rint((np.asarray(theta, dtype=np.float32) + np.float32(np.pi)) * np.float32(self.n_theta / (2 * np.pi))).astype(np.int64) % self.n_theta
        j = np.clip(np.rint((np.asarray(w, dtype=np.float32) - np.float32(self.w_min)) / np.float32(self.w_step)), 0, self.n_w - 1).astype(np.int64)
        return table.reshape(self.n_theta * self.n_w, -1)[i * self.n_w + j]

    def lookup(self, table: np.ndarray, theta: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Bilinear values (N, F) of a stacked table (n_theta, n_w, F) at points."""
        flat = table.reshape(self.n_theta * self.n_w, -1)
        idx, wts = self.weights(theta, w)
        out = flat[idx[0]] * wts[0][:, None]
        for k in range(1, 4):
            out += flat[idx[k]] * wts[k][:, None]
        return out


# ----------------------------------------------------------------------------------------------- LV wall
@dataclass(frozen=True)
class WallShape:
    """End-diastolic LV wall: equatorial semi-axes a_en, a_ep (theta, w) and apical semi-axes c_en, c_ep
    of ellipsoids centred `w0` mm from the base; `excess` is the hypertrophy (mm) over the normal wall."""

    grid: PolarGrid
    a_en: np.ndarray
    a_ep: np.ndarray
    excess: np.ndarray
    w0: float
    c_en: float
    c_ep: float
    insertion_deg: tuple[float, float]  # anterior and inferior RV insertion angles

    @property
    def apex_w(self) -> float:
        """Epicardial apex (mm from the base)."""
        return self.w0 + self.c_ep

    def coarsened(self, factor: int) -> WallShape:
        """The same wall on a grid `factor` times coarser in both directions."""
        g = self.grid
        grid = PolarGrid(g.n_theta // factor, g.w_min, g.w_step * factor, (g.n_w + factor - 1) // factor)
        sub = (slice(None, None, factor), slice(None, None, factor))
        return WallShape(grid, self.a_en[sub], self.a_ep[sub], self.excess[sub], self.w0, self.c_en, self.c_ep, self.insertion_deg)

    def radii(self) -> tuple[np.ndarray, np.ndarray]:
        """In-plane endocardial and epicardial radii (mm) on the grid."""
        wp = np.maximum(self.grid.mesh()[1] - self.w0, 0.0)
        r_en = self.a_en * np.sqrt(np.clip(1 - (wp / self.c_en) ** 2, 0, 1))
        r_ep = self.a_ep * np.sqrt(np.clip(1 - (wp / self.c_ep) ** 2, 0, 1))
        return r_en, r_ep


# Share of the hypertrophy that grows into the cavity (the rest grows outwards).
INWARD_SHARE = 0.45


def build_wall_shape(p: HeartParams, rng: np.random.Generator) -> WallShape:
    """Tabulate the ED wall: normal wall (thinner towards the apex) plus hypertrophy bumps, about 1 mm
    smooth irregularity and a slightly oval cross-section."""
    w0 = p.equator_mm
    c_en = p.cavity_length_mm - w0
    c_ep = c_en + p.apex_wall_mm
    grid = PolarGrid(THETA_BINS, -W_MARGIN_MM, W_STEP_MM, int(np.ceil((w0 + c_ep + 2 * W_MARGIN_MM) / W_STEP_MM)))
    th, w = grid.mesh()
    frac = np.clip(w / p.cavity_length_mm, 0.0, 1.0)
    excess = p.uniform_excess_mm * (1.0 - 0.35 * frac)
    for b in p.bumps:
        along = np.exp(-0.5 * ((w - b.w_mm) / b.sigma_w_mm) ** 2)
        around = 1.0 if b.theta_deg is None else np.exp(-0.5 * (wrap_angle(th - np.deg2rad(b.theta_deg)) / np.deg2rad(b.sigma_theta_deg)) ** 2)
        excess = excess + b.excess_mm * around * along
    wall = p.wall_mm * (1.0 - 0.2 * frac) + 1.0 * smooth_grid(rng, th.shape, grid.bins(14.0, 8.0), wrap_axes=(0,))
    ellipse = 1.0 + rng.uniform(0.0, 0.08) * np.cos(2 * (th - rng.uniform(0, np.pi)))  # slightly oval LV
    a_en = np.maximum((p.cavity_radius_mm - INWARD_SHARE * excess) * ellipse, 4.0)
    a_ep = (p.cavity_radius_mm + (1 - INWARD_SHARE) * excess) * ellipse + wall
    ins = (p.rv_centre_deg - p.rv_half_span_deg, p.rv_centre_deg + p.rv_half_span_deg)
    return WallShape(grid, a_en.astype(np.float32), a_ep.astype(np.float32), excess.astype(np.float32), w0, c_en, c_ep, ins)


# ----------------------------------------------------------------------------------------------- points
@dataclass(frozen=True)
class HeartPoints:
    """Points in the heart frame, with the polar coordinates that do not change with the phase."""

    s: np.ndarray
    t: np.ndarray
    w: np.ndarray
    r: np.ndarray
    theta: np.ndarray

    @classmethod
    def from_local(cls, local: np.ndarray) -> HeartPoints:
        s, t, w = (np.ascontiguousarray(local[:, k]) for k in range(3))
        return cls(s=s, t=t, w=w, r=np.hypot(s, t), theta=np.arctan2(t, s))

    def subset(self, idx: np.ndarray) -> HeartPoints:
        return HeartPoints(self.s[idx], self.t[idx], self.w[idx], self.r[idx], self.theta[idx])


@dataclass(frozen=True)
class Atrium:
    """An atrium: ellipsoid (heart-frame centre and semi-axes, mm), axis-aligned in the heart frame."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]

    def distance(self, pts: HeartPoints, base_shift: float, scale: float) -> np.ndarray:
        """Signed distance (mm); the atrium stretches towards the base as the base descends by `base_shift`."""
        cs, ct, cw = self.centre
        a_s, a_t, a_w = (a * scale for a in self.semi_axes)
        return ellipsoid_distance((pts.s - cs, pts.t - ct, pts.w - cw - 0.5 * base_shift), (a_s, a_t, a_w + 0.5 * base_shift))


class HeartModel:
    """One patient's heart: ED shape tables (theta, w, field) and motion; lesion fractions come from a
    `lesions.LesionField` passed to `layer`.

    Table fields, in order: a_en, a_ep (equatorial semi-axes), eps (systolic thickening), rv_h, rv_o (RV
    cavity and cavity + wall depth beyond the LV epicardium), fat (epicardial fat thickness), trab (LV
    trabecular density), rv_trab, rv_band (RV trabecular density and layer depth).
    """

    def __init__(self, p: HeartParams, wall: WallShape, transmural_fibrosis: np.ndarray, rng: np.random.Generator) -> None:
        self.p = p
        self.wall = wall
        self.grid = wall.grid
        th, w = self.grid.mesh()
        length = p.cavity_length_mm
        # Thickening: reduced by up to 60 % where fibrosis is transmural and 30 % in thick segments.
        eps = p.thickening * (1 - 0.6 * np.clip(transmural_fibrosis, 0, 1)) * (1 - 0.3 * np.clip(wall.excess / 15.0, 0, 1))
        rv_h, rv_o = self._rv_tables(th, w)
        fat = self._fat_table(th, w, rng)
        trab = self._trabeculae(th, w, rng)
        rv_trab, rv_band = self._rv_trabeculae(th, w, rv_h, rng)
        self.tables = np.stack([wall.a_en, wall.a_ep, eps, rv_h, rv_o, fat, trab, rv_trab, rv_band], axis=-1).astype(np.float32)
        # Papillary muscles: anterolateral and posteromedial, each with two heads, from about 30 % to
        # 78 % of the length (angle deg, radius factor).
        self.papillary_heads = tuple(
            (centre + side * rng.uniform(4.0, 8.0), rng.uniform(0.65, 0.85)) for centre in (-125.0, 120.0) for side in (-1, 1)
        )
        self.papillary_w = (0.3 * length, 0.78 * length)
        # Atria beyond the base: LA posterior, RA on the RV side (heart-frame mm).
        post = np.array([-0.75, 0.65])
        r_lv = p.cavity_radius_mm
        self.atria = (
            Atrium((post[0] * 14, post[1] * 14, -0.75 * r_lv - 4), (1.35 * r_lv, 1.3 * r_lv, 1.0 * r_lv)),
            Atrium((r_lv + 16.0, 8.0, -0.7 * r_lv - 4), (1.15 * r_lv, 1.3 * r_lv, 1.0 * r_lv)),
        )
        self.atria_w_max = max(a.centre[2] + 1.12 * a.semi_axes[2] for a in self.atria) + ATRIUM_WALL_MM + 2.0
        self.bounding_radius_mm = float(np.max(wall.a_ep + rv_o + fat) + 10.0)
        self.w_range_mm = (-2.2 * r_lv - 10.0, wall.apex_w + p.apex_fat_mm + 8.0)

    # ------------------------------------------------------------------ construction
    def _rv_tables(self, th: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RV cavity depth beyond the LV epicardium and cavity + free wall (mm): a crescent between the
        insertion points, deeper anteriorly (outflow tract), tapering to the RV apex."""
        p = self.p
        length_rv = p.rv_length_fraction * (self.wall.w0 + self.wall.c_ep)
        taper = np.sqrt(np.clip(1 - (np.maximum(w, 0) / length_rv) ** 2, 0, 1))
        half = np.deg2rad(p.rv_half_span_deg)
        du = wrap_angle(th - np.deg2rad(p.rv_centre_deg)) / half
        depth = p.rv_depth_mm * taper * (1.0 - 0.25 * np.clip(du, -1, 1))
        rv_h = depth * np.clip(1 - du**2, 0, 1) ** 0.6
        widen = 1.0 + np.deg2rad(6.0) / half  # the wall wraps around the tips
        taper_o = np.sqrt(np.clip(1 - (np.maximum(w, 0) / (length_rv + p.rv_wall_mm)) ** 2, 0, 1))
        rv_o = (depth + p.rv_wall_mm * taper_o) * np.clip(1 - (du / widen) ** 2, 0, 1) ** 0.6
        return rv_h, np.maximum(rv_o, rv_h)

    def _fat_table(self, th: np.ndarray, w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Epicardial fat thickness (mm): patchy and thin over the LV, thick in the interventricular and
        AV grooves, over the RV free wall and towards the apex."""
        p = self.p
        g = self.grid
        fat = np.maximum(p.epicardial_fat_mm * (1.0 + 1.5 * smooth_grid(rng, th.shape, g.bins(12.0, 8.0), wrap_axes=(0,))), 0)
        for ins in self.wall.insertion_deg:
            fat = fat + p.groove_fat_mm * np.exp(-0.5 * (wrap_angle(th - np.deg2rad(ins)) / np.deg2rad(12.0)) ** 2)
        fat = fat + 0.8 * p.groove_fat_mm * np.exp(-0.5 * (w / 7.0) ** 2)  # AV groove
        rv_side = np.exp(-0.5 * (wrap_angle(th - np.deg2rad(p.rv_centre_deg)) / np.deg2rad(0.6 * p.rv_half_span_deg)) ** 2)
        fat = fat + 0.35 * p.groove_fat_mm * rv_side * (1 + smooth_grid(rng, th.shape, g.bins(16.0, 10.0), wrap_axes=(0,)).clip(-1, 1))
        # apical and pericardial (cardiophrenic) fat, most on the diaphragmatic (inferior) side
        towards_diaphragm = 0.5 + 0.8 * np.maximum(np.cos(th - np.pi / 2), 0)
        fat = fat + p.apex_fat_mm * towards_diaphragm * np.exp(-0.5 * ((w - self.wall.apex_w) / 14.0) ** 2)
        return fat

    def _trabeculae(self, th: np.ndarray, w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Trabecular density (0..1) near the endocardium: longitudinal strands, more apical and lateral."""
        strands = smooth_grid(rng, th.shape, self.grid.bins(2.4, 6.0), wrap_axes=(0,))
        envelope = np.clip((w - 0.25 * self.p.cavity_length_mm) / (0.5 * self.p.cavity_length_mm), 0, 1)
        envelope = envelope * (0.6 + 0.4 * np.abs(np.cos(0.5 * th)) ** 0.5 * (np.abs(th) > np.pi / 3))
        return np.clip((strands - 0.6) * 2.5, 0, 1) * envelope

    def _rv_trabeculae(self, th: np.ndarray, w: np.ndarray, rv_h: np.ndarray, rng: np.random.Generator):
        """RV trabecular density (0..1) and the depth (mm) of the trabecular layer inside the free wall;
        the moderator band crosses the whole cavity from the septum at about 60 % of the length."""
        density = np.clip((smooth_grid(rng, th.shape, self.grid.bins(3.0, 4.0), wrap_axes=(0,)) - 0.3) * 2.0, 0, 1)
        band = np.full(th.shape, rng.uniform(2.0, 3.5))
        length = self.p.cavity_length_mm
        spot = np.exp(-0.5 * ((wrap_angle(th - np.deg2rad(rng.uniform(-20.0, 20.0))) / np.deg2rad(5.0)) ** 2
                              + ((w - rng.uniform(0.5, 0.7) * length) / 2.5) ** 2))
        density = np.maximum(density, np.clip(2.0 * spot, 0, 1))
        band = np.where(spot > 0.3, rv_h + 1.0, band)
        return density, band

    # ------------------------------------------------------------------ evaluation
    def _state(self, pts: HeartPoints, c: float) -> dict[str, np.ndarray]:
        """Surfaces around each point at contraction c: reference (ED material) coordinates, signed
        distances to endocardium and epicardium, radii, RV and fat extents."""
        p, wall = self.p, self.wall
        apex = wall.apex_w
        w_ref = apex - (apex - pts.w) / np.float32(1.0 - p.long_shortening * c)
        th_ref = pts.theta - np.float32(np.deg2rad(p.twist_deg) * c) * np.clip(w_ref / p.cavity_length_mm, 0, 1)
        a_en, a_ep, eps, rv_h, rv_o, fat, trab, rv_trab, rv_band = self.grid.nearest(self.tables, th_ref, w_ref).T
        thick = (a_ep - a_en) * (1 + eps * np.float32(c))
        a_ep_c = a_ep * np.float32(1 - p.epicardial_shrink * c)
        a_en_c = np.maximum(a_ep_c - thick, 2.0)
        c_en_c = wall.c_ep - (wall.c_ep - wall.c_en) * (1 + 0.8 * p.thickening * c)
        wp = np.maximum(w_ref - np.float32(wall.w0), 0)
        d_en = ellipsoid_distance((pts.r, wp), (a_en_c, c_en_c))
        d_ep = ellipsoid_distance((pts.r, wp), (a_ep_c, wall.c_ep))
        r_en = a_en_c * np.sqrt(np.clip(1 - (wp / c_en_c) ** 2, 0, 1))
        r_ep = a_ep_c * np.sqrt(np.clip(1 - (wp / wall.c_ep) ** 2, 0, 1))
        rv_in = rv_h * np.float32(1 - 0.15 * c)
        rv_out = rv_in + (rv_o - rv_h) * np.float32(1 + 0.3 * c)
        return dict(w_ref=w_ref, th_ref=th_ref, d_en=d_en, d_ep=d_ep, r_en=r_en, r_ep=r_ep, rv_in=rv_in,
                    rv_out=rv_out, fat=fat, trab=trab, rv_trab=rv_trab, rv_band=rv_band, a_ep_c=a_ep_c)

    def _fat_envelope(self, pts: HeartPoints, st: dict[str, np.ndarray]) -> np.ndarray:
        """Signed distance (mm, > 0 outside) to the outer surface of the epicardial fat."""
        wall = self.wall
        radial = st["r_ep"] + st["rv_out"] + st["fat"] - pts.r
        radial = np.minimum(radial, wall.apex_w - st["w_ref"])  # no fat tube beyond the apex
        wp = np.maximum(st["w_ref"] - np.float32(wall.w0), 0)
        cap = -ellipsoid_distance((pts.r, wp), (st["a_ep_c"] + st["fat"], wall.c_ep + self.p.apex_fat_mm))
        inside = np.maximum(radial, cap)
        return -np.minimum(inside, st["w_ref"] + st["fat"])  # fat covers the AV groove beyond the base

    def _papillary(self, pts: HeartPoints, st: dict[str, np.ndarray], c: float, edge: Edge) -> np.ndarray:
        p = self.p
        w1, w2 = self.papillary_w
        w_ref = st["w_ref"]
        radius = p.papillary_radius_mm * (1 + 0.25 * c) * np.sqrt(np.clip((w_ref - w1) / (0.25 * p.cavity_length_mm), 0, 1))
        radius = radius * ramp(w2 - w_ref, 4.0)
        r_p = 0.68 * st["r_en"]
        cover = np.zeros_like(pts.r)
        for deg, size in self.papillary_heads:
            dth = pts.theta - np.float32(np.deg2rad(deg) + np.deg2rad(p.twist_deg) * c * 0.5)
            dist = np.sqrt(np.maximum(pts.r**2 + r_p**2 - 2 * pts.r * r_p * np.cos(dth), 0))
            cover = np.maximum(cover, edge.flat(size * radius - dist))
        return cover

    def _coronaries(self, pts: HeartPoints, st: dict[str, np.ndarray], edge: Edge) -> np.ndarray:
        """Coronary arteries in the epicardial fat: LAD and PDA along the interventricular grooves,
        RCA and circumflex around the AV groove near the base."""
        r_c = st["r_ep"] + 0.5 * np.minimum(st["fat"], 2 * self.p.groove_fat_mm)
        cover = np.zeros_like(pts.r)
        for deg in self.wall.insertion_deg:
            dth = wrap_angle(st["th_ref"] - np.float32(np.deg2rad(deg)))
            dist = np.sqrt(np.maximum(pts.r**2 + r_c**2 - 2 * pts.r * r_c * np.cos(dth), 0))
            cover = np.maximum(cover, edge.flat(CORONARY_RADIUS_MM * (1 - 0.5 * np.clip(st["w_ref"] / self.wall.apex_w, 0, 1)) - dist))
        groove = np.sqrt((pts.r - r_c) ** 2 + (st["w_ref"] - 2.0) ** 2)
        return np.maximum(cover, edge.flat(CORONARY_RADIUS_MM - groove))

    def layer(self, pts: HeartPoints, c: float, edge: Edge, lesions) -> tuple[Layers, np.ndarray]:
        """Heart label fractions at contraction c (a `Layers` to put over the background) and the
        lesion fractions (2: hyperintense, intermediate; N) of each point (parts of LV_MYO)."""
        st = self._state(pts, c)
        base = edge.cover(st["w_ref"])
        layers = Layers(pts.r.size)
        cavity = edge.cover(-st["d_en"]) * base
        inner = np.flatnonzero(cavity > 0)
        sub = {k: v[inner] for k, v in st.items()}
        trab = sub["trab"] * edge.flat(sub["d_en"] + np.float32(self.p.trabeculation_mm))
        muscle = np.maximum(self._papillary(pts.subset(inner), sub, c, edge), trab)
        layers.paint(Label.PAPILLARY, muscle * cavity[inner], inner)
        layers.paint(Label.LV_BLOOD, cavity)
        layers.paint(Label.LV_MYO, edge.cover(-st["d_ep"]) * base)
        rv_cavity = edge.cover(st["r_ep"] + st["rv_in"] - pts.r) * base
        rv_trab = st["rv_trab"] * edge.cover(pts.r - (st["r_ep"] + st["rv_in"] - st["rv_band"]))
        layers.paint(Label.OTHER_MYO, rv_trab * rv_cavity)
        layers.paint(Label.BLOOD, rv_cavity)
        layers.paint(Label.OTHER_MYO, edge.cover(st["r_ep"] + st["rv_out"] - pts.r) * base)
        base_shift = self.p.long_shortening * c * self.wall.apex_w
        near_atria = np.flatnonzero(pts.w < self.atria_w_max + base_shift)
        d_atria = [a.distance(pts.subset(near_atria), base_shift, 1.0 + 0.12 * c) for a in self.atria]
        for d in d_atria:
            layers.paint(Label.BLOOD, edge.flat(-d), near_atria)
        for d in d_atria:
            layers.paint(Label.OTHER_MYO, edge.flat(ATRIUM_WALL_MM - d), near_atria)
        fat = edge.cover(-self._fat_envelope(pts, st))
        in_fat = np.flatnonzero((fat > 0) & (layers.rest > 0))
        layers.paint(Label.BLOOD, self._coronaries(pts.subset(in_fat), {k: v[in_fat] for k, v in st.items()}, edge), in_fat)
        layers.paint(Label.FAT, fat)

        lesion = np.zeros((2, pts.r.size), dtype=np.float32)
        myo = layers.fractions[Label.LV_MYO]
        idx = np.flatnonzero(myo > 0)
        if idx.size and lesions is not None:
            span = np.maximum(st["r_ep"][idx] - st["r_en"][idx], 0.5)
            xi = np.clip((pts.r[idx] - st["r_en"][idx]) / span, 0, 1)
            lesion[:, idx] = lesions.lookup(st["th_ref"][idx], st["w_ref"][idx], xi).T * myo[idx]
        return layers, lesion

    def envelope_distance(self, pts: HeartPoints) -> np.ndarray:
        """Signed distance (mm, > 0 outside) to the end-diastolic heart: fat envelope and atria."""
        st = self._state(pts, 0.0)
        d = self._fat_envelope(pts, st)
        for a in self.atria:
            d = np.minimum(d, a.distance(pts, 0.0, 1.12) - ATRIUM_WALL_MM)
        return d

    def reach(self, pts: HeartPoints, margin_mm: float) -> np.ndarray:
        """Points within `margin_mm` of the end-diastolic heart (which contains the heart at every
        phase, bar the atria's stretch, covered by the margin)."""
        near = np.flatnonzero(self.near(pts))
        out = np.zeros(pts.r.size, bool)
        out[near] = self.envelope_distance(pts.subset(near)) < margin_mm
        return out

    def near(self, pts: HeartPoints) -> np.ndarray:
        """Points that may be covered by the heart at some phase (a conservative cylinder)."""
        lo, hi = self.w_range_mm
        return (pts.r < self.bounding_radius_mm) & (pts.w > lo) & (pts.w < hi)
