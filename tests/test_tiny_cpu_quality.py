"""benchmarks/tiny_cpu_quality.py：汇总与 EMA 对照的口径（跑 3 步，只查管道，不查准确率）。"""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import tiny_cpu_quality  # noqa: E402


def test_summary_median_range_and_goal():
    rows = [{"budget_s": 60.0, "seed": s, "steps": 500 + s, "zero_shot_top1_heldout": a}
            for s, a in ((1, 0.95), (2, 0.80), (3, 0.91))]
    (s,) = tiny_cpu_quality.summarize(rows)
    assert (s["median"], s["min"], s["max"], s["median_steps"]) == (0.91, 0.80, 0.95, 502)
    assert s["goal"] == 0.90 and s["pass"] is True and "median_raw" not in s
    rows[2]["zero_shot_top1_heldout"] = 0.89
    assert tiny_cpu_quality.summarize(rows)[0]["pass"] is False


@pytest.mark.slow
def test_ema_run_reports_the_raw_parameters_of_the_same_run(tmp_path):
    out = tmp_path / "q.json"
    tiny_cpu_quality.main(["--steps-for", "60=3", "--seeds", "1", "--eval-size", "36",
                           "--ema-decay", "0.9", "--warmup-steps", "1", "--threads", "1",
                           "--out", str(tmp_path / "runs"), "--json", str(out)])
    got = json.loads(out.read_text(encoding="utf-8"))
    (run,) = got["runs"]
    assert run["steps"] == 3 and run["mode"] == "steps"
    for key in ("zero_shot_top1_heldout", "zero_shot_top1_heldout_raw"):
        assert 0.0 <= run[key] <= 1.0
    assert got["summary"][0]["median_raw"] == run["zero_shot_top1_heldout_raw"]
    assert got["machine"]["cpu_model"]
