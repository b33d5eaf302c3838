"""``prefwork toy``: a short run (1 seed, 2 losses, few steps) writes the tables and one PNG per
scenario, prints the summary table, and takes its tuple options as space-separated lists."""
from __future__ import annotations

import csv
import json

from prefwork.flows.cli import build_parser, main
from prefwork.flows.commands.toy import config_from_args
from prefwork.train.toy import SCENARIOS, TOY_LOSSES, ToyConfig


def test_toy_options_map_to_the_config():
    args = build_parser().parse_args(["toy", "--losses", "dpo", "ipo", "--seeds", "3", "4", "--steps", "7",
                                      "--scenarios", "off_policy", "--no-plots"])
    cfg = config_from_args(args)
    assert cfg.losses == ("dpo", "ipo") and cfg.seeds == (3, 4) and cfg.scenarios == ("off_policy",)
    assert cfg.steps == 7 and cfg.plots is False and cfg.beta == ToyConfig().beta
    default = config_from_args(build_parser().parse_args(["toy"]))
    assert default == ToyConfig()  # no option given: exactly the documented defaults
    assert default.losses == TOY_LOSSES


def test_prefwork_toy_writes_pngs_and_the_summary(tmp_path, capsys):
    out = tmp_path / "toy"
    code = main(["toy", "--losses", "dpo", "dpo_sft", "--seeds", "0", "--steps", "30", "--sft-steps", "100",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    for scenario in SCENARIOS:
        png = out / f"toy_{scenario}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plot: {png}" in printed
        assert scenario in printed
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(SCENARIOS) * 2 and {r["loss"] for r in rows} == {"dpo", "dpo_sft"}
    assert json.loads((out / "config.json").read_text())["steps"] == 30
    assert (out / "history.csv").exists()
    assert "toy summary" in printed and "dpo_sft" in printed
    findings = json.loads((out / "findings.json").read_text())
    assert "the paper's findings" in printed and len(findings) == 8  # every finding applies to dpo + dpo_sft
    assert all(f["seeds"] == 1 and f["held"] + len(f["failing"]) == 1 for f in findings)
    # a run too short for the 20-step drop window still checks what it can
    assert main(["toy", "--losses", "dpo", "--steps", "5", "--sft-steps", "5", "--no-plots", "--out", str(tmp_path / "s")]) == 0


def test_prefwork_toy_unknown_loss_is_a_clear_error(tmp_path, capsys):
    assert main(["toy", "--losses", "dpo", "nope", "--steps", "2", "--sft-steps", "2", "--no-plots",
                 "--out", str(tmp_path)]) == 1
    assert "valid losses" in capsys.readouterr().err
