"""Figures: `show` draws every series of a file (the VNE and unrecognised series included); the demo
figure names its outlines in a legend and has a T1 colour bar."""

from __future__ import annotations

import numpy as np
from test_pipeline import CINE_HEADER, T1_HEADER, VNE_SERIES, FakeBackend, cine_records, make_core, t1_records

from vne_inline.adapters.replay import replay_files, write_outputs
from vne_inline.io.mrd_file import write_file
from vne_inline.io.records import ImageRecord
from vne_inline.viz.demo_figure import DemoSlice, figure
from vne_inline.viz.montage import file_panels, show


def test_show_draws_every_series_of_a_replay_output(tmp_path):
    cine, t1 = tmp_path / "cine.h5", tmp_path / "t1map.h5"
    write_file(cine, CINE_HEADER, cine_records())
    write_file(t1, T1_HEADER, t1_records())
    out = tmp_path / "replay.h5"
    write_outputs(out, replay_files(make_core(tmp_path, FakeBackend()), [cine, t1]))
    extra = tmp_path / "with-phase.h5"
    g = t1_records()[0].geometry
    phase = ImageRecord.new(np.ones(g.shape, np.float32), g, {"GADGETRON_DataRole": "Phase"}, image_series_index=7)
    write_file(extra, T1_HEADER, [*t1_records(), phase])
    titles = [p.title for row in file_panels(out)[0] for p in row]
    assert [t for t in titles if t.startswith("VNE")] == [f"VNE slice {k} (series {VNE_SERIES})" for k in (0, 1)]
    assert "series 7: slice 0, phase 0, set 0" in [p.title for row in file_panels(extra)[0] for p in row]
    assert show(out, tmp_path / "replay.png").stat().st_size > 0


def test_demo_figure_has_a_legend_and_a_t1_colour_bar():
    import matplotlib.pyplot as plt

    yy, xx = np.mgrid[:40, :40]
    ring = (np.hypot(yy - 20, xx - 20) > 8) & (np.hypot(yy - 20, xx - 20) < 14)
    s = DemoSlice(0, np.where(ring, 960.0, 1500.0), ring.astype(np.float32), None,
                  {"myocardium": ring, "lesion_hyperintense": ring & (xx > 25), "lesion_intermediate": ring & (xx < 15)})
    fig = figure([s], "demo")
    try:
        labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        assert labels == ["LV myocardium", "hyperintense lesion", "intermediate lesion"]
        assert any(ax.get_ylabel() == "T1 (ms)" for ax in fig.axes)
    finally:
        plt.close(fig)
