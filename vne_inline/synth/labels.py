"""Anatomical labels of the synthetic anatomy and the tissue each is made of."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Label", "LABEL_TISSUE", "N_LABELS"]


class Label(IntEnum):
    """Partial-volume classes returned by the anatomy (index into the last axis of fraction arrays)."""

    AIR = 0
    LUNG = 1
    MUSCLE = 2  # chest wall, back, diaphragm, posterior mediastinum
    FAT = 3  # subcutaneous, epicardial, pericardial
    LIVER = 4
    ABDOMEN = 5  # left upper abdomen (spleen, stomach wall)
    MARROW = 6  # vertebral body
    CSF = 7  # spinal canal
    BLOOD = 8  # RV, atria, aorta, lung vessels
    LV_BLOOD = 9
    LV_MYO = 10
    PAPILLARY = 11  # papillary muscles and trabeculae in the LV cavity
    OTHER_MYO = 12  # RV free wall and atrial walls


N_LABELS = len(Label)

#: The tissue (a key of `physics.tissue.tissue_table`) each label is made of.
LABEL_TISSUE: dict[Label, str] = {
    Label.AIR: "air",
    Label.LUNG: "lung",
    Label.MUSCLE: "muscle",
    Label.FAT: "fat",
    Label.LIVER: "liver",
    Label.ABDOMEN: "spleen",
    Label.MARROW: "marrow",
    Label.CSF: "csf",
    Label.BLOOD: "blood",
    Label.LV_BLOOD: "blood",
    Label.LV_MYO: "myocardium",
    Label.PAPILLARY: "myocardium",
    Label.OTHER_MYO: "myocardium",
}
