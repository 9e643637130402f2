"""Structured / unstructured pruning, ONNX export, quantization modes and the latency harness."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.artifacts.card import artifact_bytes
from core.artifacts.onnx_runtime import ort_logits, ort_session
from core.compress.benchmark import benchmark_architecture, state_dict_bytes
from core.compress.export import check_export, export_onnx
from core.compress.latency import summarize, time_calls
from core.compress.prune import structured_prune, unstructured_prune, weight_sparsity
from core.compress.quantize import depthwise_conv_nodes, quantize_onnx, torch_dynamic_quantize
from core.errors import ConfigError
from core.jobs.train import TrainResult
from core.models import create_model
from tests.configs import STUDY


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "densenet169" else n for n in STUDY])
def test_structured_pruning_works_for_every_architecture(name: str) -> None:
    model = create_model(name, pretrained=False).eval()
    report = structured_prune(model, ratio=0.5, example_input=torch.randn(1, 3, 32, 32))
    assert report.params_after < 0.6 * report.params_before
    assert report.macs_after < 0.6 * report.macs_before
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)  # the classifier head is kept


def test_pruned_model_reloads_identically(tmp_path: Path) -> None:
    model = create_model("test_resnet", pretrained=False).eval()
    structured_prune(model, ratio=0.5, example_input=torch.randn(1, 3, 32, 32))
    torch.save(model, tmp_path / "pruned.pt")
    again = torch.load(tmp_path / "pruned.pt", weights_only=False).eval()
    x = torch.randn(3, 3, 48, 48)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), again(x), rtol=0, atol=0)


def test_taylor_importance_and_global_pruning() -> None:
    model = create_model("test_resnet", pretrained=False)
    batch = [(torch.randn(4, 3, 32, 32), torch.randint(0, 7, (4,)))]
    report = structured_prune(model, ratio=0.3, example_input=torch.randn(1, 3, 32, 32), importance="taylor",
                              global_pruning=True, grad_batches=lambda: batch)
    assert report.params_after < report.params_before


def test_taylor_on_a_zero_head_is_refused_and_a_linear_probe_gives_it_a_gradient() -> None:
    """A fresh head is zero (core.models.zero_head): no gradient reaches the backbone, Taylor ranks every channel 0
    and pruned nothing in silence (found on EfficientNet-Lite1 with its ImageNet weights)."""
    from core.compress.prune import linear_probe, prune_to_macs
    from core.models import zero_head

    torch.manual_seed(0)
    model = zero_head(create_model("test_efficientnet", pretrained=False))
    images, labels = torch.randn(32, 3, 32, 32), torch.arange(32) % 7
    example = torch.randn(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="no gradient reaches the layers to prune.*linear_probe"):
        prune_to_macs(model, keep=0.6, example_input=example, importance="taylor", max_layer_ratio=0.85,
                      grad_batches=lambda: [(images, labels)])
    before = model.get_classifier().weight.detach().clone()
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier")}
    loss = linear_probe(model, images, labels, steps=50)
    assert loss < float(np.log(7)) and not torch.equal(before, model.get_classifier().weight)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in backbone.items())  # only the head learnt
    report = prune_to_macs(model, keep=0.6, example_input=example, importance="taylor", max_layer_ratio=0.85,
                           grad_batches=lambda: [(images, labels)])
    assert report.macs_after < 0.7 * report.macs_before  # channels ranked and removed (the tiny net stops near 0.6)


def test_unstructured_pruning_is_sparse_but_not_smaller() -> None:
    model = create_model("test_resnet", pretrained=False)
    before = state_dict_bytes(model)
    sparsity = unstructured_prune(model, amount=0.5)
    assert sparsity == pytest.approx(0.5, abs=0.01) and weight_sparsity(model) == sparsity
    assert state_dict_bytes(model) == pytest.approx(before, rel=0.01)  # dense storage: same size


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ratio": 1.0}, "pruning ratio must be in [0, 1)"),
    ({"ratio": -0.1}, "pruning ratio must be in [0, 1)"),
    ({"ratio": 0.5, "importance": "random-ish"}, "allowed: magnitude, taylor"),
    ({"ratio": 0.5, "importance": "taylor"}, "taylor importance needs calibration batches"),
])
def test_bad_pruning_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        structured_prune(create_model("test_resnet", pretrained=False), example_input=torch.randn(1, 3, 32, 32),
                         **kwargs)
    assert message in str(err.value)


def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    model = create_model("test_efficientnet", pretrained=False).eval()
    exporter = export_onnx(model, tmp_path / "m.onnx", input_size=32)
    check = check_export(model, tmp_path / "m.onnx", torch.randn(8, 3, 32, 32), exporter=exporter)
    assert check.max_abs_logit_diff < 1e-4 and check.top1_agreement == 1.0
    assert exporter in ("dynamo", "torchscript")
    assert artifact_bytes(tmp_path / "m.onnx") == (tmp_path / "m.onnx").stat().st_size  # self-contained


def _test_images(trained: TrainResult, n: int = 64) -> np.ndarray:
    from core.artifacts.card import load_trained_model
    from core.data.prepare import eval_loader, prepare_data

    _, card, _ = load_trained_model(trained.run_dir)
    data = prepare_data(trained.config.data_dir, prep=card.preprocessing, cache_dir=trained.config.cache_dir)
    loader = eval_loader(data, data.table.head(n), card.preprocessing, batch_size=n)
    return next(iter(loader))[0].numpy()


@pytest.mark.parametrize("mode", ["fp32", "dynamic", "static", "fp16"])
def test_onnx_quantization_modes_agree_with_fp32(trained_tiny: TrainResult, tmp_path: Path, mode: str) -> None:
    from core.artifacts.card import load_trained_model

    model, card, _ = load_trained_model(trained_tiny.run_dir)
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, fp32, input_size=card.preprocessing.input_size)
    images = _test_images(trained_tiny)
    out = quantize_onnx(fp32, tmp_path / f"{mode}.onnx", mode=mode, calibration=images[:32])
    reference = ort_logits(ort_session(fp32), images).argmax(1)
    got = ort_logits(ort_session(out), images).argmax(1)
    assert np.mean(reference == got) >= 0.8, f"{mode}: top-1 agreement {np.mean(reference == got):.2f}"
    if mode in ("static", "dynamic"):
        assert artifact_bytes(out) < 0.6 * artifact_bytes(fp32)


def test_static_options_and_errors(trained_tiny: TrainResult, tmp_path: Path) -> None:
    from core.artifacts.card import load_trained_model

    model, card, _ = load_trained_model(trained_tiny.run_dir)
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, fp32, input_size=card.preprocessing.input_size)
    images = _test_images(trained_tiny, 16)
    assert depthwise_conv_nodes(fp32), "an EfficientNet has depthwise convolutions"
    quantize_onnx(fp32, tmp_path / "s.onnx", mode="static", calibration=images, method="percentile",
                  exclude="depthwise")
    with pytest.raises(ConfigError, match="'int4' is not an ONNX mode; allowed: fp32, dynamic, static, fp16"):
        quantize_onnx(fp32, tmp_path / "x.onnx", mode="int4")
    with pytest.raises(ConfigError, match="allowed: minmax, percentile, entropy"):
        quantize_onnx(fp32, tmp_path / "x.onnx", mode="static", calibration=images, method="kl")
    with pytest.raises(ConfigError, match="needs calibration images"):
        quantize_onnx(fp32, tmp_path / "x.onnx", mode="static")
    with pytest.raises(ConfigError, match="'torch_dynamic' is not an ONNX mode; allowed: fp32, dynamic, static, fp16"):
        quantize_onnx(fp32, tmp_path / "x.onnx", mode="torch_dynamic")  # a PyTorch mode: the sweep saves a module


def test_torch_dynamic_quantization_leaves_convolutions_fp32() -> None:
    model = create_model("test_resnet", pretrained=False).eval()
    dq = torch_dynamic_quantize(model)
    kinds = {type(m).__module__ + "." + type(m).__name__ for m in dq.modules()}
    assert any("quantized" in k and k.endswith("Linear") for k in kinds)  # the head is quantized...
    assert any(isinstance(m, nn.Conv2d) for m in dq.modules())  # ...every convolution stays fp32
    buf_a, buf_b = io.BytesIO(), io.BytesIO()
    torch.save(model.state_dict(), buf_a)
    torch.save(dq.state_dict(), buf_b)
    assert buf_b.tell() > 0.9 * buf_a.tell()  # so the size barely changes


@pytest.mark.slow
def test_latency_harness_and_benchmark_table(tmp_path: Path) -> None:
    times = time_calls(lambda: sum(range(1000)), warmup=2, runs=10)
    lat = summarize(times, batch=1, threads=1)
    assert len(times) == 10 and lat.median_ms > 0 and lat.iqr_ms >= 0 and lat.runs == 10
    table = benchmark_architecture("test_resnet", workdir=tmp_path, ratios=(0.5,), input_size=32, threads=1,
                                   runs=3, batch_sizes=(1,), calibration_images=4)
    assert table["variant"].tolist()[0] == "dense-fp32-torch"
    assert table.loc[0, "size_ratio"] == 1.0 and table.loc[0, "b1_speedup"] == 1.0
    pruned = table[table["variant"] == "pruned-0.5-int8-static"].iloc[0]
    assert pruned["size_ratio"] > 3  # channels removed and int8 weights: measured, not assumed
    unstructured = table[table["variant"].str.startswith("unstructured")].iloc[0]
    assert unstructured["size_ratio"] < 1.05  # zeros stored densely: no size gain


def test_sensitive_nodes_stay_fp32(trained_tiny: TrainResult, tmp_path: Path) -> None:
    import onnx

    from core.artifacts.card import load_trained_model
    from core.compress.quantize import sensitive_nodes

    model, card, _ = load_trained_model(trained_tiny.run_dir)
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, fp32, input_size=card.preprocessing.input_size)
    images = _test_images(trained_tiny, 16)
    full = quantize_onnx(fp32, tmp_path / "full.onnx", mode="static", calibration=images)
    worst = sensitive_nodes(fp32, full, images, count=3)
    assert len(worst) == 3 and len(set(worst)) == 3
    float_nodes = {n.name for n in onnx.load(str(fp32)).graph.node}
    assert set(worst) <= float_nodes
    mixed = quantize_onnx(fp32, tmp_path / "mixed.onnx", mode="static", calibration=images, exclude="sensitive",
                          keep_fp32=3)

    def quantized_inputs(path: Path) -> int:  # DequantizeLinear nodes feeding the graph: one per int8 tensor use
        return sum(n.op_type == "DequantizeLinear" for n in onnx.load(str(path)).graph.node)

    assert quantized_inputs(mixed) < quantized_inputs(full)  # fewer int8 tensors: some nodes were left in fp32
    reference = ort_logits(ort_session(fp32), images).argmax(1)
    assert np.mean(ort_logits(ort_session(mixed), images).argmax(1) == reference) >= 0.8


def test_pruning_to_a_mac_budget_keeps_the_residual_stream() -> None:
    """Issue 19: a budget in MACs (not a per-layer channel ratio), reached within a tolerance, with the stem, the
    blocks' output convs and the head conv untouched by default."""
    import timm

    from core.compress.prune import count_macs_params, prune_to_macs, residual_stream_layers

    example = torch.randn(1, 3, 32, 32)
    model = timm.create_model("test_efficientnet", num_classes=7)
    stream = {name: m.out_channels for name, m in model.named_modules() if m in residual_stream_layers(model)}
    assert {"conv_stem", "conv_head", "blocks.1.0.conv_pwl", "blocks.0.0.conv"} <= set(stream)
    assert "blocks.3.0.conv_pw" not in stream  # an inverted residual's expansion is prunable
    macs0, _ = count_macs_params(model, example)
    report = prune_to_macs(model, keep=0.8, example_input=example, round_to=None)
    assert 0.7 <= report.macs_after / macs0 <= 0.8 and report.params_after < report.params_before
    after = {name: m.out_channels for name, m in model.named_modules() if name in stream}
    assert after == stream
    assert model(example).shape == (1, 7)
    whole = timm.create_model("test_efficientnet", num_classes=7)
    prune_to_macs(whole, keep=0.8, example_input=example, round_to=None, keep_residual_stream=False,
                  max_layer_ratio=0.5)
    assert any(m.out_channels != stream[name] for name, m in whole.named_modules() if name in stream)
    with pytest.raises(ConfigError, match="fraction of the dense MACs"):
        prune_to_macs(whole, keep=1.5, example_input=example)


def test_batchnorm_statistics_are_re_estimated_after_pruning_a_pretrained_network() -> None:
    """A network pruned before training (prune-then-train) keeps ImageNet statistics that no longer fit its
    channels; frozen stages never update them. Re-estimated, each batch norm's running mean is the mean of what
    it now receives, and the weights are untouched."""
    from core.compress.prune import prune_to_macs, recalibrate_batchnorm

    torch.manual_seed(0)
    model = create_model("test_efficientnet", pretrained=False).eval()
    for m in model.modules():  # stale statistics, as a pruned pretrained network has
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
            m.running_var.fill_(9.0)
    prune_to_macs(model, keep=0.5, example_input=torch.randn(1, 3, 64, 64), max_layer_ratio=0.85)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    images = torch.randn(96, 3, 64, 64)
    assert recalibrate_batchnorm(model, (images[i:i + 32] for i in range(0, 96, 32))) == 96
    assert not any(m.training for m in model.modules())  # modes restored
    norm = model.bn1  # the stem's norm: its input is the stem conv's output
    with torch.no_grad():
        stem = model.conv_stem(images)
    assert torch.allclose(norm.running_mean, stem.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(norm.running_var, stem.var((0, 2, 3)), rtol=1e-3, atol=1e-4)
    assert norm.momentum == 0.1  # the moving average is back for training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
