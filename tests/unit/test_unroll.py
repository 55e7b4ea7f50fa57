"""3D convolutions rewritten as 2D ones compute the same function, in torch and in ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medlens.inference.onnx import export_onnx
from medlens.inference.unroll import DepthUnrolledConv3d, freeze_shapes, unroll_conv3d
from medlens.models import create_model
from tests.unit.test_models import SMALL


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "bias"),
    [(3, 1, 1, False), (3, 2, 1, True), (1, 2, 0, False), ((5, 3, 1), (2, 1, 1), (2, 1, 0), True)],
)
def test_one_layer_matches_conv3d(
    kernel: int | tuple[int, ...],
    stride: int | tuple[int, ...],
    padding: int | tuple[int, ...],
    bias: bool,
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 5, kernel, stride=stride, padding=padding, bias=bias)
    x = torch.randn(2, 3, 9, 10, 7)  # odd, unequal axes: depth slicing must not assume a cube
    with torch.no_grad():
        torch.testing.assert_close(DepthUnrolledConv3d(conv)(x), conv(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_3d_model_keeps_its_outputs(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 3, 1, 2, **SMALL[name]).eval()
    convs = sum(isinstance(m, nn.Conv3d) for m in model.modules())
    unrolled, rewritten = unroll_conv3d(model)
    assert rewritten == convs > 0
    assert not any(isinstance(m, nn.Conv3d) for m in unrolled.modules())
    assert sum(isinstance(m, nn.Conv3d) for m in model.modules()) == convs  # a copy
    x = torch.randn(3, 1, 12, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(unrolled(x), model(x), atol=1e-4, rtol=1e-4)
    freeze_shapes(unrolled, x[:1])  # constant reshapes, as exported: any batch size still works
    with torch.no_grad():
        torch.testing.assert_close(unrolled(x), model(x), atol=1e-4, rtol=1e-4)


def test_2d_models_are_left_alone() -> None:
    model = create_model("compactnet", 2, 1, 2, **SMALL["compactnet"])
    assert unroll_conv3d(model) == (model, 0)


def test_the_exported_3d_graph_has_only_2d_convolutions(tmp_path: Path) -> None:
    import onnx

    model = create_model("compactnet", 3, 1, 2, **SMALL["compactnet"]).eval()
    report = export_onnx([model], (1, 12, 12, 12), tmp_path / "m.onnx")
    graph = onnx.load(str(report.path)).graph
    ranks = {init.name: len(init.dims) for init in graph.initializer}
    conv_weights = [node.input[1] for node in graph.node if node.op_type == "Conv"]
    assert conv_weights and all(ranks[w] == 4 for w in conv_weights)
    assert not any(node.op_type == "BatchNormalization" for node in graph.node)  # folded
    # shapes fixed at export: no per-call shape arithmetic (one Shape: global pooling's flatten)
    assert sum(node.op_type == "Shape" for node in graph.node) <= 1
    assert report.max_abs_diff < 1e-3
