"""Head activations by name, output activations and their losses, ClassifierHead and its diagnostics."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audiokit.layers import (
    HIDDEN_ACTIVATIONS,
    OUTPUT_ACTIVATIONS,
    ActivationStats,
    ClassifierHead,
    HeadConfig,
    get_activation,
    get_output_activation,
    grad_norms,
    loss_for_output,
    output_width,
    width_factor,
)

# spec -> the torch.nn.functional (or torch) computation it must equal
REFERENCE = {
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "prelu": lambda x: F.prelu(x, torch.tensor([0.25])),
    "rrelu": lambda x: F.rrelu(x, training=False),
    "elu": F.elu,
    "selu": F.selu,
    "celu": F.celu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hardtanh": F.hardtanh,
    "hardsigmoid": F.hardsigmoid,
    "hardswish": F.hardswish,
    "hardshrink": F.hardshrink,
    "softshrink": F.softshrink,
    "tanhshrink": F.tanhshrink,
    "logsigmoid": F.logsigmoid,
    "threshold:0.1,-3.0": lambda x: F.threshold(x, 0.1, -3.0),
    "glu": lambda x: F.glu(x, dim=-1),
    "identity": lambda x: x,
    # parameterised forms
    "leaky_relu:0.1": lambda x: F.leaky_relu(x, 0.1),
    "elu:alpha=0.5": lambda x: F.elu(x, alpha=0.5),
    "celu:2": lambda x: F.celu(x, alpha=2.0),
    "hardtanh:min_val=-2,max_val=2": lambda x: F.hardtanh(x, -2.0, 2.0),
    "softplus:2": lambda x: F.softplus(x, beta=2.0),
    "softplus:beta=2,threshold=5": lambda x: F.softplus(x, beta=2.0, threshold=5.0),
    "hardshrink:0.3": lambda x: F.hardshrink(x, 0.3),
    "softshrink:lambd=0.3": lambda x: F.softshrink(x, 0.3),
    "rrelu:0.1,0.3": lambda x: F.rrelu(x, 0.1, 0.3, training=False),
    "prelu:1,0.5": lambda x: F.prelu(x, torch.tensor([0.5])),
    "gelu:approximate=tanh": lambda x: F.gelu(x, approximate="tanh"),
}


def test_every_name_is_covered():
    names = {spec.split(":")[0] for spec in REFERENCE}
    assert names == set(HIDDEN_ACTIVATIONS)


@pytest.mark.parametrize("spec", sorted(REFERENCE))
def test_activation_matches_torch(spec):
    torch.manual_seed(0)
    x = torch.randn(4, 6) * 3
    act = get_activation(spec).eval()
    assert isinstance(act, nn.Module)
    torch.testing.assert_close(act(x), REFERENCE[spec](x), rtol=0, atol=1e-6)


def test_names_case_and_dash_insensitive():
    assert isinstance(get_activation("Leaky-ReLU:0.2"), nn.LeakyReLU)
    assert get_activation("LEAKY_relu:0.2").negative_slope == 0.2
    gelu = get_activation("GELU-Tanh")
    assert isinstance(gelu, nn.GELU) and gelu.approximate == "tanh"
    assert isinstance(get_activation("Swish"), nn.SiLU)


def test_positional_and_keyword_parameters():
    assert get_activation("leaky_relu:0.1").negative_slope == 0.1
    assert get_activation("leaky_relu:negative_slope=0.1").negative_slope == 0.1
    assert get_activation("elu:alpha=1.5").alpha == 1.5
    ht = get_activation("hardtanh:min_val=-2,max_val=2")
    assert (ht.min_val, ht.max_val) == (-2.0, 2.0)
    th = get_activation("threshold:0.1,0.0")
    assert (th.threshold, th.value) == (0.1, 0.0)
    th = get_activation("threshold:0.1, value=2")
    assert (th.threshold, th.value) == (0.1, 2.0)
    prelu = get_activation("prelu:num_parameters=3")
    assert prelu.num_parameters == 3 and isinstance(prelu.num_parameters, int)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'nope'") as info:
        get_activation("nope")
    for name in HIDDEN_ACTIVATIONS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="valid names"):
        get_activation("softmax")  # an output activation, not a hidden one


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("elu:beta=1", "unknown parameter 'beta'"),
        ("leaky_relu:abc", "bad value 'abc'"),
        ("leaky_relu:0.1,0.2", "too many parameters"),
        ("relu:1", "takes no parameters"),
        ("prelu:num_parameters=1.5", "bad value '1.5'"),
        ("hardtanh:max_val=1,0.5", "positional parameter after a keyword"),
        ("elu:0.5,alpha=1", "given twice"),
        ("relu:inplace=true", "unknown parameter 'inplace'"),
        ("hardtanh:min_val=2,max_val=-2", "torch rejected"),
    ],
)
def test_bad_parameters_name_the_activation(spec, fragment):
    name = spec.split(":")[0]
    with pytest.raises(ValueError) as info:
        get_activation(spec)
    message = str(info.value)
    assert fragment in message
    assert f"'{name}'" in message


def test_accepted_parameters_listed_in_errors():
    with pytest.raises(ValueError, match=r"negative_slope: float = 0\.01"):
        get_activation("leaky_relu:slope=1")
    with pytest.raises(ValueError, match=r"min_val.*max_val"):
        get_activation("hardtanh:lo=1")


def test_threshold_requires_both_parameters():
    with pytest.raises(ValueError, match=r"missing required parameter.*'threshold', 'value'"):
        get_activation("threshold")
    with pytest.raises(ValueError, match=r"missing required parameter.*'value'"):
        get_activation("threshold:0.1")


def test_glu_width():
    assert width_factor("glu") == 0.5 and width_factor("relu") == 1.0
    assert output_width("glu", 8) == 4 and output_width("gelu", 7) == 7
    with pytest.raises(ValueError, match="even width"):
        output_width("glu", 7)
    head = ClassifierHead(10, 3, HeadConfig(hidden=[8, 6], activation="glu"))
    assert head.layers[0].linear.out_features == 8
    assert head.layers[1].linear.in_features == 4
    assert head.fc.in_features == 3
    assert head(torch.randn(5, 10)).shape == (5, 3)
    with pytest.raises(ValueError, match=r"glu.*even width, got 7"):
        HeadConfig(hidden=[8, 7], activation="glu")


# -- output activations and losses ---------------------------------------------------------------------------------
LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
INDICES = torch.tensor([0, 2])


def _log_softmax_by_hand(z):
    return [[v - math.log(sum(math.exp(u) for u in row)) for v in row] for row in z.tolist()]


def test_output_activations():
    assert OUTPUT_ACTIVATIONS == ("softmax", "log_softmax", "sigmoid", "softmin", "identity")
    torch.testing.assert_close(get_output_activation("softmax")(LOGITS), torch.softmax(LOGITS, -1))
    torch.testing.assert_close(get_output_activation("log_softmax")(LOGITS), torch.log_softmax(LOGITS, -1))
    torch.testing.assert_close(get_output_activation("sigmoid")(LOGITS), torch.sigmoid(LOGITS))
    torch.testing.assert_close(get_output_activation("softmin")(LOGITS), F.softmin(LOGITS, -1))
    assert get_output_activation("identity")(LOGITS) is LOGITS
    with pytest.raises(ValueError, match="softmax, log_softmax"):
        get_output_activation("tanh")


def test_softmax_and_log_softmax_losses_by_hand():
    logp = _log_softmax_by_hand(LOGITS)
    expected = -(logp[0][0] + logp[1][2]) / 2
    for name in ("softmax", "log_softmax", "identity"):
        loss = loss_for_output(name, "multiclass")
        assert loss(LOGITS, INDICES).item() == pytest.approx(expected, rel=1e-5)
        assert loss(LOGITS, F.one_hot(INDICES, 3).float()).item() == pytest.approx(expected, rel=1e-5)


def test_softmin_loss_by_hand():
    logp = _log_softmax_by_hand(-LOGITS)
    expected = -(logp[0][0] + logp[1][2]) / 2
    assert loss_for_output("softmin", "multiclass")(LOGITS, INDICES).item() == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_by_hand():
    s, c = 0.1, 3
    logp = _log_softmax_by_hand(LOGITS)
    total = 0.0
    for row, target in zip(logp, INDICES.tolist()):
        smoothed = [(1 - s) * (k == target) + s / c for k in range(c)]
        total += -sum(t * lp for t, lp in zip(smoothed, row))
    expected = total / 2
    for name in ("softmax", "log_softmax"):
        loss = loss_for_output(name, "multiclass", label_smoothing=s)
        assert loss(LOGITS, INDICES).item() == pytest.approx(expected, rel=1e-5)


def test_class_weights_log_softmax_matches_nll():
    w = torch.tensor([1.0, 2.0, 0.5])
    got = loss_for_output("log_softmax", "multiclass", class_weights=w)(LOGITS, INDICES)
    torch.testing.assert_close(got, F.cross_entropy(LOGITS, INDICES, weight=w))


def _bce_by_hand(z, t):
    terms = [
        -(ti * math.log(1 / (1 + math.exp(-zi))) + (1 - ti) * math.log(1 - 1 / (1 + math.exp(-zi))))
        for zr, tr in zip(z.tolist(), t.tolist())
        for zi, ti in zip(zr, tr)
    ]
    return sum(terms) / len(terms)


def test_sigmoid_bce_by_hand():
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    loss = loss_for_output("sigmoid", "multilabel")
    assert loss(LOGITS, multi_hot).item() == pytest.approx(_bce_by_hand(LOGITS, multi_hot), rel=1e-5)
    assert loss_for_output("identity", "multilabel")(LOGITS, multi_hot).item() == pytest.approx(
        _bce_by_hand(LOGITS, multi_hot), rel=1e-5
    )
    smoothed = multi_hot * 0.8 + 0.1
    got = loss_for_output("sigmoid", "multilabel", label_smoothing=0.2)(LOGITS, multi_hot)
    assert got.item() == pytest.approx(_bce_by_hand(LOGITS, smoothed), rel=1e-5)


def test_sigmoid_for_multiclass_is_logged_one_vs_rest(caplog):
    with caplog.at_level(logging.INFO, logger="audiokit.layers.activations"):
        loss = loss_for_output("sigmoid", "multiclass")
    assert "one-vs-rest" in caplog.text
    one_hot = F.one_hot(INDICES, 3).float()
    assert loss(LOGITS, INDICES).item() == pytest.approx(_bce_by_hand(LOGITS, one_hot), rel=1e-5)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_normalising_outputs_reject_multilabel(name):
    with pytest.raises(ValueError, match="sigmoid"):
        loss_for_output(name, "multilabel")


def test_loss_argument_validation():
    with pytest.raises(ValueError, match="task"):
        loss_for_output("softmax", "regression")
    with pytest.raises(ValueError, match="label_smoothing"):
        loss_for_output("softmax", "multiclass", label_smoothing=1.0)
    with pytest.raises(ValueError, match="targets must be"):
        loss_for_output("sigmoid", "multilabel")(LOGITS, torch.ones(2, 4))


# -- HeadConfig and ClassifierHead ---------------------------------------------------------------------------------
def test_head_config_validation_and_round_trip():
    cfg = HeadConfig(hidden=[8, 4], activation="leaky_relu:0.1", dropout=0.2, norm="layer", output="Log-Softmax")
    assert cfg.output == "log_softmax"
    assert HeadConfig.from_dict(cfg.to_dict()) == cfg
    assert HeadConfig().output_for("multilabel") == "sigmoid"
    assert HeadConfig().output_for("multiclass") == "softmax"
    assert cfg.output_for("multiclass") == "log_softmax"
    for bad in (
        {"hidden": [8, 0]},
        {"hidden": [-1]},
        {"hidden": 8},
        {"activation": "nope"},
        {"dropout": 1.0},
        {"dropout": -0.1},
        {"norm": "group"},
        {"output": "tanh"},
    ):
        with pytest.raises(ValueError):
            HeadConfig(**bad)
    with pytest.raises(ValueError, match="unknown HeadConfig field"):
        HeadConfig.from_dict({"hiden": [8]})


def test_head_forward_shape_gelu_layer_norm():
    head = ClassifierHead(16, 5, HeadConfig(hidden=[8, 4], activation="gelu", norm="layer", dropout=0.1))
    assert head(torch.randn(3, 16)).shape == (3, 5)
    assert head.out_features == 5
    assert len(head.layers) == 2 and len(head.activations) == 2
    assert all(isinstance(a, nn.GELU) for a in head.activations)
    assert isinstance(head.layers[0].norm, nn.LayerNorm)
    batch = ClassifierHead(16, 5, HeadConfig(hidden=[8], norm="batch"))
    assert isinstance(batch.layers[0].norm, nn.BatchNorm1d)
    assert batch(torch.randn(3, 16)).shape == (3, 5)
    linear = ClassifierHead(16, 5)
    assert len(linear.layers) == 0 and linear(torch.randn(2, 16)).shape == (2, 5)


def test_head_without_classes():
    head = ClassifierHead(16, 0, HeadConfig(hidden=[8, 4]))
    assert head.fc is None and head.out_features == 4
    assert head(torch.randn(3, 16)).shape == (3, 4)
    assert ClassifierHead(16, 0).out_features == 16


# -- diagnostics -----------------------------------------------------------------------------------------------------
def test_dead_relu_layer():
    torch.manual_seed(0)
    head = ClassifierHead(8, 3, HeadConfig(hidden=[6, 5], activation="relu"))
    with torch.no_grad():
        head.layers[0].linear.bias.fill_(-1e4)
    stats = ActivationStats(head)
    head(torch.randn(32, 8))
    head(torch.randn(32, 8))
    summary = stats.summary()
    assert summary["head.layer0.dead_fraction"] == 1.0
    assert summary["head.layer0.saturated_fraction"] == 0.0  # relu: unbounded above
    assert summary["head.layer0.mean"] == 0.0 and summary["head.layer0.std"] == 0.0
    stats.reset()
    assert stats.summary() == {}
    stats.remove()
    head(torch.randn(4, 8))
    assert stats.summary() == {}


def test_fresh_gelu_layer_is_alive():
    torch.manual_seed(0)
    head = ClassifierHead(8, 3, HeadConfig(hidden=[16], activation="gelu"))
    with ActivationStats(head, prefix="clf") as stats:
        x = torch.randn(256, 8)
        out = head.activations[0](head.layers[0].linear(x))
        head(x)
        summary = stats.summary()
    assert summary["clf.layer0.dead_fraction"] == 0.0
    assert summary["clf.layer0.saturated_fraction"] == 0.0
    assert summary["clf.layer0.mean"] == pytest.approx(out.mean().item(), abs=1e-5)
    assert summary["clf.layer0.std"] == pytest.approx(out.std(unbiased=False).item(), rel=1e-4)


def test_tanh_saturation():
    torch.manual_seed(0)
    head = ClassifierHead(8, 3, HeadConfig(hidden=[6], activation="tanh"))
    stats = ActivationStats(head)
    head(torch.randn(64, 8) * 1e4)
    assert stats.summary()["head.layer0.saturated_fraction"] == pytest.approx(1.0, abs=0.02)
    stats.reset()
    head(torch.randn(64, 8) * 1e-3)
    assert stats.summary()["head.layer0.saturated_fraction"] < 0.1


def test_grad_norms_after_backward():
    torch.manual_seed(0)
    head = ClassifierHead(8, 3, HeadConfig(hidden=[6], activation="silu"))
    assert grad_norms(head) == {}
    loss = loss_for_output("softmax", "multiclass")(head(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    norms = grad_norms(head)
    assert set(norms) == {"head.layers.0.linear.grad_norm", "head.fc.grad_norm"}
    assert all(v > 0 for v in norms.values())
    assert norms["head.fc.grad_norm"] == pytest.approx(head.fc.weight.grad.norm().item())
