"""The paper's ablation numbers (PASCAL VOC 2012 val mIoU, %), the side column of every ablation report.

Source: SPEC §9 and the paper's Tables 4 and 5 (Ru et al., CVPR 2023). ``None`` is a cell the paper leaves empty
("–"): the head is not trained in that row, or the value is not given. Columns: ``M`` = CAM of the final layer
(pseudo-label quality), ``M^m`` = auxiliary CAM of the intermediate block, ``Seg`` = the segmentation branch.
These are reference values for a ViT-B on VOC; a sweep on other data (e.g. the synthetic set) is not comparable
to them, and the report says so.
"""

from __future__ import annotations

COLUMNS = ("M", "M^m", "Seg")

# Each table: row label → {column: mIoU %}. Row labels are what a search space's ``paper.rows`` map to.
TABLES: dict[str, dict[str, dict[str, float | None]]] = {
    # Table 4: loss terms added one at a time (L_cls, then the aux classifier, PTC, CTC, L_seg, L_reg).
    "4": {
        "L_cls": {"M": 27.8, "M^m": None, "Seg": None},
        "+L_cls^m": {"M": 27.9, "M^m": 53.8, "Seg": None},
        "+PTC": {"M": 62.5, "M^m": 57.8, "Seg": None},
        "+CTC": {"M": 67.2, "M^m": 60.7, "Seg": None},
        "+L_seg": {"M": None, "M^m": 61.2, "Seg": 66.6},  # the paper's M cell is empty in this row
        "+L_reg": {"M": 70.5, "M^m": 62.5, "Seg": 68.1},
    },
    # Table 5a: the block (1-based, of 12) feeding the auxiliary classifier; paper default 10.
    "5a": {
        "8": {"M": 63.5, "M^m": 48.1, "Seg": 60.5},
        "9": {"M": 67.6, "M^m": 55.1, "Seg": 64.8},
        "10": {"M": 70.5, "M^m": 62.5, "Seg": 68.1},
        "11": {"M": 43.1, "M^m": 45.2, "Seg": 40.3},
    },
    # Table 5b: CTC local crop side in pixels; paper default 96.
    "5b": {
        "64": {"M": 68.1, "M^m": None, "Seg": 65.5},
        "80": {"M": 69.3, "M^m": None, "Seg": 67.3},
        "96": {"M": 70.5, "M^m": None, "Seg": 68.1},
        "112": {"M": 69.4, "M^m": None, "Seg": 67.0},
    },
    # Table 5c: EMA momentum ρ of the CTC teacher head; paper default 0.9.
    "5c": {
        "0": {"M": 69.2, "M^m": None, "Seg": 66.9},
        "0.1": {"M": 69.0, "M^m": None, "Seg": 67.1},
        "0.9": {"M": 70.5, "M^m": None, "Seg": 68.1},
        "0.99": {"M": 68.7, "M^m": None, "Seg": 66.6},
    },
}

TITLES = {
    "4": "Table 4: ablation of the loss terms",
    "5a": "Table 5a: index of the auxiliary block",
    "5b": "Table 5b: local crop size of CTC",
    "5c": "Table 5c: EMA momentum of the CTC teacher head",
}


def paper_row(table: str, label: str) -> dict[str, float | None]:
    """The paper's ``{column: mIoU}`` for a row, or all ``None`` when the table has no such row."""
    return dict(TABLES.get(table, {}).get(label, dict.fromkeys(COLUMNS)))
