"""The 3D-properties toy model: why DPO drops, degrades and disperses, in one minute on a CPU.

What: 4 prompts, 10 responses. Response ``i`` (0..3) is prompt ``i``'s chosen answer, ``4 + i`` its
rejected one, responses 8 and 9 never occur in the data. The policy is a 3-layer MLP from a one-hot
prompt to logits over the 10 responses. An SFT phase (cross-entropy toward a target distribution)
sets the starting point: chosen and rejected each *likely* or *unlikely* (four scenarios). The
reference is the policy right after SFT; preference training then runs each loss of
``train.losses`` from that same start, full batch, with Adam.

Why: the paper reports three effects of DPO (a drastic drop of the rejected likelihood, degradation
of the chosen likelihood after a peak, dispersion of mass onto responses outside the data) and that
on-policy pairs and an SFT term soften them. This module lets us watch (and test) those effects.

Speed: every (seed, scenario, loss) model is trained at once as one *ensemble* of independent MLPs
(batched matmuls, Adam is element-wise, so this equals training them one by one).

Recorded per step (means over the 4 prompts): ``chosen`` = p(chosen), ``rejected`` = p(rejected),
``unseen`` = p(8) + p(9) (responses never in the data), ``outside`` = 1 - p(chosen) - p(rejected)
(all mass not on the prompt's own pair, including other prompts' answers), and the mean
log-probs ``chosen_logp`` / ``rejected_logp``.

What the defaults show (tests/test_toy.py, each of seeds 0..4): under DPO the rejected log-prob
falls faster than the chosen one rises (except when the chosen starts unlikely and the rejected
likely), p(chosen) peaks then degrades (clearest when the chosen starts likely), mass disperses
outside the pair and onto 8, 9, and dpo_sft ends with a higher p(chosen). The on-policy start loses
less of its chosen peak than the same chosen start with an unlikely rejected answer, and ends with
the most likely chosen answer and the least mass outside the pair of all four starts. Not
reproduced: the smallest peak-to-final drop of all four (the chosen answer of the rejected_likely
start, rising late from 0.02 on the rejected answer's mass, drops less).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from prefwork.train.losses import get_loss

N_PROMPTS = 4
N_RESPONSES = 10
CHOSEN = torch.arange(N_PROMPTS)  # prompt i's chosen response is i
REJECTED = torch.arange(N_PROMPTS) + N_PROMPTS  # prompt i's rejected response is 4 + i
UNSEEN = (8, 9)
SERIES = ("chosen", "rejected", "unseen", "outside", "chosen_logp", "rejected_logp")
# scenario name -> (chosen likely at the start, rejected likely at the start)
SCENARIOS: dict[str, tuple[bool, bool]] = {
    "on_policy": (True, True),
    "chosen_likely": (True, False),
    "rejected_likely": (False, True),
    "off_policy": (False, False),
}
TOY_LOSSES = ("dpo", "ipo", "slic", "minor_dpo", "flex_dpo", "dpo_sft")


@dataclass
class ToyConfig:
    """Settings of the toy run; the defaults are the tuned, documented paper settings."""

    seeds: tuple[int, ...] = field(default=(0,), metadata={
        "help": "Seeds (MLP init). Each seed gets every scenario and loss; the summary has one row "
                "per seed, scenario and loss."})
    losses: tuple[str, ...] = field(default=TOY_LOSSES, metadata={
        "help": "Losses from train.losses to compare (names of the LOSSES registry)."})
    scenarios: tuple[str, ...] = field(default=tuple(SCENARIOS), metadata={
        "help": "Starting scenarios: on_policy (chosen and rejected likely), chosen_likely, "
                "rejected_likely, off_policy (both unlikely)."})
    hidden: int = field(default=128, metadata={
        "help": "Width of the MLP's two hidden layers. At 64 the on-policy effect (a likely rejected "
                "answer degrades the chosen one less) held in 6 of seeds 0-9 and 21 of 10-39; at 96, 128 "
                "and 192 in all of 0-9 (chosen there, lr kept at 1e-3), and at 128 in 29 of 10-39."})
    likely: float = field(default=0.4, metadata={
        "help": "SFT target mass of a 'likely' chosen/rejected response (per prompt)."})
    unlikely: float = field(default=0.02, metadata={
        "help": "SFT target mass of an 'unlikely' chosen/rejected response. The rest of the mass is "
                "spread evenly over the 8 other responses (other prompts' answers and the unseen 8, 9)."})
    sft_steps: int = field(default=300, metadata={"help": "Full-batch Adam steps of the SFT phase."})
    sft_lr: float = field(default=1e-2, metadata={"help": "Adam learning rate of the SFT phase."})
    steps: int = field(default=300, metadata={"help": "Full-batch Adam steps of preference training."})
    lr: float = field(default=1e-3, metadata={
        "help": "Adam learning rate of preference training, chosen once for all losses, scenarios "
                "and seeds (the paper's 5e-7 is for billion-parameter LLMs; this tiny MLP needs "
                "larger steps to show the effects within a few hundred steps)."})
    beta: float = field(default=0.1, metadata={"help": "beta of the DPO family (paper: 0.1)."})
    beta_chosen: float = field(default=0.1, metadata={"help": "flex_dpo: beta of the chosen log-ratio."})
    beta_rejected: float = field(default=0.05, metadata={
        "help": "flex_dpo: beta of the rejected log-ratio (lower than beta_chosen slows the drop)."})
    delta: float = field(default=1.0, metadata={"help": "slic: margin delta."})
    alpha: float = field(default=1.0, metadata={
        "help": "Weight of the chosen NLL term in slic and dpo_sft."})
    plots: bool = field(default=True, metadata={"help": "Write one PNG per scenario."})


def sft_targets(scenario: str, likely: float, unlikely: float) -> torch.Tensor:
    """Target distribution (4, 10) of the SFT phase for one scenario.

    Chosen and rejected get ``likely`` or ``unlikely`` mass; the remaining mass is spread evenly
    over the other 8 responses so that dispersion onto them (and onto 8, 9) is measurable.
    """
    chosen_likely, rejected_likely = SCENARIOS[scenario]
    pc = likely if chosen_likely else unlikely
    pr = likely if rejected_likely else unlikely
    targets = torch.full((N_PROMPTS, N_RESPONSES), (1.0 - pc - pr) / (N_RESPONSES - 2))
    rows = torch.arange(N_PROMPTS)
    targets[rows, CHOSEN] = pc
    targets[rows, REJECTED] = pr
    return targets


class EnsembleMLP(nn.Module):
    """M independent 3-layer MLPs (one-hot prompt (4,) -> logits (10,)), run as batched matmuls.

    Weights have a leading model axis: w1 (M, 4, H), w2 (M, H, H), w3 (M, H, 10), biases (M, 1, ·).
    """

    def __init__(self, params: dict[str, torch.Tensor]):
        super().__init__()
        self.p = nn.ParameterDict({k: nn.Parameter(v.clone()) for k, v in params.items()})

    @classmethod
    def init(cls, seeds: list[int], hidden: int) -> "EnsembleMLP":
        """One model per seed, nn.Linear-style uniform init from a generator seeded by ``seed``."""
        shapes = {"1": (N_PROMPTS, hidden), "2": (hidden, hidden), "3": (hidden, N_RESPONSES)}
        per_model = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            params = {}
            for name, (fan_in, fan_out) in shapes.items():
                bound = fan_in ** -0.5
                params["w" + name] = (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound
                params["b" + name] = (torch.rand(1, fan_out, generator=gen) * 2 - 1) * bound
            per_model.append(params)
        return cls({k: torch.stack([p[k] for p in per_model]) for k in per_model[0]})

    def repeat(self, counts: int) -> "EnsembleMLP":
        """A new ensemble with each model copied ``counts`` times in a row (model m -> m*counts..)."""
        return EnsembleMLP({k: v.detach().repeat_interleave(counts, dim=0) for k, v in self.p.items()})

    def forward(self) -> torch.Tensor:
        """Log-probs (M, 4, 10) of every response for every prompt (the input is the identity)."""
        p = self.p
        h = torch.relu(p["w1"] + p["b1"])  # one-hot @ w1 == w1's rows: (M, 4, H)
        h = torch.relu(h @ p["w2"] + p["b2"])
        return torch.log_softmax(h @ p["w3"] + p["b3"], dim=-1)


def run_sft(model: EnsembleMLP, targets: torch.Tensor, steps: int, lr: float) -> None:
    """Train ``model`` in place toward ``targets`` (M, 4, 10) by cross-entropy, full batch, Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = -(targets * model()).sum(-1).mean(-1).sum()  # each model's own mean, summed
        opt.zero_grad()
        loss.backward()
        opt.step()


def pair_logps(logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected log-probs, each (M, 4), from all log-probs (M, 4, 10)."""
    rows = torch.arange(N_PROMPTS)
    return logps[:, rows, CHOSEN], logps[:, rows, REJECTED]


def loss_options(name: str, config: ToyConfig, chosen_nll: torch.Tensor) -> dict:
    """The options each loss takes in the toy (single-token answers: the NLL is -log p(chosen))."""
    if name == "flex_dpo":
        return {"beta_chosen": config.beta_chosen, "beta_rejected": config.beta_rejected}
    if name == "slic":
        return {"delta": config.delta, "alpha": config.alpha, "chosen_nll": chosen_nll}
    if name == "dpo_sft":
        return {"alpha": config.alpha, "chosen_nll": chosen_nll}
    return {}


def series(logps: torch.Tensor) -> torch.Tensor:
    """The recorded series (4, M): p(chosen), p(rejected), p(8) + p(9), 1 - both, prompt means."""
    lc, lr = pair_logps(logps)
    chosen, rejected = lc.exp(), lr.exp()
    unseen = logps[..., list(UNSEEN)].exp().sum(-1)
    return torch.stack([chosen, rejected, unseen, 1 - chosen - rejected, lc, lr]).mean(-1)


def train_preference(model: EnsembleMLP, losses: list[str], config: ToyConfig) -> np.ndarray:
    """Preference-train ``model`` in place; returns the series (M, len(SERIES), steps + 1).

    Models are grouped by loss: models ``[k*n, (k+1)*n)`` use ``losses[k]`` (n = M / len(losses)).
    The reference is the model as given (frozen log-probs, since the input never changes).
    """
    with torch.no_grad():
        ref_c, ref_r = pair_logps(model())
    fns = [get_loss(name) for name in losses]
    n = ref_c.shape[0] // len(losses)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = []
    for step in range(config.steps + 1):
        logps = model()
        history.append(series(logps.detach()))
        if step == config.steps:
            break
        pol_c, pol_r = pair_logps(logps)
        total = logps.new_zeros(())
        for k, (name, fn) in enumerate(zip(losses, fns)):
            part = slice(k * n, (k + 1) * n)
            pc, pr = pol_c[part].reshape(-1), pol_r[part].reshape(-1)
            opts = loss_options(name, config, -pc)
            out, _, _ = fn(pc, pr, ref_c[part].reshape(-1), ref_r[part].reshape(-1),
                           beta=config.beta, **opts)
            total = total + out.reshape(n, N_PROMPTS).mean(-1).sum()
        opt.zero_grad()
        total.backward()
        opt.step()
    return torch.stack(history, dim=-1).permute(1, 0, 2).numpy()


def simulate(config: ToyConfig) -> dict[tuple[int, str, str], dict[str, np.ndarray]]:
    """Run SFT then preference training for every (seed, scenario, loss); no files written.

    Returns (seed, scenario, loss) -> {series name: (steps + 1,) array}.
    """
    torch.set_num_threads(1)  # the machines are shared; the ensemble is tiny anyway
    seeds, scenarios, losses = list(config.seeds), list(config.scenarios), list(config.losses)
    for s in scenarios:
        if s not in SCENARIOS:
            raise ValueError(f"unknown toy scenario {s!r}; valid: {', '.join(SCENARIOS)}")
    # SFT ensemble: index seed * S + scenario; scenarios of one seed share the init.
    model = EnsembleMLP.init(seeds, config.hidden).repeat(len(scenarios))
    targets = torch.stack([sft_targets(s, config.likely, config.unlikely) for s in scenarios])
    run_sft(model, targets.repeat(len(seeds), 1, 1), config.sft_steps, config.sft_lr)
    # Preference ensemble: index loss * (seeds * S) + seed * S + scenario.
    pref = EnsembleMLP({k: v.detach().repeat(len(losses), *([1] * (v.dim() - 1)))
                        for k, v in model.p.items()})
    hist = train_preference(pref, losses, config)
    out = {}
    for m in range(hist.shape[0]):
        loss, rest = divmod(m, len(seeds) * len(scenarios))
        seed, scen = divmod(rest, len(scenarios))
        key = (seeds[seed], scenarios[scen], losses[loss])
        out[key] = {name: hist[m, j] for j, name in enumerate(SERIES)}
    return out


def degradation(h: dict[str, np.ndarray]) -> float:
    """How much of its best the chosen answer lost: peak minus final p(chosen)."""
    return float(h["chosen"].max() - h["chosen"][-1])


def summarize(histories: dict[tuple[int, str, str], dict[str, np.ndarray]]) -> list[dict]:
    """One row per (seed, scenario, loss): start/peak/final chosen, final rejected/unseen/outside.

    ``degradation`` = peak chosen - final chosen (how much of its best the chosen answer lost).
    """
    rows = []
    for (seed, scenario, loss), h in histories.items():
        chosen = h["chosen"]
        rows.append({
            "seed": seed, "scenario": scenario, "loss": loss,
            "start_chosen": float(chosen[0]), "peak_chosen": float(chosen.max()),
            "peak_step": int(chosen.argmax()), "final_chosen": float(chosen[-1]),
            "degradation": degradation(h),
            "final_rejected": float(h["rejected"][-1]), "final_unseen": float(h["unseen"][-1]),
            "final_outside": float(h["outside"][-1]),
        })
    return rows
