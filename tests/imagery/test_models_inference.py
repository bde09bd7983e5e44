"""The inference copy of a network (imagery.models.inference): BatchNorm folded, "same" padding inside the
convolutions; the same outputs as the model itself for every model of the registry, the model left unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imagery.models import create_model, list_models
from imagery.models.blocks import SameConv2d
from imagery.models.inference import PaddedSameConv2d, fold_batch_norms, for_inference


def _trained_like(name: str, seed: int = 0) -> nn.Module:
    """A tiny model of ``name`` whose BatchNorms hold statistics and affine weights away from the identity (as
    after training), in eval mode: folding them is then visible in the outputs if it is wrong."""
    torch.manual_seed(seed)
    kwargs = {"base_width": 8} if "deeplab" not in name else {"width_mult": 0.25, "aspp_channels": 16}
    model = create_model(name, in_channels=23, **kwargs)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.3, 3.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.mark.parametrize("name", list_models())
def test_the_inference_copy_gives_the_models_outputs(name: str) -> None:
    model = _trained_like(name)
    x = torch.randn(2, 23, 64, 64)
    copy = for_inference(model)
    with torch.inference_mode():
        ref, out = model(x), copy(x)
    assert set(out) == set(ref)
    for key in ref:
        assert out[key].shape == ref[key].shape
        scale = float(ref[key].abs().max())
        assert float((out[key] - ref[key]).abs().max()) <= 1e-5 * max(scale, 1.0), key
    left = sum(isinstance(m, nn.BatchNorm2d) for m in copy.modules())  # BatchNorms not folded
    assert left < sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) or left == 0


def test_rau_net_copy_has_no_batch_norm_nor_pad_and_leaves_the_model_alone() -> None:
    model = _trained_like("small_rau_net1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    copy = for_inference(model)
    assert n_bn > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())  # every BN follows a conv there
    assert not any(type(m) is SameConv2d and m.stride == (1, 1) for m in copy.modules())  # the head's 64 px: 2
    assert any(isinstance(m, PaddedSameConv2d) and m.crop == (1, 1) for m in copy.modules())  # the 2x2 branch
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(("kernel", "dilation"), [(2, 1), (3, 1), (4, 1), (5, 1), (3, 2), (2, 3), ((2, 3), 1)])
@pytest.mark.parametrize("size", [(9, 9), (8, 11)])
def test_padded_same_conv_equals_same_conv(kernel, dilation: int, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    conv = SameConv2d(3, 4, kernel, dilation=dilation).eval()
    fast = PaddedSameConv2d(conv)
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        ref, out = conv(x), fast(x)
    assert out.shape == ref.shape == (2, 4, *size)
    assert torch.allclose(out, ref, atol=1e-6)


def test_strided_same_conv_is_refused() -> None:
    with pytest.raises(ValueError, match="stride must be 1"):
        PaddedSameConv2d(SameConv2d(3, 4, 3, stride=2))


def test_fold_only_conv_then_batch_norm() -> None:
    torch.manual_seed(2)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    seq[1].running_var.fill_(4.0)
    seq[3].running_mean.fill_(1.0)
    x = torch.randn(1, 3, 8, 8)
    ref = seq(x)
    assert fold_batch_norms(seq) == 1  # the BN after the ReLU is not after a convolution: kept
    assert isinstance(seq[1], nn.Identity) and isinstance(seq[3], nn.BatchNorm2d)
    assert torch.allclose(seq(x), ref, atol=1e-6)
