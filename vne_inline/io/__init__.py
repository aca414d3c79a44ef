"""ISMRMRD image records, headers and HDF5 files (the I/O edge of the data flow)."""

from vne_inline.io.header import ExamHeader, make_header_xml, parse_header, study_key
from vne_inline.io.records import ImageRecord, meta_float, meta_str

__all__ = ["ExamHeader", "ImageRecord", "make_header_xml", "meta_float", "meta_str", "parse_header", "study_key"]
