"""Hand-computed values and gradient routing of the preference losses (train/losses.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prefwork.train.losses import LOSSES, get_loss

torch.set_num_threads(1)
BETA = 0.1


def _t(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def _call(name: str, pc, pr, rc, rr, **options):
    return get_loss(name)(pc, pr, rc, rr, beta=options.pop("beta", BETA), **options)


def test_registry_names_and_unknown_name():
    assert set(LOSSES) == {"dpo", "ipo", "hinge", "slic", "minor_dpo", "flex_dpo", "dpo_sft"}
    with pytest.raises(ValueError, match="valid losses: dpo, dpo_sft, flex_dpo"):
        get_loss("nope")


def test_dpo_equal_log_ratios_is_log2():
    losses, cr, rr = _call("dpo", _t(-3.0, -7.0), _t(-5.0, -2.0), _t(-4.0, -6.0), _t(-6.0, -1.0))
    assert torch.allclose(losses, torch.full((2,), math.log(2), dtype=torch.float64))
    assert torch.allclose(cr, _t(0.1, -0.1)) and torch.allclose(rr, _t(0.1, -0.1))


def test_dpo_value_and_label_smoothing():
    pc, pr, rc, rr = _t(-1.0), _t(-4.0), _t(-2.0), _t(-3.0)  # h = 1 - (-1) = 2
    losses, _, _ = _call("dpo", pc, pr, rc, rr, beta=0.5)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-1.0)))
    smoothed, _, _ = _call("dpo", pc, pr, rc, rr, beta=0.5, label_smoothing=0.2)
    want = 0.8 * math.log1p(math.exp(-1.0)) + 0.2 * math.log1p(math.exp(1.0))
    assert smoothed.item() == pytest.approx(want)


def test_ipo_by_hand_and_declares_mean_logps():
    assert get_loss("ipo").average_log_prob is True
    assert get_loss("dpo").average_log_prob is False
    losses, _, _ = _call("ipo", _t(-1.0), _t(-2.0), _t(-1.5), _t(-1.0), beta=0.25)
    # h = 0.5 - (-1.0) = 1.5; 1/(2β) = 2; (1.5 - 2)² = 0.25
    assert losses.item() == pytest.approx(0.25)


def test_hinge_by_hand():
    losses, _, _ = _call("hinge", _t(-1.0, -1.0), _t(-4.0, -1.0), _t(-2.0, -1.0), _t(-3.0, -1.0), beta=0.25)
    assert torch.allclose(losses, _t(0.5, 1.0))  # relu(1 - 0.25·2), relu(1 - 0)


def test_slic_by_hand_and_needs_nll():
    pc, pr, rc, rr = _t(-2.0, -1.0), _t(-2.5, -5.0), _t(0.0, 0.0), _t(0.0, 0.0)
    losses, _, _ = _call("slic", pc, pr, rc, rr, delta=1.0, alpha=0.5, chosen_nll=_t(2.0, 4.0))
    assert torch.allclose(losses, _t(0.5 + 1.0, 0.0 + 2.0))
    assert get_loss("slic").reference_free and get_loss("slic").needs_chosen_nll
    with pytest.raises(ValueError, match="chosen_nll"):
        _call("slic", pc, pr, rc, rr)
    with pytest.raises(ValueError, match="chosen_nll"):
        _call("dpo_sft", pc, pr, rc, rr)


def test_dpo_sft_is_dpo_plus_alpha_nll():
    args = (_t(-1.0), _t(-4.0), _t(-2.0), _t(-3.0))
    dpo, _, _ = _call("dpo", *args)
    both, _, _ = _call("dpo_sft", *args, alpha=0.3, chosen_nll=_t(2.0))
    assert both.item() == pytest.approx(dpo.item() + 0.6)


def test_minor_dpo_equals_dpo_when_rejected_ratio_positive():
    args = (_t(-1.0, -2.0), _t(-2.0, -3.0), _t(-1.5, -2.5), _t(-3.0, -3.5))  # rejected ratios +1, +0.5
    assert torch.allclose(_call("minor_dpo", *args)[0], _call("dpo", *args)[0])


def test_minor_dpo_ignores_negative_rejected_ratio():
    pc, rc, rr = _t(-1.0), _t(-1.5), _t(-2.0)
    pr = _t(-3.0, grad=True)  # rejected ratio -1: clipped to 0
    losses, _, _ = _call("minor_dpo", pc, pr, rc, rr)
    assert losses.item() == pytest.approx(-F.logsigmoid(torch.tensor(BETA * 0.5)).item())
    losses.sum().backward()
    assert pr.grad.abs().max().item() == 0.0


def test_flex_dpo_equals_dpo_with_equal_betas_and_weights_each_side():
    args = (_t(-1.0, -2.0), _t(-2.0, -6.0), _t(-1.5, -2.5), _t(-3.0, -3.5))
    assert torch.allclose(_call("flex_dpo", *args)[0], _call("dpo", *args)[0])
    assert torch.allclose(_call("flex_dpo", *args, beta_chosen=BETA, beta_rejected=BETA)[0], _call("dpo", *args)[0])
    flex, _, _ = _call("flex_dpo", _t(-1.0), _t(-4.0), _t(-2.0), _t(-3.0), beta_chosen=0.5, beta_rejected=0.25)
    assert flex.item() == pytest.approx(-F.logsigmoid(torch.tensor(0.5 * 1 + 0.25 * 1.0)).item())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_flow_only_through_policy(name):
    pc, pr = _t(-1.0, -3.0, grad=True), _t(-2.0, -1.0, grad=True)
    rc, rr = _t(-1.5, -2.0, grad=True), _t(-1.0, -2.5, grad=True)
    nll = _t(1.0, 2.0, grad=True)
    losses, chosen_rewards, rejected_rewards = _call(name, pc, pr, rc, rr, chosen_nll=nll)
    assert losses.shape == chosen_rewards.shape == rejected_rewards.shape == (2,)
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad
    losses.sum().backward()
    assert rc.grad is None and rr.grad is None
    assert pc.grad is not None and pc.grad.abs().sum() > 0
    assert torch.allclose(chosen_rewards, BETA * (pc - rc).detach())
    assert torch.allclose(rejected_rewards, BETA * (pr - rr).detach())
