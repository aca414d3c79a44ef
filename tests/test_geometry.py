"""SliceGeometry against hand-computed answers: rotated, shifted, non-square and swapped grids."""

import ismrmrd
import numpy as np
import pytest

from vne_inline.geometry import SliceGeometry, plane_from_normal


def axial(position=(0.0, 0.0, 0.0), fov=(40.0, 20.0, 8.0), matrix=(4, 2)) -> SliceGeometry:
    return SliceGeometry(position, [1, 0, 0], [0, 1, 0], [0, 0, 1], fov, matrix)


def test_pixel_centres_hand_computed():
    # 4 x 2 pixels of 10 mm: x centres -15, -5, 5, 15; y centres -5, 5 (plus the position)
    g = axial(position=(100.0, 50.0, -20.0))
    c = g.pixel_centres()
    assert c.shape == (2, 4, 3)
    np.testing.assert_allclose(c[0, 0], [85.0, 45.0, -20.0])
    np.testing.assert_allclose(c[1, 3], [115.0, 55.0, -20.0])
    assert g.pixel_spacing == (10.0, 10.0)
    assert g.shape == (2, 4)


def test_rotated_plane_pixel_centre():
    # read along y, phase along -x: pixel (ix=1, iy=0) of a 2 x 2 grid of 5 mm
    g = SliceGeometry([0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, 0, 1], [10, 10, 6], (2, 2))
    c = g.pixel_centres()
    # offsets: read (1.5 - 1) * 5 = 2.5, phase (0.5 - 1) * 5 = -2.5 -> 2.5*(0,1,0) - 2.5*(-1,0,0)
    np.testing.assert_allclose(c[0, 1], [2.5, 2.5, 0.0])


def test_to_pixel_inverts_pixel_centres_for_oblique_plane():
    g = plane_from_normal([12.0, -30.0, 55.0], [0.3, -0.5, 0.8], (280.0, 230.0, 8.0), (256, 208), 17.0)
    c = g.pixel_centres()
    ix, iy, dz = g.to_pixel(c)
    np.testing.assert_allclose(ix, np.broadcast_to(np.arange(256), (208, 256)), atol=1e-9)
    np.testing.assert_allclose(iy, np.broadcast_to(np.arange(208)[:, None], (208, 256)), atol=1e-9)
    np.testing.assert_allclose(dz, 0.0, atol=1e-9)


def test_header_round_trip_field_by_field():
    g = plane_from_normal([1.5, 2.5, -3.0], [0.1, 0.2, 0.97], (300.0, 225.0, 8.0), (192, 144), 33.0)
    head = ismrmrd.ImageHeader()
    g.to_header(head)
    back = SliceGeometry.from_header(head)
    np.testing.assert_allclose(back.position, g.position, atol=1e-5)
    np.testing.assert_allclose(back.read_dir, g.read_dir, atol=1e-6)
    np.testing.assert_allclose(back.phase_dir, g.phase_dir, atol=1e-6)
    np.testing.assert_allclose(back.fov, g.fov, atol=1e-5)
    assert back.matrix == (192, 144)


def test_compare_cosine_distance_offset():
    a = axial()
    # tilted by 30 degrees about x, centre moved 3 mm through plane and 4 mm in plane
    t = np.deg2rad(30)
    b = SliceGeometry([4.0, 0.0, 3.0], [1, 0, 0], [0, np.cos(t), np.sin(t)], [0, -np.sin(t), np.cos(t)], [40, 20, 8], (4, 2))
    m = a.compare(b)
    assert m.cosine == pytest.approx(np.cos(t))
    # distance from a's plane: 3; from b's plane: |(4,0,3).(0,-sin,cos)| = 3 cos30; mean of the two
    assert m.distance_mm == pytest.approx(0.5 * (3 + 3 * np.cos(t)))
    assert m.in_plane_offset_mm == pytest.approx(4.0)
    assert not m.accepted()  # cos 30 deg = 0.866 < 0.9


def test_compare_ignores_normal_sign_and_accepts_close_planes():
    a = axial()
    b = SliceGeometry([0, 0, 3.5], [0, 1, 0], [1, 0, 0], [0, 0, -1], [40, 20, 8], (2, 4))  # swapped read/phase
    m = a.compare(b)
    assert m.cosine == pytest.approx(1.0)
    assert m.distance_mm == pytest.approx(3.5)
    assert m.accepted()
    assert not a.compare(SliceGeometry([0, 0, 4.0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [40, 20, 8], (4, 2))).accepted()


def test_resample_identity_and_shift():
    src = axial(fov=(40, 20, 8), matrix=(4, 2))
    img = np.arange(8, dtype=np.float32).reshape(2, 4)
    same = src.resample_from(img, src)
    np.testing.assert_allclose(same.data, img)
    assert not same.outside.any()
    # target centres at x = -10, 0, 10 mm fall half-way between source centres -15, -5, 5, 15
    dst = axial(position=(0.0, 0.0, 0.0), fov=(30, 20, 8), matrix=(3, 2))
    out = dst.resample_from(img, src)
    np.testing.assert_allclose(out.data, [[0.5, 1.5, 2.5], [4.5, 5.5, 6.5]])
    assert not out.outside.any()
    # a centre at x = 17 mm lies within the last source pixel but beyond its centre: clamped, not outside
    edge = axial(position=(17.0, 0.0, 0.0), fov=(2, 20, 8), matrix=(1, 2))
    out = edge.resample_from(img, src)
    np.testing.assert_allclose(out.data[:, 0], [3.0, 7.0])
    assert not out.outside.any()


def test_resample_swapped_read_phase_transposes():
    src = axial(fov=(40, 20, 8), matrix=(4, 2))
    img = np.arange(8, dtype=np.float64).reshape(2, 4)
    dst = SliceGeometry([0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, -1], [20, 40, 8], (2, 4))
    out = dst.resample_from(img, src)
    np.testing.assert_allclose(out.data, img.T)


def test_resample_non_square_finer_grid_and_outside_report():
    src = axial(fov=(40, 20, 8), matrix=(4, 2))  # 10 mm pixels
    img = np.tile(np.array([0.0, 10.0, 20.0, 30.0]), (2, 1))  # value = 1 per mm along x, 0 at x = -15
    dst = axial(fov=(60, 10, 8), matrix=(12, 1))  # 5 mm pixels, wider than the source
    out = dst.resample_from(img, src)
    x = (np.arange(12) + 0.5) * 5 - 30  # target pixel centres along x
    inside = (x >= -20) & (x <= 20)
    np.testing.assert_array_equal(out.outside[0], ~inside)
    expected = np.clip(x + 15, 0, 30)
    np.testing.assert_allclose(out.data[0][inside], expected[inside])
    assert np.all(out.data[0][~inside] == 0)
    assert out.outside_fraction == pytest.approx(np.mean(~inside))


def test_resample_rotated_grid_matches_analytic_field():
    # a linear field f(p) = 2 x - y + 0.5 sampled on an oblique grid, resampled onto a rotated one
    src = plane_from_normal([0, 0, 0], [0, 0, 1], (200.0, 180.0, 8.0), (100, 90), 0.0)
    dst = plane_from_normal([3.0, -4.0, 0], [0, 0, 1], (120.0, 100.0, 8.0), (96, 80), 37.0)
    p = src.pixel_centres()
    f = 2 * p[..., 0] - p[..., 1] + 0.5
    out = dst.resample_from(f, src)
    q = dst.pixel_centres()
    assert not out.outside.any()
    np.testing.assert_allclose(out.data, 2 * q[..., 0] - q[..., 1] + 0.5, atol=1e-6)


def test_resample_multiframe_and_shape_errors():
    src = axial()
    frames = np.stack([np.full((2, 4), k, dtype=np.float32) for k in range(3)])
    out = src.resample_from(frames, src)
    assert out.data.shape == (3, 2, 4)
    np.testing.assert_allclose(out.data[:, 0, 0], [0, 1, 2])
    with pytest.raises(ValueError, match="does not match"):
        src.resample_from(np.zeros((4, 2)), src)


def test_invalid_geometry_rejected():
    with pytest.raises(ValueError):
        SliceGeometry([0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1], [10, 10, 8], (2, 2))
    with pytest.raises(ValueError):
        SliceGeometry([0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1], [10, 10, 8], (2, 2))
    with pytest.raises(ValueError):
        SliceGeometry([np.nan, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [10, 10, 8], (2, 2))
