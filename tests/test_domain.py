"""Input-domain check (core.domain), its use by the inline core, and the VNE without cine."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from test_pipeline import (
    PATIENT_ID,
    STUDY_UID,
    TIS,
    FakeBackend,
    make_core,
    run_connection,
    t1_records,
    vnes,
)

from vne_inline.core.domain import TrainingDomain, build_domain, check_domain, slice_statistics
from vne_inline.core.pipeline import CoreConfig
from vne_inline.io import ExamHeader, make_header_xml

STATS_15 = {"t1_median_ms": 1000.0, "t1_p90_ms": 1500.0, "ir_mean": 0.4}


def _domain(fields=(1.5,), n_ir=(7,)) -> TrainingDomain:
    samples = [(f, k, "shmolli", {n: v * (1 + 0.05 * j) * (1.2 if f == 3.0 else 1.0) for n, v in STATS_15.items()})
               for f in fields for k in n_ir for j in range(-2, 3)]
    return build_domain(samples)


def test_a_field_the_model_never_saw_fails():
    check = check_domain(_domain(), 3.0, 7, STATS_15)
    assert check.status == "fail" and "field strength 3 T outside the training domain (1.5 T)" in check.reason
    assert check_domain(_domain((1.5, 3.0)), 3.0, 7, {k: 1.2 * v for k, v in STATS_15.items()}).status == "pass"


def test_counts_ranges_and_missing_descriptions():
    d = _domain()
    assert check_domain(d, 1.5, 7, STATS_15).status == "pass"
    assert check_domain(d, 1.5, 7, STATS_15).reason == "inputs within the training domain"
    unseen = check_domain(d, 1.5, 11, STATS_15)
    assert unseen.status == "warn" and "11 IR images: trained on 7" in unseen.reason
    assert check_domain(d, 1.5, 4, STATS_15).status == "fail"
    lo, hi = d.ranges["1.5"]["t1_p90_ms"]
    assert check_domain(d, 1.5, 7, STATS_15 | {"t1_p90_ms": hi + 0.1 * (hi - lo)}).status == "warn"
    assert check_domain(d, 1.5, 7, STATS_15 | {"t1_p90_ms": hi + 2.0 * (hi - lo)}).status == "fail"
    assert check_domain(d, 1.5, 7, STATS_15 | {"t1_p90_ms": math.nan}).status == "pass"  # undefined: not judged
    assert check_domain(d, 1.5, 7, STATS_15 | {"ir_mean": 10.0}).status == "warn"  # intensities only warn
    assert check_domain(None, 1.5, 7, STATS_15).status == "warn"
    unknown = check_domain(d, None, 7, {k: 1.3 * v for k, v in STATS_15.items()})
    assert unknown.status == "warn" and "field strength unknown" in unknown.reason
    assert TrainingDomain.from_json(d.to_json()) == d
    with pytest.raises(ValueError, match="no training slices"):
        build_domain([])


def test_slice_statistics_use_the_central_disc():
    t1 = np.full((100, 120), 960.0)
    t1[30:70, 40:80] = 1600.0
    t1[:, :5] = 4000.0  # outside the disc and the window
    stats = slice_statistics(t1, np.full((7, 100, 120), 0.5), (1.2, 1.2))
    assert stats["t1_median_ms"] == 960.0 and stats["t1_p90_ms"] == 1600.0 and stats["ir_mean"] == pytest.approx(0.5)
    assert all(math.isnan(v) for v in slice_statistics(np.zeros((20, 20)), np.zeros((7, 20, 20)), (1.0, 1.0)).values())


def _t1_header(field_t: float) -> str:
    return make_header_xml(ExamHeader(study_uid=STUDY_UID, field_strength_t=field_t), PATIENT_ID, (50, 40),
                           (200.0, 160.0, 8.0), n_sets=len(TIS))


def _backend_with_domain(domain: TrainingDomain) -> FakeBackend:
    backend = FakeBackend()
    return replace(backend, config=replace(backend.config, domain=domain.to_json()))


def test_a_3t_exam_given_to_a_1p5t_model_is_flagged(tmp_path):
    n_ir = len(TIS)
    domain = _domain(n_ir=(n_ir,))
    core = make_core(tmp_path, backend=_backend_with_domain(domain), vne_without_cine=True)
    records = t1_records()
    out, session = run_connection(core, _t1_header(3.0), records)
    assert not vnes(out) and [r for r in out if r.series_index != 99] == records  # inputs still pass
    assert all(not r.made and "VNE withheld: QC fail" in r.reason and "3 T" in r.reason for r in session.reports)

    tagged = make_core(tmp_path / "b", backend=_backend_with_domain(domain), vne_without_cine=True, qc_withhold="never")
    out, session = run_connection(tagged, _t1_header(3.0), t1_records())
    made = vnes(out)
    assert len(made) == 2 and {v.meta_str("VNE_QC") for v in made} == {"fail"}
    assert all("field strength 3 T" in v.meta_str("VNE_QC_Reason") and "QC fail" in v.meta_str("ImageComment") for v in made)


def test_vne_without_cine_is_made_and_tagged(tmp_path):
    core = make_core(tmp_path, vne_without_cine=True)
    out, session = run_connection(core, _t1_header(1.5), t1_records())
    made = vnes(out)
    assert [v.slice for v in made] == [0, 1] and all(r.made and "without cine" in r.reason for r in session.reports)
    assert {v.meta_str("VNE_Inputs") for v in made} == {"IR+T1"}
    assert all("[no cine]" in v.meta_str("GADGETRON_ImageComment") for v in made)
    # off (the default): the slices wait for their cine
    out, session = run_connection(make_core(tmp_path / "off"), _t1_header(1.5), t1_records())
    assert not vnes(out) and all("no cine match" in r.reason for r in session.reports)


def test_properties_parse_the_new_switches():
    c = CoreConfig.from_properties({"vne_without_cine": "true", "qc_withhold": "warn"})
    assert c.vne_without_cine is True and c.qc_withhold == "warn"
    with pytest.raises(ValueError, match="qc_withhold"):
        CoreConfig.from_properties({"qc_withhold": "sometimes"})
    with pytest.raises(ValueError, match="vne_without_cine"):
        CoreConfig.from_properties({"vne_without_cine": "maybe"})
