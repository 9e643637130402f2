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

# How a clinic triages the seven classes: the first group needs a dermatologist's look soon.
POSSIBLY_MALIGNANT: frozenset[str] = frozenset({"mel", "bcc", "akiec"})

PLAIN_DESCRIPTIONS: dict[str, str] = {
    "mel": "A skin cancer that starts in pigment cells; it can spread, and it is curable when found early.",
    "nv": "A common mole: a harmless cluster of pigment cells.",
    "bcc": "The most common skin cancer; it grows slowly and rarely spreads, but needs treatment.",
    "akiec": "Sun-damage patches that can turn into skin cancer, or an early skin cancer confined to the top layer.",
    "bkl": "Harmless growths such as seborrheic keratoses, sun spots and lichen-planus-like keratoses.",
    "df": "A harmless firm bump in the skin, often on the legs.",
    "vasc": "Harmless growths of blood vessels, such as cherry angiomas.",
}


def is_possibly_malignant(dx: str) -> bool:
    """Whether a dx code belongs to the possibly-malignant group (mel, bcc, akiec)."""
    clinical_name(dx)  # unknown codes fail with the allowed list
    return dx in POSSIBLY_MALIGNANT
