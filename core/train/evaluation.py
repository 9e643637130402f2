"""Logits of a model over a loader or a prepared split (under ``inference_mode``; optional flip TTA), and those
logits scored as a card deploys them."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from core.artifacts.card import Card
from core.calibration import calibrated_softmax
from core.data.prepare import PreparedSplit
from core.metrics import Evaluation, evaluate_logits
from core.serve.predict import TTA_FLIPS
from core.store.results import Predictions
from core.world import World, gather_arrays


# Test-time augmentation: dermatoscopic images have no preferred orientation, so flips are label-preserving.
@torch.inference_mode()
def model_logits(model: nn.Module, loader: DataLoader, device: torch.device, *, channels_last: bool = False,
                 tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a PyTorch model over ``loader`` (bf16 autocast on CUDA).

    With ``tta`` the logits are the log of the mean softmax over the image and its horizontal, vertical and
    double flips (4x the compute)."""
    model.eval()
    logits, labels = [], []
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            if tta:
                probs = torch.stack([model(images.flip(d) if d else images).float().softmax(1) for d in TTA_FLIPS])
                logits.append(probs.mean(0).log().cpu().numpy())
            else:
                logits.append(model(images).float().cpu().numpy())
        labels.append(np.asarray(targets))
    return np.concatenate(logits), np.concatenate(labels)


def split_logits(model: nn.Module, split: PreparedSplit, name: str, *, batch_size: int, device: torch.device,
                 channels_last: bool, world: World = World()) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of ``model`` on a split, in the split's row order; with several ranks each scores its
    share and the logits are gathered."""
    rows = split.rows(name)
    loader = split.loader(name, batch_size=batch_size, rows=rows.iloc[world.rank::world.size])
    logits, labels = gather_arrays(world, *model_logits(model, loader, device, channels_last=channels_last))
    if world.distributed:  # gathered rank by rank: put them back in row order
        order = np.concatenate([np.arange(len(rows))[r::world.size] for r in range(world.size)])
        logits, labels = logits[np.argsort(order)], labels[np.argsort(order)]
    return logits, labels


def score_outputs(card: Card, outputs: Mapping[str, tuple[pd.DataFrame, np.ndarray]]
                  ) -> tuple[dict[str, Evaluation], dict[str, Predictions]]:
    """Each named output (the rows scored, their logits) scored as ``card`` deploys the model: probabilities
    calibrated by its temperature, its screening operating points, intervals over the rows' lesions; and the
    calibrated probabilities of every image, for the store."""
    evaluations, predictions = {}, {}
    for name, (rows, logits) in outputs.items():
        labels = rows["label"].to_numpy()
        evaluations[name] = evaluate_logits(labels, logits, temperature=card.temperature,
                                            groups=rows["lesion_id"].to_numpy(), triage=card.triage)
        predictions[name] = Predictions(rows["image_id"].tolist(), labels,
                                        calibrated_softmax(logits, card.temperature))
    return evaluations, predictions
