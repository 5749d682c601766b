"""The gate's paired AUROC test and its decisions on planted cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from propensity.config import GateConfig
from propensity.training.gate import decide, paired_auc_test

GATE = GateConfig(min_auc=0.6, min_lift_over_baseline=0.0, max_auc_drop=0.01, significance=0.05)


def planted(n: int, seed: int = 0):
    """Labels from a latent score, and scorers that see the latent through more or less noise."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * latent - 1.5)))).astype(np.float32)

    def seen(noise: float) -> np.ndarray:
        return latent + noise * rng.normal(size=n)

    return y, seen


def test_paired_test_agrees_with_torchmetrics_and_a_bootstrap():
    y, seen = planted(3000)
    a, b = seen(0.5), seen(1.0)
    t = paired_auc_test(y, a, b)
    for scores, auc in ((a, t["auc_a"]), (b, t["auc_b"])):
        ref = float(binary_auroc(torch.from_numpy(scores).float(), torch.from_numpy(y).long()))
        assert auc == pytest.approx(ref, abs=1e-6)
    # Standard error of the difference: DeLong against 400 paired bootstrap resamples.
    rng = np.random.default_rng(1)
    diffs = []
    for _ in range(400):
        idx = rng.integers(0, len(y), len(y))
        r = paired_auc_test(y[idx], a[idx], b[idx])
        diffs.append(r["difference"])
    assert t["se"] == pytest.approx(np.std(diffs), rel=0.2)
    assert t["interval"][0] < t["difference"] < t["interval"][1]
    assert t["difference"] > 0 and t["p_value_a_below_b"] > 0.99


def test_a_clearly_worse_candidate_is_rejected_and_an_equal_one_accepted():
    y, seen = planted(4000, seed=2)
    champion, base = seen(0.4), seen(1.5)
    worse = seen(1.0)  # AUROC ~0.05 lower on 4000 rows: far beyond noise
    rejected = decide(GATE, y[:, None], ["t"], worse[:, None], base[:, None], champion[:, None],
                      ["t"])
    assert rejected["decision"] == "rejected"
    assert "below the champion's" in rejected["reasons"][0] and "DeLong" in rejected["reasons"][0]
    assert rejected["comparisons"]["t"]["champion"]["significant_drop"] is True

    equal = champion + 0.02 * np.random.default_rng(3).normal(size=len(y))
    approved = decide(GATE, y[:, None], ["t"], equal[:, None], base[:, None], champion[:, None],
                      ["t"])
    assert approved["decision"] == "approved", approved["reasons"]
    low, high = approved["comparisons"]["t"]["champion"]["interval"]
    assert low < 0 < high


def test_a_drop_inside_the_noise_of_a_small_validation_set_does_not_block():
    y, seen = planted(300, seed=4)
    champion = seen(0.8)
    candidate = seen(0.9)  # a little worse, but 300 rows cannot tell
    d = decide(GATE, y[:, None], ["t"], candidate[:, None], None, champion[:, None], ["t"])
    drop = -d["comparisons"]["t"]["champion"]["difference"]
    assert drop > GATE.max_auc_drop  # beyond the fixed threshold ...
    assert d["decision"] == "approved"  # ... but not significant
    strict = GateConfig(max_auc_drop=0.01, significance=0.99)  # nearly any drop counts
    assert decide(strict, y[:, None], ["t"], candidate[:, None], None, champion[:, None],
                  ["t"])["decision"] == "rejected"


def test_losing_to_the_baseline_is_rejected_with_the_lift():
    y, seen = planted(3000, seed=5)
    candidate, base = seen(1.2), seen(0.6)
    d = decide(GATE, y[:, None], ["t"], candidate[:, None], base[:, None], None)
    assert d["decision"] == "rejected"
    [reason] = d["reasons"]
    assert "does not beat the baseline" in reason and "lift -0." in reason
    lenient = GateConfig(min_lift_over_baseline=-0.5)
    assert decide(lenient, y[:, None], ["t"], candidate[:, None], base[:, None],
                  None)["decision"] == "approved"


def test_min_auc_and_a_target_the_champion_lacks():
    y, seen = planted(2000, seed=6)
    noise = seen(50.0)  # AUROC ~0.5
    d = decide(GATE, y[:, None], ["t"], noise[:, None], None, None)
    assert d["decision"] == "rejected" and "min_auc" in d["reasons"][0]
    good = seen(0.3)
    two = np.column_stack([good, good])
    d = decide(GATE, np.column_stack([y, y]), ["a", "b"], two, None, good[:, None] * 0, ["a"])
    # The champion (constant scores on "a") is beaten; "b" is compared with nothing.
    assert d["decision"] == "approved" and "champion" not in d["comparisons"]["b"]


def test_a_tie_with_the_baseline_is_not_rejected_by_noise():
    y, seen = planted(3000, seed=7)
    base = seen(0.8)
    tie = base + 0.05 * np.random.default_rng(8).normal(size=len(y))  # the same ranking, jittered
    d = decide(GATE, y[:, None], ["t"], tie[:, None], base[:, None], None)
    assert d["decision"] == "approved", d["reasons"]
    assert d["comparisons"]["t"]["baseline"]["p_value_below_min_lift"] > GATE.significance
    # Asking for a lift the candidate clearly lacks rejects it.
    demanding = GateConfig(min_lift_over_baseline=0.05)
    assert decide(demanding, y[:, None], ["t"], tie[:, None], base[:, None],
                  None)["decision"] == "rejected"
