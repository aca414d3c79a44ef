"""T1 maps fitted inline when the scanner sends none: the map series, the VNE made with it, the
reports; and a synthetic exam replayed without its maps against the replay with them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_pipeline import (  # the shared exam builders
    CINE_HEADER,
    T1_HEADER,
    TIS,
    cine_records,
    make_core,
    run_connection,
    t1_records,
    vnes,
)

from vne_inline.core.pipeline import CoreConfig, InlineCore
from vne_inline.core.roles import Role, classify
from vne_inline.core.t1_fit import DEFAULT_T1_SERIES, fit_slice
from vne_inline.io.records import ImageRecord

MAP_SERIES = 3


def _ir_only():
    return [r for r in t1_records() if r.series_index != MAP_SERIES]


def _fitted(out):
    return [r for r in out if r.series_index == DEFAULT_T1_SERIES]


def test_no_map_from_the_scanner_fits_one_at_close_and_makes_the_vne(tmp_path):
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records())
    ir = _ir_only()
    session = core.open_session(T1_HEADER)
    during = [o for r in ir for o in session.feed(r)]
    assert during == ir  # waiting for the scanner's map: nothing fitted yet
    closing = session.close()
    maps = _fitted(closing)
    assert len(maps) == 2 and len(vnes(closing)) == 2
    for m in maps:
        assert classify(m) is Role.T1MAP
        assert m.meta["DataRole"] == "T1" and "fitted by vne-inline" in m.meta["ImageComments"]
        assert "three-parameter fit with Look-Locker correction" in m.meta["GADGETRON_ImageComment"]
        inside = m.pixels > 0
        # the hand-made images are |1 - 2 exp(-TI/T1)| of a 1500 ms disc in 960 ms tissue
        assert np.median(m.pixels[inside]) == pytest.approx(960.0, rel=0.01)
        assert np.max(m.pixels) == pytest.approx(1500.0, rel=0.01)
    assert [r.made for r in session.reports] == [True, True]
    assert all(r.t1_fit_ms is not None and "T1 map fitted from the IR images in" in r.line() for r in session.reports)


def test_scanner_without_maps_fits_each_slice_as_it_completes(tmp_path):
    core = make_core(tmp_path, t1_maps="fit")
    run_connection(core, CINE_HEADER, cine_records())
    session = core.open_session(T1_HEADER)
    ir = _ir_only()
    outs = [session.feed(r) for r in ir]
    assert [len(o) for o in outs] == [1] * (len(TIS) - 1) + [3] + [1] * (len(TIS) - 1) + [3]
    assert [o.series_index for o in outs[len(TIS) - 1]] == [2, DEFAULT_T1_SERIES, 99]
    assert session.close() == []


def test_maps_from_the_scanner_are_used_and_none_is_fitted(tmp_path):
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records())
    out, session = run_connection(core, T1_HEADER, t1_records())
    assert not _fitted(out) and len(vnes(out)) == 2
    assert all(r.t1_fit_ms is None for r in session.reports)


def test_fitting_off_or_impossible_says_why(tmp_path):
    core = make_core(tmp_path, t1_maps="off")
    ir = _ir_only()
    out, session = run_connection(core, T1_HEADER, ir)
    assert len(out) == len(ir) and all(a is b for a, b in zip(out, ir, strict=True))
    assert any("no T1 map" in r.reason for r in session.reports)
    core = make_core(tmp_path / "b")
    two = [r for r in _ir_only() if r.slice == 0][:2]
    out, session = run_connection(core, T1_HEADER, two)
    assert len(out) == 2 and "need >= 3" in session.reports[0].reason
    with pytest.raises(ValueError, match="t1_maps"):
        CoreConfig.from_properties({"t1_maps": "sometimes"})
    with pytest.raises(ValueError, match="t1_scheme"):
        CoreConfig.from_properties({"t1_scheme": "molli-9"})
    assert CoreConfig.from_properties({"t1_maps": "FIT", "t1_scheme": "shmolli"}).t1_scheme == "shmolli"


def test_fit_slice_errors():
    ir = _ir_only()[:3]
    no_ti = [replace(ir[0], meta={}), *ir[1:]]
    with pytest.raises(ValueError, match="no inversion time"):
        fit_slice(no_ti)
    blank = [replace(r, data=np.zeros_like(r.data)) for r in ir]
    with pytest.raises(ValueError, match="no pixel"):
        fit_slice(blank)


# ---------------------------------------------------------------------------- a synthetic exam
#: Largest burden difference (points) between the replays without and with the exam's maps. MOLLI: the
#: synthetic scanner's map is the same standard fit. ShMOLLI: the synthetic scanner fits its own
#: two-parameter model with the readout rate it knows; the inline fit estimates that rate from the slice
#: (docs/t1-mapping.md).
BURDEN_TOLERANCE = {"molli-533": 1.0, "shmolli": 1.0}


@pytest.fixture(scope="module", params=sorted(BURDEN_TOLERANCE))
def exam(request, tmp_path_factory):
    from vne_inline.io.mrd_file import read_file, write_file
    from vne_inline.synth.exam import generate_patient

    root = tmp_path_factory.mktemp("t1fit-exam")
    directory = generate_patient(root, seed=0, index=1, t1_scheme=request.param).directory
    t1 = read_file(directory / "t1map.h5")
    write_file(directory / "t1_ir_only.h5", t1.header_xml,
               [r for r in t1.records() if classify(r) is not Role.T1MAP])
    return request.param, directory


def _replay_burdens(directory, t1_file, store):
    from vne_inline.adapters.replay import replay_files
    from vne_inline.quantify import burdens, patient_burden
    from vne_inline.synth.truth import read_truth
    from vne_inline.validate.evaluate import LGE_FRACTIONS

    core = InlineCore(CoreConfig(store_dir=store, backend="onnxruntime", threads=2))
    results = replay_files(core, [directory / "cine.h5", directory / t1_file])
    made = sorted(vnes(results[1].outputs), key=lambda r: r.slice)
    truth = {t.slice: t for t in read_truth(directory / "truth.h5")}
    per_slice = []
    for v in made:
        t = truth[v.slice]
        dy, dx = v.geometry.pixel_spacing
        per_slice.append(burdens(v.pixels, t.myocardium, t.remote, t.blood, LGE_FRACTIONS, dx * dy))
    return results[1], {name: patient_burden([s[name] for s in per_slice]) for name in LGE_FRACTIONS}, made


@pytest.mark.slow
def test_replay_without_maps_matches_the_replay_with_them(exam, tmp_path):
    scheme, directory = exam
    with_maps, burden_scanner, vne_scanner = _replay_burdens(directory, "t1map.h5", tmp_path / "a")
    without, burden_fitted, vne_fitted = _replay_burdens(directory, "t1_ir_only.h5", tmp_path / "b")
    assert len(vne_scanner) == 3 and len(vne_fitted) == 3
    fitted_maps = _fitted(without.outputs)
    assert len(fitted_maps) == 3 and all(r.t1_fit_ms is not None for r in without.reports)
    expected = "recovery-model fit with Look-Locker correction, readout rate" if scheme == "shmolli" else "three-parameter fit with"
    assert all(m.meta["ImageComments"].startswith(f"T1 map fitted by vne-inline: {expected}") for m in fitted_maps)
    for name in burden_scanner:
        assert abs(burden_fitted[name] - burden_scanner[name]) <= BURDEN_TOLERANCE[scheme], (
            name, burden_fitted, burden_scanner)
    from vne_inline.io.mrd_file import read_file

    scanner_maps = sorted((r for r in read_file(directory / "t1map.h5").records() if classify(r) is Role.T1MAP),
                          key=lambda r: r.slice)
    for fitted, scanner in zip(sorted(fitted_maps, key=lambda r: r.slice), scanner_maps, strict=True):
        both = (fitted.pixels > 0) & (scanner.pixels > 0)
        assert both.mean() > 0.3
        assert np.median(np.abs(fitted.pixels[both] / scanner.pixels[both] - 1)) < 0.03


# ---------------------------------------------------------------------------- offline command
def test_cli_t1map_writes_maps_goodness_and_png(tmp_path):
    from typer.testing import CliRunner

    from vne_inline.cli.app import app
    from vne_inline.io.mrd_file import read_file, write_file

    source = tmp_path / "ir.h5"
    write_file(source, T1_HEADER, _ir_only())
    out = tmp_path / "t1.h5"
    result = CliRunner().invoke(app, ["t1map", str(source), "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "T1 maps of ir.h5" in result.output and "three-parameter fit" in result.output
    groups = read_file(out).groups
    assert sorted(groups) == ["image_1098", "image_2098", "image_98"]
    maps, r2, invalid = groups["image_98"], groups["image_1098"], groups["image_2098"]
    assert len(maps) == len(r2) == len(invalid) == 2
    for m, q, bad in zip(maps, r2, invalid, strict=True):
        assert classify(m) is Role.T1MAP and classify(q) is Role.OTHER and classify(bad) is Role.OTHER
        assert np.median(m.pixels[m.pixels > 0]) == pytest.approx(960.0, rel=0.01)
        assert np.all((q.pixels > 0.999) == (bad.pixels == 0))
    png = out.with_suffix(".png")
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a file without IR images: a clear error, exit 1, nothing written
    cine = tmp_path / "cine.h5"
    write_file(cine, CINE_HEADER, cine_records())
    result = CliRunner().invoke(app, ["t1map", str(cine), "--out", str(tmp_path / "none.h5")])
    assert result.exit_code == 1 and "no IR-weighted images" in result.output
    assert not (tmp_path / "none.h5").exists()
    result = CliRunner().invoke(app, ["t1map", str(source), "--out", str(out), "--scheme", "molli-9"])
    assert result.exit_code == 2 and "unknown T1 sampling scheme" in result.output


@pytest.mark.parametrize("siemens_scale", [False, True])
def test_phase_images_give_the_polarity(siemens_scale):
    import ismrmrd

    ir = [r for r in _ir_only() if r.slice == 0]
    phases = []
    for r in ir:
        ti = float(r.meta["GADGETRON_TI"])
        g = r.geometry
        radius = np.linalg.norm(g.pixel_centres() - g.position, axis=-1)
        t1 = np.where(radius < 40.0, 1500.0, 960.0)
        phase = 0.7 + np.where(1 - 2 * np.exp(-ti / t1) < 0, np.pi, 0.0)  # background phase 0.7 rad
        phase = np.angle(np.exp(1j * phase))
        data = (np.round(phase / np.pi * 2048 + 2048).astype(np.uint16) if siemens_scale
                else phase.astype(np.float32))
        phases.append(ImageRecord.new(data, g, {"GADGETRON_TI": f"{ti:g}"}, image_series_index=5, slice=0,
                                      image_type=ismrmrd.IMTYPE_PHASE))
    fitted = fit_slice(ir, phase_images=phases)
    assert "phase-sensitive" in fitted.fit.method
    inside = fitted.record.pixels > 0
    assert np.median(fitted.record.pixels[inside]) == pytest.approx(960.0, rel=0.01)
    assert "phase-sensitive" not in fit_slice(ir, phase_images=phases[:-1]).fit.method  # one missing
