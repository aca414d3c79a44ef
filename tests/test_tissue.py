"""Tissue constants, contrast kinetics and the sequence signal models (fast, no exam generation)."""

from __future__ import annotations

import numpy as np
import pytest

from vne_inline.physics import tissue
from vne_inline.synth.contrast import COMPONENTS, bssfp_signal, build_components, null_ti_ms, psir_signal
from vne_inline.synth.fields import Edge
from vne_inline.synth.heart import contraction, diastasis_phase
from vne_inline.synth.patient import draw_patient


def test_tissue_table_values_and_field():
    t15, t3 = tissue.tissue_table(1.5), tissue.tissue_table(3.0)
    assert t15["myocardium"].t1_ms == pytest.approx(962.0)
    assert t15["fat"].t1_ms == pytest.approx(260.0)
    for name in ("myocardium", "blood", "liver", "muscle", "fat"):
        assert t3[name].t1_ms > t15[name].t1_ms
    with pytest.raises(ValueError):
        tissue.tissue_table(7.0)


def test_blood_t1_follows_hematocrit():
    assert tissue.blood_t1_ms(0.42) == pytest.approx(1500.0)
    assert tissue.blood_t1_ms(0.36) > tissue.blood_t1_ms(0.48)
    assert tissue.blood_t1_ms(0.42, 3.0) > 1700.0


def test_post_contrast_kinetics():
    hct = 0.42
    dr1 = tissue.blood_dr1_per_ms(1500.0, 330.0)
    blood = tissue.post_contrast_t1_ms(1500.0, 1 - hct, hct, dr1)
    assert blood == pytest.approx(330.0)
    myo = tissue.post_contrast_t1_ms(962.0, 0.25, hct, dr1)
    scar = tissue.post_contrast_t1_ms(1150.0, 0.55, hct, dr1)
    assert 430.0 < myo < 530.0 and scar < myo


def test_lesion_native_t1_by_grade():
    c = build_components(draw_patient(0, 2, 1.5))
    idx = {n: i for i, n in enumerate(COMPONENTS)}
    remote = c.t1_ms[idx["myocardium"]]
    assert 50.0 <= c.t1_ms[idx["myo_intermediate"]] - remote < c.t1_ms[idx["myo_hyperintense"]] - remote <= 250.0
    assert c.ecv[idx["myo_hyperintense"]] > c.ecv[idx["myo_intermediate"]] > c.ecv[idx["myocardium"]]


def test_native_t1_rise_follows_the_ecv_rise():
    assert tissue.t1_elevation_ms(0.35, 0.25) == pytest.approx(70.0)
    assert tissue.t1_elevation_ms(0.52, 0.25, 1.1) == pytest.approx(700.0 * 0.27 * 1.1)
    assert tissue.t1_elevation_ms(0.27, 0.25) == 50.0 and tissue.t1_elevation_ms(0.70, 0.22) == 250.0
    rises, elevations = [], []
    for index in range(40):
        t = draw_patient(11, index).tissue
        for ecv, elevation in ((t.ecv_intermediate, t.t1_elevation_intermediate_ms),
                               (t.ecv_hyperintense, t.t1_elevation_hyperintense_ms)):
            rises.append(ecv - t.ecv_remote)
            elevations.append(elevation)
    # native T1 carries the LGE's ECV information: the two agree closely across patients and grades
    assert np.corrcoef(rises, elevations)[0, 1] > 0.95
    assert 50.0 <= min(elevations) and max(elevations) <= 250.0


def test_contrast_of_the_three_sequences():
    c = build_components(draw_patient(0, 0, 1.5))
    idx = {n: i for i, n in enumerate(COMPONENTS)}
    cine = bssfp_signal(c)
    assert 1.6 < cine[idx["blood"]] / cine[idx["myocardium"]] < 2.6  # blood about twice myocardium
    assert cine[idx["fat"]] > cine[idx["myocardium"]] and cine[idx["lung"]] < 0.2 * cine[idx["myocardium"]]
    cycle = 2 * 900.0
    ti = null_ti_ms(float(c.t1_post_ms[idx["myocardium"]]), cycle)
    assert 0.6 < ti / c.t1_post_ms[idx["myocardium"]] < 0.72  # about T1 ln 2
    lge = psir_signal(c, ti, cycle)
    assert abs(lge[idx["myocardium"]]) < 1e-6
    assert lge[idx["myo_hyperintense"]] > lge[idx["myo_intermediate"]] > 0 and lge[idx["blood"]] > 0
    assert psir_signal(c, ti - 60.0, cycle)[idx["myocardium"]] < 0  # sign kept


def test_cardiac_cycle():
    rr = 900.0
    c = np.array([contraction(p, rr) for p in np.linspace(0, 1, 91)])
    assert c[0] == pytest.approx(0.0) and c[-1] == pytest.approx(0.0, abs=1e-9)
    assert c.max() == pytest.approx(1.0, abs=0.01) and np.all((c >= 0) & (c <= 1))
    assert 0.1 < contraction(diastasis_phase(rr), rr) < 0.25


def test_edge_widens_with_through_plane_slope():
    # two points seen by three sub-slices (sub-slice major): one crosses an oblique surface, one does not
    d = np.array([[-1.0, 0.2], [3.0, 0.2], [7.0, 0.2]], dtype=np.float32).reshape(-1)
    wide, flat = Edge(1.0, 3).cover(d), Edge(1.0, 1).cover(d)
    assert flat[0] == 0.0 and 0.2 < wide[0] < 0.3  # 4 mm per sub-slice widens the ramp to sqrt(17) mm
    assert wide[1] == pytest.approx(flat[1]) == pytest.approx(0.7)
