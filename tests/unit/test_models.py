"""Every registered model: forward/backward in 2D and 3D, the contract, ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medlens.errors import ConfigError
from medlens.inference.onnx import export_onnx
from medlens.models import MedlensModel, create_model, list_models, load_backbone, model_from_spec

# small widths keep the whole matrix fast; the architecture (and its code paths) is unchanged
SMALL = {
    "classic-cnn": {"channels": (8, 16), "dense": 16},
    "compactnet": {"widths": (8, 16, 16, 32)},
    "vgg11": {"width": 0.125},
    "vgg16": {"width": 0.125},
    "resnet18": {"width": 0.125, "small_input": True},
    "resnet34": {"width": 0.125, "small_input": True},
    "resnet50": {"width": 0.125, "small_input": True},
    "densenet121": {"small_input": True, "growth_rate": 4, "init_features": 8},
}
SIZE = {2: (20, 20), 3: (12, 12, 12)}


def test_registry_lists_the_issue_models() -> None:
    required = {"classic-cnn", "vgg11", "vgg16", "resnet18", "resnet34", "resnet50", "densenet121"}
    assert required <= set(list_models())
    assert "compactnet" in list_models()
    assert set(SMALL) == set(list_models()), "add new models to SMALL so they are tested"


def test_typo_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        create_model("resnet81", 2, 1, 2)


def test_bad_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid options"):
        create_model("vgg11", 2, 1, 2, depth=3)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward_and_contract(name: str, dims: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, dims, 2, 3, **SMALL[name])
    assert isinstance(model, MedlensModel) and model.spatial_dims == dims
    x = torch.randn(2, 2, *SIZE[dims])
    activations: list[torch.Tensor] = []
    hook = model.get_submodule(model.target_layer).register_forward_hook(
        lambda _m, _i, out: activations.append(out)
    )
    logits = model(x)
    hook.remove()
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # the CAM layer yields a spatial map with the model's dimensionality
    assert activations and activations[0].dim() == dims + 2
    assert model.embed(x).shape[0] == 2
    # transfer learning: replace the head, freeze the backbone
    model.replace_head(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    model.freeze_features()
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    # the spec rebuilds the same architecture
    clone = model_from_spec(model.spec())
    clone.load_state_dict(model.state_dict())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_onnx_parity(name: str, dims: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(name, dims, 1, 2, **SMALL[name]).eval()
    report = export_onnx([model], (1, *SIZE[dims]), tmp_path / "m.onnx", check_batches=(1, 3))
    assert report.path.is_file()
    assert report.max_abs_diff < 1e-3


def test_ensemble_onnx_averages_members(tmp_path: Path) -> None:
    import onnxruntime as ort

    members = [create_model("compactnet", 2, 1, 2, **SMALL["compactnet"]).eval() for _ in range(2)]
    export_onnx(members, (1, 16, 16), tmp_path / "e.onnx")
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        expected = (members[0](x) + members[1](x)).numpy() / 2
    got = ort.InferenceSession(str(tmp_path / "e.onnx")).run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_load_backbone_copies_features_and_adapts_channels() -> None:
    source = create_model("compactnet", 2, 1, 2, **SMALL["compactnet"])
    target = create_model("compactnet", 2, 3, 4, **SMALL["compactnet"])
    report = load_backbone(target, source.state_dict(), source_name="compactnet", freeze=True)
    assert report.adapted == ["features.stem.0.weight"]
    assert report.loaded > 5
    stem = target.state_dict()["features.stem.0.weight"]
    # grey kernel spread over three colour channels: a grey RGB image gives the same response
    src = source.state_dict()["features.stem.0.weight"]
    torch.testing.assert_close(stem.sum(dim=1, keepdim=True), src)
    torch.testing.assert_close(
        target.state_dict()["features.stage2.conv1.weight"],
        source.state_dict()["features.stage2.conv1.weight"],
    )
    with pytest.raises(ConfigError, match="cannot initialise"):
        load_backbone(target, source.state_dict(), source_name="vgg11")
