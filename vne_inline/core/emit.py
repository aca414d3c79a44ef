"""Build the emitted VNE image from a network output and the T1 map it belongs to (design §3).

* Header: a fresh ``ismrmrd.ImageHeader`` whose fields are copied one by one from the T1 map's
  header (geometry, slice/phase/set indices, time stamps, user fields, ...), never via
  ``Image.setHead`` (which casts and resizes). Then ``image_type = MAGNITUDE``, the configured
  ``image_series_index``, one channel, one partition, ``data_type = FLOAT``.
* Data: float32 ``(1, 1, H, W)`` on the T1 map's grid from :func:`core.normalise.to_vne` (blood about
  :data:`~vne_inline.core.normalise.VNE_SCALE`, normal myocardium near 0, no negative values).
  Float32 keeps the values exact for quantification; Gadgetron chains that need unsigned shorts for
  the console convert downstream (e.g. ``FloatToUShortGadget``), the values fit that range.
* Meta: fresh (nothing of the T1 map's colour map or scale ratio is inherited):
  ``GADGETRON_DataRole=VNE``, ``GADGETRON_SeqDescription`` = the map's + ``_VNE``,
  ``GADGETRON_ImageProcessingHistory`` = the map's + ``VNE``, ``GADGETRON_ImageComment`` naming VNE
  and the model, ``GADGETRON_WindowCenter/Width``; for MRD/FIRE clients ``DataRole``,
  ``ImageComment``, ``SequenceDescriptionAdditional``, ``WindowCenter``, ``WindowWidth`` and
  ``Keep_image_geometry=1`` (FIRE keeps the header geometry as sent).
"""

from __future__ import annotations

import ctypes

import ismrmrd
import numpy as np

from vne_inline.core.normalise import VNE_SCALE, to_vne
from vne_inline.io.records import ImageRecord, MetaValue
from vne_inline.modelspec import ModelConfig

__all__ = ["vne_record", "derived_header", "model_comment", "WINDOW_CENTER", "WINDOW_WIDTH", "COPIED_FIELDS"]

#: Display window of the VNE image: 0 (nulled myocardium) to VNE_SCALE (blood pool).
WINDOW_CENTER = 0.5 * VNE_SCALE
WINDOW_WIDTH = VNE_SCALE

#: Header fields set here rather than copied from the T1 map.
_SET_FIELDS = {"data_type", "channels", "matrix_size", "image_type", "image_series_index", "attribute_string_len"}
#: Header fields copied from the T1 map, in header order.
COPIED_FIELDS = tuple(name for name, _ in ismrmrd.ImageHeader._fields_ if name not in _SET_FIELDS)


def model_comment(model: ModelConfig) -> str:
    """Image comment naming VNE and the model; synthetic-trained weights are labelled not for clinical use."""
    comment = f"VNE {model.name}"
    if model.trained_on == "synthetic":
        comment += " (synthetic-trained, not for clinical use)"
    return comment


def _copy_field(dst: ismrmrd.ImageHeader, src: ismrmrd.ImageHeader, name: str) -> None:
    value = getattr(src, name)
    if isinstance(value, ctypes.Array):
        target = getattr(dst, name)
        for i in range(len(value)):
            target[i] = value[i]
    else:
        setattr(dst, name, value)


def derived_header(t1_head: ismrmrd.ImageHeader, shape: tuple[int, int], series_index: int) -> ismrmrd.ImageHeader:
    """A new float magnitude image header on `t1_head`'s slice (fields copied one by one), own series."""
    head = ismrmrd.ImageHeader()
    for name in COPIED_FIELDS:
        _copy_field(head, t1_head, name)
    head.matrix_size[0], head.matrix_size[1], head.matrix_size[2] = shape[1], shape[0], 1
    head.channels = 1
    head.data_type = ismrmrd.DATATYPE_FLOAT
    head.image_type = ismrmrd.IMTYPE_MAGNITUDE
    head.image_series_index = series_index
    return head


def _as_list(value: MetaValue | None) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _vne_meta(t1_map: ImageRecord, comment: str) -> dict[str, MetaValue]:
    description = t1_map.meta_str("GADGETRON_SeqDescription") or t1_map.meta_str("SequenceDescription") or "T1MAP"
    history = _as_list(t1_map.meta.get("GADGETRON_ImageProcessingHistory")) + ["VNE"]
    center, width = f"{WINDOW_CENTER:g}", f"{WINDOW_WIDTH:g}"
    return {
        "GADGETRON_DataRole": "VNE",
        "GADGETRON_SeqDescription": f"{description}_VNE",
        "GADGETRON_ImageProcessingHistory": history if len(history) > 1 else history[0],
        "GADGETRON_ImageComment": comment,
        "GADGETRON_WindowCenter": center,
        "GADGETRON_WindowWidth": width,
        "DataRole": "VNE",
        "ImageComment": comment,
        "SequenceDescriptionAdditional": "VNE",
        "WindowCenter": center,
        "WindowWidth": width,
        "Keep_image_geometry": "1",
    }


def vne_record(t1_map: ImageRecord, output: np.ndarray, series_index: int, model: ModelConfig,
               notes: dict[str, str] | None = None, comment_notes: tuple[str, ...] = ()) -> ImageRecord:
    """The VNE image for `t1_map` from the network `output` (H, W) in normalised units (ValueError if the
    shape is not the map's). `notes`: extra meta (e.g. ``VNE_QC``); `comment_notes` are appended to the
    image comment in brackets (e.g. that the VNE was made without cine)."""
    output = np.asarray(output)
    shape = t1_map.geometry.shape
    if output.shape != shape:
        raise ValueError(f"network output shape {output.shape} does not match the T1 map's grid {shape}")
    data = to_vne(output)[None, None]
    head = derived_header(t1_map.head, shape, series_index)
    comment = " ".join([model_comment(model), *(f"[{n}]" for n in comment_notes)])
    return ImageRecord(data=data, head=head, meta={**_vne_meta(t1_map, comment), **(notes or {})})
