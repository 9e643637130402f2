"""YAML config + flag overrides, with clear errors for unknown keys, bad types and values."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import build_config, config_from_args
from core.errors import ConfigError
from core.train.config import TrainConfig
from scripts.train import get_args_parser

REPO = Path(__file__).resolve().parent.parent


def test_shipped_configs_are_valid() -> None:
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if not path.name.startswith("sweep"):
            build_config(TrainConfig, yaml_path=path)


def test_flags_override_yaml(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("model: test_resnet\nepochs: 3\npretrained: true\n")
    args = get_args_parser().parse_args(["-c", str(tmp_path / "c.yaml"), "--epochs", "5", "--no-pretrained"])
    cfg = config_from_args(TrainConfig, args)
    assert (cfg.model, cfg.epochs, cfg.pretrained, cfg.lr) == ("test_resnet", 5, False, TrainConfig().lr)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("epochz: 3\n", "unknown config key(s) epochz; allowed: data_dir"),
        ("epochs: many\n", "epochs: expected int"),
        ("model: vgg16\n", "model: 'vgg16' is not allowed; allowed: efficientnet_b0"),
        ("imbalance: smote\n", "allowed: weighted_loss, balanced_sampler, logit_adjusted, none"),
        ("epochs: 0\n", "epochs must be at least 1"),
        ("- a\n- b\n", "expected a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, yaml_text: str, message: str) -> None:
    (tmp_path / "c.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        build_config(TrainConfig, yaml_path=tmp_path / "c.yaml")
    assert message in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        build_config(TrainConfig, yaml_path=tmp_path / "nope.yaml")
