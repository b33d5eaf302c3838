"""Preference losses: pure functions of per-example log-probs (DESIGN.md, "Losses").

Every loss has the signature::

    loss_fn(policy_chosen_logps, policy_rejected_logps,
            reference_chosen_logps, reference_rejected_logps, *, beta, **options)
        -> (losses (B,), chosen_rewards (B,), rejected_rewards (B,))

All four inputs are ``(B,)`` tensors of per-sequence log-probs of the answer tokens
(sums, unless the loss sets ``average_log_prob = True``, then per-token means; the trainer
reads that attribute). Rewards are the implicit DPO rewards
``beta * (policy - reference)``, detached: they are for logging, never for gradients.

Options a loss may take: ``label_smoothing``, ``delta``, ``alpha``, ``beta_chosen``,
``beta_rejected`` and ``chosen_nll`` (B,): the chosen answer's mean per-token negative
log-likelihood under the policy (with grad), supplied by the trainer to losses that set
``needs_chosen_nll = True``. Losses that ignore the reference set ``reference_free = True``
so the trainer can skip the reference pass.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
LossOutput = tuple[Tensor, Tensor, Tensor]


def _loss(*, average_log_prob: bool = False, needs_chosen_nll: bool = False,
          reference_free: bool = False) -> Callable:
    """Decorator attaching the attributes the trainer reads from a loss function."""
    def mark(fn: Callable) -> Callable:
        fn.average_log_prob = average_log_prob
        fn.needs_chosen_nll = needs_chosen_nll
        fn.reference_free = reference_free
        return fn
    return mark


def _rewards(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             reference_chosen_logps: Tensor, reference_rejected_logps: Tensor,
             beta: float) -> tuple[Tensor, Tensor]:
    """Implicit rewards ``beta * (policy - reference)`` for chosen and rejected, (B,) each, detached."""
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps).detach()
    return chosen_rewards, rejected_rewards


def _frozen(reference_chosen_logps: Tensor, reference_rejected_logps: Tensor) -> tuple[Tensor, Tensor]:
    """The reference log-probs, detached: a loss never sends gradient into the reference."""
    return reference_chosen_logps.detach(), reference_rejected_logps.detach()


def _require_nll(name: str, chosen_nll: Tensor | None) -> Tensor:
    if chosen_nll is None:
        raise ValueError(f"loss '{name}' needs chosen_nll (the chosen answer's mean per-token NLL, (B,)); "
                         "pass chosen_nll=... (the trainer does so for losses with needs_chosen_nll=True)")
    return chosen_nll


@_loss()
def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             reference_chosen_logps: Tensor, reference_rejected_logps: Tensor, *,
             beta: float, label_smoothing: float = 0.0, **_: object) -> LossOutput:
    """DPO (Rafailov et al. 2023, arXiv 2305.18290), with cDPO label smoothing.

    ``h = (πc - rc) - (πr - rr)``;
    ``loss = -(1 - ε) · logsigmoid(β h) - ε · logsigmoid(-β h)`` (ε = label_smoothing, the
    conservative-DPO form TRL uses; ε = 0 gives plain DPO). At h = 0 the loss is log 2.
    """
    reference_chosen_logps, reference_rejected_logps = _frozen(reference_chosen_logps, reference_rejected_logps)
    logits = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    losses = (-(1 - label_smoothing) * F.logsigmoid(beta * logits)
              - label_smoothing * F.logsigmoid(-beta * logits))
    return (losses, *_rewards(policy_chosen_logps, policy_rejected_logps,
                              reference_chosen_logps, reference_rejected_logps, beta))


@_loss(average_log_prob=True)
def ipo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             reference_chosen_logps: Tensor, reference_rejected_logps: Tensor, *,
             beta: float, **_: object) -> LossOutput:
    """IPO (Azar et al. 2023, arXiv 2310.12036, Eq. 17): ``((πc - rc) - (πr - rr) - 1/(2β))²``.

    Takes per-token mean log-probs (``average_log_prob = True``), as TRL does, so β is
    comparable across answer lengths.
    """
    reference_chosen_logps, reference_rejected_logps = _frozen(reference_chosen_logps, reference_rejected_logps)
    logits = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    losses = (logits - 1 / (2 * beta)) ** 2
    return (losses, *_rewards(policy_chosen_logps, policy_rejected_logps,
                              reference_chosen_logps, reference_rejected_logps, beta))


@_loss()
def hinge_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
               reference_chosen_logps: Tensor, reference_rejected_logps: Tensor, *,
               beta: float, **_: object) -> LossOutput:
    """Hinge loss as TRL's ``loss_type="hinge"`` (RSO, Liu et al. 2023, arXiv 2309.06657):
    ``relu(1 - β · ((πc - rc) - (πr - rr)))``."""
    reference_chosen_logps, reference_rejected_logps = _frozen(reference_chosen_logps, reference_rejected_logps)
    logits = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    losses = torch.relu(1 - beta * logits)
    return (losses, *_rewards(policy_chosen_logps, policy_rejected_logps,
                              reference_chosen_logps, reference_rejected_logps, beta))


@_loss(needs_chosen_nll=True, reference_free=True)
def slic_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
              reference_chosen_logps: Tensor, reference_rejected_logps: Tensor, *,
              beta: float, delta: float = 1.0, alpha: float = 0.1,
              chosen_nll: Tensor | None = None, **_: object) -> LossOutput:
    """SLiC-HF (Zhao et al. 2023, arXiv 2305.10425), reference-free:
    ``relu(δ - (πc - πr)) + α · chosen_nll``.

    The calibration term compares policy log-probs only; the regulariser is the NLL of the
    chosen answer (the paper's λ·(-log πθ(y_ref))). The reference tensors only feed the
    logged rewards (pass zeros when no reference was computed).
    """
    reference_chosen_logps, reference_rejected_logps = _frozen(reference_chosen_logps, reference_rejected_logps)
    nll = _require_nll("slic", chosen_nll)
    losses = torch.relu(delta - (policy_chosen_logps - policy_rejected_logps)) + alpha * nll
    return (losses, *_rewards(policy_chosen_logps, policy_rejected_logps,
                              reference_chosen_logps, reference_rejected_logps, beta))


@_loss()
def minor_dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                   reference_chosen_logps: Tensor, reference_rejected_logps: Tensor, *,
                   beta: float, **_: object) -> LossOutput:
    """MinorDPO (Xie et al. 2024, arXiv 2408.09834):
    ``-logsigmoid(β · ((πc - rc) - max(0, πr - rr)))``.

    Once the rejected answer is below the reference, its term is clipped to 0 and gets no
    gradient: the rejected likelihood is not pushed down further (no drastic drop).
    """
    reference_chosen_logps, reference_rejected_logps = _frozen(reference_chosen_logps, reference_rejected_logps)
    rejected_logratios = torch.clamp(policy_rejected_logps - reference_rejected_logps, min=0.0)
    logits = (policy_chosen_logps - reference_chosen_logps) - rejected_logratios
    losses = -F.logsigmoid(beta * logits)
    return (losses, *_rewards(policy_chosen_logps, policy_rejected_logps,
                              reference_chosen_logps, reference_rejected_logps, beta))


@_loss()
def flex_dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                  reference_chosen_logps: Tensor, reference_rejected_logps: Tensor, *,
                  beta: float, beta_chosen: float | None = None, beta_rejected: float | None = None,
                  **_: object) -> LossOutput:
    """Flex-DPO ("3D-Properties", Yan et al. 2024, arXiv 2406.07327):
    ``-logsigmoid(β_c · (πc - rc) - β_r · (πr - rr))``, β_c and β_r defaulting to β.

    A lower β_r slows the drastic drop of the rejected likelihood. Rewards use the shared β.
    """
    reference_chosen_logps, reference_rejected_logps = _frozen(reference_chosen_logps, reference_rejected_logps)
    beta_chosen = beta if beta_chosen is None else beta_chosen
    beta_rejected = beta if beta_rejected is None else beta_rejected
    logits = (beta_chosen * (policy_chosen_logps - reference_chosen_logps)
              - beta_rejected * (policy_rejected_logps - reference_rejected_logps))
    losses = -F.logsigmoid(logits)
    return (losses, *_rewards(policy_chosen_logps, policy_rejected_logps,
                              reference_chosen_logps, reference_rejected_logps, beta))


@_loss(needs_chosen_nll=True)
def dpo_sft_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                 reference_chosen_logps: Tensor, reference_rejected_logps: Tensor, *,
                 beta: float, alpha: float = 0.1, label_smoothing: float = 0.0,
                 chosen_nll: Tensor | None = None, **_: object) -> LossOutput:
    """DPO + SFT ("3D-Properties" mitigation; RPO, Pang et al. 2024, arXiv 2404.19733):
    ``dpo + α · chosen_nll``, chosen_nll being the chosen answer's mean per-token NLL."""
    nll = _require_nll("dpo_sft", chosen_nll)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
        beta=beta, label_smoothing=label_smoothing)
    return losses + alpha * nll, chosen_rewards, rejected_rewards


#: Registry of loss name -> function (DESIGN.md).
LOSSES: dict[str, Callable[..., LossOutput]] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "hinge": hinge_loss,
    "slic": slic_loss,
    "minor_dpo": minor_dpo_loss,
    "flex_dpo": flex_dpo_loss,
    "dpo_sft": dpo_sft_loss,
}


def get_loss(name: str) -> Callable[..., LossOutput]:
    """The loss registered under ``name``; an unknown name raises ValueError listing the valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss '{name}'; valid losses: {', '.join(sorted(LOSSES))}") from None
