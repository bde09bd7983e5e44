"""Model family: exact trainable parameter counts (spec section 4), output shapes of every head,
patch probability rule, Keras-fidelity settings and registry errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imagery.models import count_parameters, create_model, list_models, main_output_only, patch_probability

# (name, kwargs, PyTorch trainable count from rau-net.md section 4)
PARAM_COUNTS = [
    ("rau_net1", {}, 24_876_294),
    ("rau_net1", {"in_channels": 21}, 24_873_990),
    ("rau_net1", {"use_bottleneck": True}, 25_254_470),
    ("rau_net1", {"attention": "triple_mha"}, 25_398_182),
    ("rau_net2", {}, 24_809_990),
    ("small_rau_net1", {}, 2_599_710),
    ("small_rau_net1", {"attention": "triple_mha"}, 3_065_894),
    ("res_unet", {}, 24_283_910),
    ("small_res_unet", {}, 2_541_310),
    ("unet", {"in_channels": 14, "head": "mono"}, 31_397_122),
    ("unet", {}, 31_476_422),
]


@pytest.mark.parametrize(("name", "kwargs", "expected"), PARAM_COUNTS)
def test_trainable_parameter_counts_match_spec(name: str, kwargs: dict, expected: int) -> None:
    with torch.device("meta"):  # no memory, no init cost
        model = create_model(name, **kwargs)
    assert count_parameters(model) == expected


def test_head_parameter_count_and_se_block_formula() -> None:
    from imagery.models.attention import SEAttention
    from imagery.models.blocks import ResConvBlock
    from imagery.models.heads import SegHead

    with torch.device("meta"):
        assert count_parameters(SegHead(640, "multires")) == 738_950
        for c in (40, 128, 640):
            assert count_parameters(ResConvBlock(c, SEAttention(c))) == 23 * c * c + 10.5 * c


FAMILY = ["rau_net1", "rau_net2", "small_rau_net1", "res_unet", "small_res_unet", "unet"]


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("head", ["multires", "mono", "dual"])
def test_output_shapes_every_head(name: str, head: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_channels=5, head=head, base_width=4).eval()
    x = torch.randn(2, 5, 32, 32)
    with torch.no_grad():
        out = model(x)
    expected = {"out": (2, 2, 32, 32)}
    if head == "multires":
        expected |= {"out_256": (2, 2, 64, 64), "out_64": (2, 2, 16, 16)}
    if head == "dual":
        expected |= {"patch_logit": (2,)}
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(torch.isfinite(v).all() for v in out.values())
    p = patch_probability(out)
    assert p.shape == (2,) and ((p >= 0) & (p <= 1)).all()


@pytest.mark.parametrize("attention", ["se", "triple_mha", "cbam", "none"])
def test_every_attention_runs_and_changes_the_model(attention: str) -> None:
    torch.manual_seed(0)
    model = create_model("rau_net1", in_channels=3, attention=attention, base_width=8, input_size=16, head="mono")
    out = model(torch.randn(1, 3, 16, 16))["out"]
    assert out.shape == (1, 2, 16, 16)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    counts = {
        a: count_parameters(create_model("rau_net1", in_channels=3, attention=a, base_width=8, input_size=16))
        for a in ("se", "none")
    }
    assert counts["se"] > counts["none"]


def test_triple_mha_rejects_other_input_size() -> None:
    model = create_model("small_rau_net1", in_channels=3, attention="triple_mha", base_width=4, input_size=16)
    with pytest.raises(ValueError, match="input_size=32"):
        model(torch.randn(1, 3, 32, 32))


def test_odd_input_size_and_any_channel_count() -> None:
    model = create_model("small_rau_net1", in_channels=17, base_width=4, head="multires").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 17, 36, 36))
    assert out["out"].shape == (1, 2, 36, 36)
    with pytest.raises(ValueError, match=r"expected \(B, 17, H, W\)"):
        model(torch.randn(1, 14, 36, 36))


def test_keras_fidelity_settings() -> None:
    torch.manual_seed(0)
    model = create_model("rau_net1", base_width=16, input_size=32)
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)}
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert slopes == {0.3}
    assert {(m.eps, m.momentum) for m in bns} == {(1e-3, 0.01)}
    drops = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.25]
    assert [m.p for m in create_model("res_unet", base_width=8).modules() if isinstance(m, nn.Dropout)] == [0.2]
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in convs)
    # He-normal: a 3x3 conv of 16 -> 16 channels has std close to sqrt(2 / 144)
    w = model.enc[0].branch3[0].weight.detach()
    assert abs(float(w.std()) - (2 / 144) ** 0.5) < 0.02
    assert float(w.abs().max()) <= 2 * (2 / 144) ** 0.5 / 0.8796 + 1e-6  # truncated at 2 std


def test_patch_probability_rule() -> None:
    logits = torch.full((3, 2, 16, 16), 0.0)
    logits[:, 0] = 5.0  # confident background everywhere
    logits[1, :, 7, 7] = torch.tensor([0.0, 10.0])  # one noisy landslide pixel
    logits[2, 0, 4:8, 4:8] = 0.0
    logits[2, 1, 4:8, 4:8] = 10.0  # a 4x4 landslide blob
    p = patch_probability({"out": logits})
    assert p[0] < 0.01
    assert p[1] < 0.2  # a single pixel does not fire
    assert p[2] > 0.99
    dual = {"out": logits, "patch_logit": torch.tensor([0.0, 2.0, -2.0])}
    torch.testing.assert_close(patch_probability(dual), torch.sigmoid(dual["patch_logit"]))


def test_registry_errors_and_config() -> None:
    assert "rau_net1" in list_models() and len(list_models()) >= 8
    with pytest.raises(ValueError, match="model 'nope'"):
        create_model("nope")
    with pytest.raises(ValueError, match="head='triple'"):
        create_model("rau_net1", head="triple")
    with pytest.raises(ValueError, match="attention='x'"):
        create_model("rau_net1", attention="x")
    with pytest.raises(ValueError, match="unknown option"):
        create_model("rau_net1", widht=3)
    m = create_model("small_rau_net1", in_channels=14, base_width=4)
    assert m.model_config["name"] == "small_rau_net1" and m.model_config["base_width"] == 4


def test_deterministic_init_with_seed() -> None:
    torch.manual_seed(3)
    a = create_model("small_rau_net1", in_channels=4, base_width=4)
    torch.manual_seed(3)
    b = create_model("small_rau_net1", in_channels=4, base_width=4)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


# torchvision's ImageNet feature extractors, minus their final 1x1 conv (160->960 + BN for
# MobileNetV3-Large, 320->1280 + BN for EfficientNet-B0), plus the stem's extra input channels:
# MobileNetV3-Large features 2,971,952 - 155,520 + (23-3)*16*9 = 2,819,312;
# EfficientNet-B0 features 4,007,548 - 412,160 + (23-3)*32*9 = 3,601,148.
@pytest.mark.parametrize(
    ("name", "expected"), [("deeplabv3_mobilenetv3", 2_819_312), ("deeplabv3_efficientnet", 3_601_148)]
)
def test_backbone_encoders_match_reference_architectures(name: str, expected: int) -> None:
    with torch.device("meta"):
        model = create_model(name, in_channels=23)
    assert count_parameters(model.encoder) == expected


@pytest.mark.parametrize(("name", "head"), [("deeplabv3_mobilenetv3", "multires"), ("deeplabv3_efficientnet", "dual")])
def test_backbone_heads(name: str, head: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_channels=6, head=head, width_mult=0.25, aspp_channels=8)
    out = model(torch.randn(2, 6, 16, 16))
    assert out["out"].shape == (2, 2, 16, 16)
    assert ("out_256" in out) == (head == "multires") and ("patch_logit" in out) == (head == "dual")
    out["out"].mean().backward()
    assert model.encoder[0][0].weight.grad.abs().sum() > 0  # gradients reach the stem
    with pytest.raises(ValueError, match="attention='cbam'"):
        create_model(name, attention="cbam")


@pytest.mark.parametrize(
    ("attention", "site", "expected"),
    [
        ("se", "encoder", 31_746_722),  # the closest to the deck's 31.6 M / 31.9 M / 31.8 M (none within 0.1 M)
        ("cbam", "skip", 31_746_854),
        ("triple_mha", "decoder", 32_023_954),
        ("se", "bottleneck", 32_447_234),
    ],
)
def test_unet_attention_placements_counted_to_the_unit(attention: str, site: str, expected: int) -> None:
    """The deck's U-Net + SE / CBAM / proposed attention (14 channels, single head); see imagery/models/unet.py."""
    model = create_model("unet", in_channels=14, head="mono", attention=attention, attention_site=site)
    assert count_parameters(model) == expected


def test_unet_attention_sites_run_and_keep_the_default_layout() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 32, 32)
    every = "encoder+bottleneck+skip+decoder_concat+decoder"
    for site in ("encoder", "skip", "bottleneck", "decoder_concat", every):
        m = create_model("unet", in_channels=5, head="mono", attention="se", base_width=4, attention_site=site)
        assert m(x)["out"].shape == (2, 2, 32, 32)
    default = create_model("unet", in_channels=5, head="mono", attention="se", base_width=4)
    explicit = create_model("unet", in_channels=5, head="mono", attention="se", base_width=4, attention_site="decoder")
    assert list(default.state_dict()) == list(explicit.state_dict())
    assert any(k.startswith("att.") for k in default.state_dict())  # models saved before the option still load
    with pytest.raises(ValueError, match="attention_site='middle'"):
        create_model("unet", in_channels=5, attention="se", base_width=4, attention_site="middle")


def _branch_calls(model: nn.Module) -> list[str]:
    calls: list[str] = []
    for name in ("up", "down"):
        getattr(model.head, name).register_forward_hook(lambda *_, n=name: calls.append(n))
    return calls


@pytest.mark.parametrize("name", ["small_rau_net1", "unet"])
def test_main_output_only_skips_the_multires_branches_in_eval(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_channels=5, base_width=4, head="multires").eval()
    calls = _branch_calls(model)
    x = torch.randn(2, 5, 32, 32)
    with torch.inference_mode():
        full = model(x)
        with main_output_only():
            main = model(x)
        after = model(x)
    assert sorted(full) == ["out", "out_256", "out_64"] and sorted(after) == sorted(full)
    assert list(main) == ["out"]
    assert torch.equal(main["out"], full["out"])  # the same map to the bit
    assert calls == ["up", "down", "up", "down"]  # the branches ran for the full calls only


def test_main_output_only_never_changes_training_or_other_heads() -> None:
    torch.manual_seed(0)
    model = create_model("small_rau_net1", in_channels=3, base_width=4, head="multires").train()
    with main_output_only():
        assert sorted(model(torch.randn(2, 3, 32, 32))) == ["out", "out_256", "out_64"]  # the loss needs them
    dual = create_model("small_rau_net1", in_channels=3, base_width=4, head="dual").eval()
    with torch.inference_mode(), main_output_only():
        assert sorted(dual(torch.randn(1, 3, 32, 32))) == ["out", "patch_logit"]
