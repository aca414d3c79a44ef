"""`ImageRecord`: one ISMRMRD image as a typed record (array, header, meta), lossless both ways."""

from __future__ import annotations

from dataclasses import dataclass, field

import ismrmrd
import numpy as np

from vne_inline.geometry import SliceGeometry

__all__ = ["ImageRecord", "meta_float", "meta_str"]

MetaValue = str | list[str]


def meta_str(meta: dict[str, MetaValue], key: str, default: str | None = None) -> str | None:
    """A meta value as one string (ismrmrd returns strings; a list is joined by '\\\\')."""
    v = meta.get(key)
    if v is None:
        return default
    return "\\".join(str(x) for x in v) if isinstance(v, list) else str(v)


def meta_float(meta: dict[str, MetaValue], key: str, default: float | None = None) -> float | None:
    """A numeric meta value (first element of a list), or `default` if absent or not a number."""
    v = meta.get(key)
    if isinstance(v, list):
        v = v[0] if v else None
    try:
        return float(v) if v is not None else default
    except (TypeError, ValueError):
        return default


@dataclass
class ImageRecord:
    """An ISMRMRD image: `data` (cha, z, y, x), the binary header and the meta attributes (strings)."""

    data: np.ndarray
    head: ismrmrd.ImageHeader
    meta: dict[str, MetaValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        if self.data.ndim != 4:
            raise ValueError(f"image data must be (cha, z, y, x), got shape {self.data.shape}")

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_ismrmrd(cls, image: ismrmrd.Image) -> ImageRecord:
        meta = {str(k): (list(v) if isinstance(v, list) else v) for k, v in image.meta.items()}
        return cls(data=np.array(image.data), head=image.getHead(), meta=meta)

    def to_ismrmrd(self) -> ismrmrd.Image:
        """An `ismrmrd.Image` with a copy of this header; data type, channels and matrix follow `data`."""
        image = ismrmrd.Image(head=self.head, data=np.ascontiguousarray(self.data))
        image.meta = ismrmrd.Meta({k: (list(v) if isinstance(v, list) else v) for k, v in self.meta.items()})
        return image

    @classmethod
    def new(
        cls,
        image: np.ndarray,
        geometry: SliceGeometry,
        meta: dict[str, MetaValue] | None = None,
        **head_fields: int,
    ) -> ImageRecord:
        """A fresh record from a 2-D (y, x) or (cha, z, y, x) array on `geometry`; `head_fields` set indices."""
        data = np.asarray(image)
        if data.ndim == 2:
            data = data[None, None]
        if data.shape[-2:] != geometry.shape:
            raise ValueError(f"image shape {data.shape[-2:]} does not match geometry {geometry.shape}")
        head = ismrmrd.ImageHeader()
        head.version = 1
        geometry.to_header(head)
        head.matrix_size[2] = data.shape[1]
        head.image_type = ismrmrd.IMTYPE_MAGNITUDE
        for k, v in head_fields.items():
            if not hasattr(head, k):
                raise AttributeError(f"ImageHeader has no field {k!r}")
            setattr(head, k, v)
        return cls(data=data, head=head, meta={k: (v if isinstance(v, list) else str(v)) for k, v in (meta or {}).items()})

    # ------------------------------------------------------------------ convenience
    @property
    def geometry(self) -> SliceGeometry:
        """The header's slice geometry (kept while the header's geometry fields stay the same)."""
        h = self.head
        key = (*h.position, *h.read_dir, *h.phase_dir, *h.slice_dir, *h.field_of_view, h.matrix_size[0], h.matrix_size[1])
        cached = self.__dict__.get("_geometry")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_geometry"] = (key, SliceGeometry.from_header(h))
        return cached[1]

    @property
    def pixels(self) -> np.ndarray:
        """The first channel and partition as a 2-D (y, x) array."""
        return self.data[0, 0]

    @property
    def series_index(self) -> int:
        return int(self.head.image_series_index)

    @property
    def slice(self) -> int:
        return int(self.head.slice)

    @property
    def phase(self) -> int:
        return int(self.head.phase)

    @property
    def set(self) -> int:
        return int(self.head.set)

    @property
    def image_type(self) -> int:
        return int(self.head.image_type)

    def meta_str(self, key: str, default: str | None = None) -> str | None:
        return meta_str(self.meta, key, default)

    def meta_float(self, key: str, default: float | None = None) -> float | None:
        return meta_float(self.meta, key, default)
