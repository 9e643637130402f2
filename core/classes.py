"""The seven HAM10000 diagnostic classes, in ISIC 2018 Task 3 column order.

The class index used by every model is the position in :data:`CLASSES`; it matches the column order of an
ISIC 2018 Task 3 ground-truth or submission file (``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``).
"""

CLASSES: tuple[str, ...] = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")

CLINICAL_NAMES: dict[str, str] = {
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "bcc": "Basal cell carcinoma",
    "akiec": "Actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "vasc": "Vascular lesion",
}

ISIC_COLUMNS: tuple[str, ...] = tuple(c.upper() for c in CLASSES)

CLASS_TO_INDEX: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}


def clinical_name(dx: str) -> str:
    """Full clinical name of a dx code, e.g. ``"mel"`` -> ``"Melanoma"``."""
    try:
        return CLINICAL_NAMES[dx]
    except KeyError:
        raise KeyError(f"unknown dx {dx!r}; allowed: {', '.join(CLASSES)}") from None
