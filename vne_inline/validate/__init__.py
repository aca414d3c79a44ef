"""Validation of VNE against LGE: run the inline core on exam folders, quantify lesion burden,
compare with the field's statistics and write a report with figures.

``evaluate`` (per patient and slice) -> ``summary`` (cohort statistics from ``stats``) -> ``report``
(markdown, CSV, ``figures``). ROIs come from synthetic truth or from contour files (``contours``).
"""
