"""python -m lossbench.claims: the protocols compose, the per-run measurements the claims read match hand computations,
the data options the protocols need do what they say, the verdict rules give the verdicts synthetic results were built
for, and ``--quick`` on tiny generated data writes every section, verdict and figure (and a re-run reuses every job)."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ENV, compose, tiny_overrides
from hydra.utils import instantiate
from idx import write_indexed_family, write_mnist_family
from omegaconf import OmegaConf
from scipy import stats as scipy_stats
from statsmodels.stats.proportion import proportion_confint

from lossbench import analysis, stats
from lossbench.claims import evaluate, rules, write
from lossbench.claims.protocols import CLAIMS, PROTOCOLS, design, portable, tuned_overrides, written
from lossbench.claims.results import METRICS, OVERFIT_ACC, STILL_IMPROVING, TRAIN_INPUT_MARGIN
from lossbench.claims.rules import Case
from lossbench.config import validate
from lossbench.metrics import confidence, input_margins, logit_margins, margins
from lossbench.noise import corrupt_images

FULL_JOBS = {
    "claim_tuning": 36,
    "claim_tuning_binary": 12,
    "claim_binary": 32,
    "claim_margin": 54,
    "claim_losses": 80,
    "claim_outliers": 36,
    "claim_label_noise": 20,
    "claim_overfitting": 80,
}
QUICK_JOBS = {
    "claim_tuning": 12,
    "claim_tuning_binary": 4,
    "claim_binary": 6,
    "claim_margin": 18,
    "claim_losses": 15,
    "claim_outliers": 18,
    "claim_label_noise": 12,
    "claim_overfitting": 30,
}
MINE = ("claim_tuning", "claim_tuning_binary", "claim_binary", "claim_margin", "claim_losses", "claim_overfitting")
"""The protocols of claims 2-7 and the tuning (claim_outliers is claim 1's, claim_label_noise claim 8's)."""

# ------------------------------------------------------------------------------------------ protocols


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_each_protocol_composes_into_the_grid_its_header_promises(name: str) -> None:
    cfg = compose(f"+experiment={name}", hydra_config=True)
    validate(cfg)
    assert cfg.tracking.experiment == name and cfg.data.name == "fashion_mnist" and cfg.threads == 1
    full, quick = design(PROTOCOLS[name], [], False), design(PROTOCOLS[name], [], True)
    assert full.jobs == FULL_JOBS[name] and quick.jobs == QUICK_JOBS[name]
    if PROTOCOLS[name].tunes:  # one seed, the same three rates for every loss x model: the same budget
        assert full.grid["seed"] == ["0"] and full.grid["optimizer.lr"] == ["0.0003", "0.001", "0.003"]
    elif name in MINE:  # the pilot has three seeds: the fewest a paired test reads, so its spread sizes the full run
        assert len(quick.grid["seed"]) == 3 <= len(full.grid["seed"])
        assert cfg.data.redraw is True and full.fixed["a seed redraws"].startswith("the validation split")
        assert "tuned per loss and model" in full.fixed["optimizer"]
    assert quick.fixed["epochs"] < full.fixed["epochs"]
    assert "data.train_size" in full.grid or quick.fixed["training images"] < full.fixed["training images"]


def test_the_predictions_are_written_for_the_protocols_that_run_them() -> None:
    """conf/claims.yaml: every prediction parses, reads a measure the rules know, is made where its protocol runs
    (its `where` values are swept or fixed there), and its protocol sweeps at least the seeds it asks for."""
    specs = written()
    everything = [*specs["controls"], *(p for ps in specs["claims"].values() for p in ps)]
    assert sorted(specs["claims"]) == [2, 3, 4, 5, 7] and len(everything) == 26
    for spec in everything:
        p = rules.prediction_of(spec)
        cfg = compose(f"+experiment={p.protocol}", hydra_config=True)
        seeds = design(PROTOCOLS[p.protocol], [], False).grid["seed"]
        assert len(seeds) >= p.seeds, spec
        swept = {k: v for k, v in design(PROTOCOLS[p.protocol], [], False).grid.items()}
        column_of = {"model": "model", "weight_decay": "optimizer.weight_decay", "label_noise": "data.label_noise.rate"}
        column_of["train_size"] = "data.train_size"
        for key, value in p.where:
            values = [float(v) if key != "model" else v for v in swept.get(column_of[key], [])]
            assert value in values or OmegaConf.select(cfg, column_of[key]) == value, (spec, key)
    assert rules.prediction_of(specs["claims"][7][0]).sign == 0 and specs["claims"][7][0]["margin"] == 0.01
    with pytest.raises(ValueError, match="needs its margin"):
        rules.prediction_of({**specs["claims"][7][0], "margin": None})


def test_every_claim_is_tested_by_a_protocol_and_the_user_overrides_win() -> None:
    assert [c.number for c in CLAIMS] == list(range(1, 9))
    assert all(set(c.protocols) <= set(PROTOCOLS) for c in CLAIMS)
    binary = design(PROTOCOLS["claim_binary"], ["trainer.max_epochs=2", "seed=range(0,5)"], True)
    assert binary.fixed["epochs"] == 2 and binary.grid["seed"] == ["0", "1", "2", "3", "4"]
    assert binary.fixed["data"] == "fashion_mnist, classes [0, 6] relabelled"
    assert compose("+experiment=claim_binary").model.net.num_classes == 2


# ------------------------------------------------------------------------------------------ the data options


def test_data_classes_keeps_those_classes_relabelled_in_their_order(tmp_path: Path) -> None:
    written = write_indexed_family(tmp_path, "MNIST", 600, 200)
    node = compose("data=mnist").data
    dm = instantiate(
        node, root=str(tmp_path), download=False, val_size=20, train_eval_size=10, classes=[6, 0], num_classes=2
    )
    s = dm.load()
    test_labels = written["test"][1]
    expected = np.where(test_labels[np.isin(test_labels, [6, 0])] == 6, 0, 1)  # 6 -> 0, 0 -> 1
    assert s.test_y.tolist() == expected.tolist()
    assert set(s.train_y.tolist()) == {0, 1} and len(s.train_y) + 20 == int(np.isin(written["train"][1], [0, 6]).sum())


def test_input_noise_corrupts_exactly_its_share_of_training_images_and_nothing_else(tmp_path: Path) -> None:
    write_indexed_family(tmp_path, "MNIST", 600, 200)
    node = compose("data=mnist").data
    kw = {"root": str(tmp_path), "download": False, "val_size": 100, "train_eval_size": 50}
    clean = instantiate(node, **kw).load()
    noisy = instantiate(node, **kw, input_noise={"rate": 0.4, "kind": "uniform", "seed": 0}).load()
    changed = (clean.train_x != noisy.train_x).flatten(1).any(dim=1)
    assert int(changed.sum()) == 200  # round(0.4 x 500 training images)
    assert torch.equal(clean.val_x, noisy.val_x) and torch.equal(clean.test_x, noisy.test_x)
    assert torch.equal(clean.train_y, noisy.train_y), "a corrupted image keeps its label"


def test_corrupt_images_depends_on_its_own_seed_only() -> None:
    images = torch.zeros(50, 1, 4, 4, dtype=torch.uint8)
    a, report = corrupt_images(images, 0.3, "uniform", seed=1)
    b, _ = corrupt_images(images, 0.3, "uniform", seed=1)
    c, _ = corrupt_images(images, 0.3, "uniform", seed=2)
    assert report.corrupted == 15 and int(a.flatten(1).any(dim=1).sum()) == 15
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(images.sum()) == 0, "the input is left untouched"


# ------------------------------------------------------------------------------------------ per-run metrics

LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 4.0], [5.0, 0.0, 0.0], [0.0, 0.2, 0.1]])
TARGET = torch.tensor([0, 2, 2, 1, 1])


def test_logit_margins_and_their_percentiles_by_hand() -> None:
    # z_y - max other: 2-1, 1-3, 4-1, 0-5, 0.2-0.1
    expected = [1.0, -2.0, 3.0, -5.0, 0.1]
    assert logit_margins(LOGITS, TARGET).tolist() == pytest.approx(expected)
    distances = torch.tensor([0.5, -1.0, 2.0, -3.0, 0.25])
    got = {k: float(v) for k, v in margins(LOGITS, TARGET, distances).items()}
    ordered = sorted(expected)  # -5, -2, 0.1, 1, 3: linear interpolation between order statistics, as numpy
    assert got["margin_q50"] == pytest.approx(0.1)
    assert got["margin_q25"] == pytest.approx(-2.0) and got["margin_q75"] == pytest.approx(1.0)
    assert got["margin_q10"] == pytest.approx(ordered[0] + 0.4 * (ordered[1] - ordered[0]))
    assert got["margin_ge1"] == pytest.approx(2 / 5)  # 1.0 and 3.0
    assert got["input_margin_q50"] == pytest.approx(0.25)


def test_input_margin_of_a_linear_model_is_the_exact_distance_to_the_boundary() -> None:
    net = torch.nn.Linear(2, 3, bias=True)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        net.bias.zero_()
    x, y = torch.tensor([[3.0, 1.0], [1.0, 2.0]]), torch.tensor([0, 0])
    logits, distance = input_margins(net, x, y)
    # image 1: z = (3, 1, -4), margin 2 against class 1, |w0 - w1| = sqrt(2); image 2: z = (1, 2, -3), margin -1
    assert torch.equal(logits, net(x).detach())
    assert distance.tolist() == pytest.approx([2 / math.sqrt(2), -1 / math.sqrt(2)])


def test_input_margin_is_the_nearest_boundary_over_all_classes_not_the_runner_ups() -> None:
    """The runner-up (class 1, logit 0) has its boundary at distance 1.0; class 2's logit is lower (-0.01) but its
    weights differ far more from class 0's, and its boundary lies at 1.01 / 6.824 = 0.148: the SVM's margin is that."""
    net = torch.nn.Linear(2, 3, bias=True)
    w = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 6.824]])
    b = torch.tensor([0.0, 0.0, -1.01])
    with torch.no_grad():
        net.weight.copy_(w)
        net.bias.copy_(b)
    x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    logits, distance = input_margins(net, x, y)
    assert logits[0].tolist() == pytest.approx([1.0, 0.0, -0.01]) and logit_margins(logits, y).tolist() == [1.0]
    runner_up = (1.0 - 0.0) / float((w[0] - w[1]).norm())
    nearest = (1.0 + 0.01) / float((w[0] - w[2]).norm())
    assert runner_up == pytest.approx(1.0) and nearest == pytest.approx(0.148, abs=5e-4)
    assert float(distance) == pytest.approx(nearest, rel=1e-5)
    # the point that distance away along (w2 - w0) lies on the boundary z0 = z2, and no boundary is nearer
    on_boundary = x + float(distance) * (w[2] - w[0]) / (w[2] - w[0]).norm()
    z = net(on_boundary).detach()[0]
    assert float(z[0]) == pytest.approx(float(z[2]), abs=1e-5) and float(z[0]) > float(z[1])


def test_input_margin_of_a_network_is_the_first_order_distance_per_class_minimised() -> None:
    """An MLP: each image's margin, against the Jacobian taken class by class with torch.autograd.functional."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4)).eval()
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 0, 1])
    _, distance = input_margins(net, x, y)
    for i in range(6):
        jac = torch.autograd.functional.jacobian(net, x[i])  # (4, 5)
        z = net(x[i]).detach()
        others = [j for j in range(4) if j != int(y[i])]
        expected = min(float((z[y[i]] - z[j]) / (jac[y[i]] - jac[j]).norm()) for j in others)
        assert float(distance[i]) == pytest.approx(expected, rel=1e-5)


CAL_LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, -0.5], [-1.0, 0.0, 3.0], [1.0, 1.2, 0.8]])
CAL_TARGET = np.array([0, 0, 2, 1])


def _sigmoid_normalised(z: np.ndarray) -> np.ndarray:
    q = 1 / (1 + np.exp(-z))
    return q / q.sum(axis=1, keepdims=True)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: equal-width bins of the top probability, |accuracy - confidence| weighted."""
    conf, hit = p.max(axis=1), (p.argmax(axis=1) == y)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(hit[which == b].mean() - conf[which == b].mean()) * (which == b).mean() for b in set(which)))


def test_each_loss_is_scored_on_its_own_probabilities_by_hand() -> None:
    from lossbench.metrics import calibration, own_log_probs

    z, y = torch.tensor(CAL_LOGITS), torch.tensor(CAL_TARGET)
    sig = _sigmoid_normalised(CAL_LOGITS)
    np.testing.assert_allclose(own_log_probs(z, "sigmoid").exp().numpy(), sig, rtol=1e-6)
    np.testing.assert_allclose(own_log_probs(z, "softmax").exp().numpy(), _softmax(CAL_LOGITS), rtol=1e-6)
    got = {k: float(v) for k, v in calibration(z, y, "sigmoid").items()}
    assert got == pytest.approx({"own_nll": _nll(sig, CAL_TARGET), "own_ece": _ece(sig, CAL_TARGET)}, rel=1e-5)
    soft = {k: float(v) for k, v in calibration(z, y, "softmax").items()}
    assert soft["own_nll"] == pytest.approx(_nll(_softmax(CAL_LOGITS), CAL_TARGET), rel=1e-5)
    assert soft["own_nll"] == pytest.approx(float(torch.nn.functional.cross_entropy(z.float(), y)), rel=1e-6)
    assert soft["own_nll"] != pytest.approx(got["own_nll"], rel=1e-3), "sigmoids and softmax are other distributions"


@pytest.mark.parametrize("form, probs", [("softmax", _softmax), ("sigmoid", _sigmoid_normalised)])
def test_temperature_scaling_minimises_the_validation_nll_and_is_applied_to_the_test_logits(form, probs) -> None:
    from scipy.optimize import minimize_scalar

    from lossbench.metrics import calibration, fit_temperature

    rng = np.random.default_rng(0)
    val_y = rng.integers(0, 3, 200)
    val_z = rng.normal(size=(200, 3)) * 2 + 4 * np.eye(3)[val_y] * (rng.random(200) < 0.7)[:, None]
    best = minimize_scalar(lambda log_t: _nll(probs(val_z / np.exp(log_t)), val_y), bounds=(-4, 4), method="bounded")
    t = float(fit_temperature(torch.tensor(val_z), torch.tensor(val_y), form))
    assert t == pytest.approx(np.exp(best.x), rel=1e-3) and t != pytest.approx(1.0, abs=0.05)
    got = calibration(
        torch.tensor(CAL_LOGITS), torch.tensor(CAL_TARGET), form, (torch.tensor(val_z), torch.tensor(val_y))
    )
    scaled = probs(CAL_LOGITS / t)
    assert float(got["own_nll_ts"]) == pytest.approx(_nll(scaled, CAL_TARGET), rel=1e-4)
    assert float(got["own_ece_ts"]) == pytest.approx(_ece(scaled, CAL_TARGET), rel=1e-4)
    t_softmax = float(fit_temperature(torch.tensor(val_z), torch.tensor(val_y), "softmax"))
    separated = float(fit_temperature(torch.tensor(np.eye(3)[val_y]), torch.tensor(val_y), form))
    assert 0.05 <= separated < 0.2, "a perfectly separated validation set sends T down, never below 0.05"
    assert float(got["nll_ts"]) == pytest.approx(_nll(_softmax(CAL_LOGITS / t_softmax), CAL_TARGET), rel=1e-4)
    assert float(got["ece_ts"]) == pytest.approx(_ece(_softmax(CAL_LOGITS / t_softmax), CAL_TARGET), rel=1e-4)


def test_confidence_of_wrong_predictions_and_what_ce_gives_them_by_hand() -> None:
    got = {k: float(v) for k, v in confidence(LOGITS, TARGET, F.cross_entropy).items()}
    p = LOGITS.softmax(dim=1)
    top, pred = p.max(dim=1)
    wrong = pred != TARGET  # images 2 and 4 (0-based 1 and 3)
    assert wrong.tolist() == [False, True, False, True, False]
    flagged = [i for i in range(5) if wrong[i] and top[i] >= 0.9]  # image 4: softmax(5, 0, 0) tops 0.987
    assert flagged == [3]
    per_image = [-math.log(float(p[i, TARGET[i]])) for i in range(5)]
    grads = [float((p[i] - F.one_hot(TARGET[i], 3)).norm()) for i in range(5)]  # d CE / d z = softmax - one-hot
    assert got["wrong_conf"] == pytest.approx(float(top[wrong].mean()))
    assert got["confident_wrong"] == pytest.approx(1 / 5)
    assert got["confident_wrong_loss"] == pytest.approx(per_image[3] / np.mean(per_image), rel=1e-5)
    assert got["confident_wrong_grad"] == pytest.approx(grads[3] / np.mean(grads), rel=1e-5)


def test_no_confident_mistake_gives_nan_not_zero() -> None:
    got = confidence(torch.tensor([[0.0, 0.1], [0.3, 0.0]]), torch.tensor([0, 0]), F.cross_entropy)
    assert float(got["confident_wrong"]) == 0.0
    assert math.isnan(float(got["confident_wrong_loss"])) and math.isnan(float(got["confident_wrong_grad"]))


def test_epochs_and_seconds_to_the_target_by_hand() -> None:
    curves = {"val/acc": [0.5, 0.79, 0.81, 0.9], "time/epoch_s": [1.0, 2.0, 3.0, 4.0]}
    assert analysis.epochs_to(curves, 0.8) == 3 and analysis.seconds_to(curves, 3) == 6.0
    assert analysis.epochs_to(curves, 0.95) is None and math.isnan(analysis.seconds_to(curves, None))
    figures = analysis.summary_figures(
        curves | {"val/nll": [1.0] * 4, "train_eval/nll": [1.0] * 4}, analysis.Rule(target_acc=0.9)
    )
    assert figures["epochs_to_target"] == 4 and figures["seconds_to_target"] == 10.0


def test_the_overfitting_rule_read_on_the_own_loss() -> None:
    falling = [1.0 - 0.05 * e for e in range(12)]
    rising = [1.0, 0.8, 0.6, 0.5, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85]
    epochs = {"val/acc": [0.8] * 12}  # a run's last epoch is its last validation result
    overfits = analysis.own_loss_figures({"val/loss": rising, "train_eval/loss": falling, **epochs}, analysis.Rule())
    assert overfits["loss_has_onset"] == 1.0 and overfits["loss_onset_epoch"] in (4, 5)
    assert overfits["loss_rise"] == pytest.approx((0.8 - 0.5) / 0.5, abs=0.06)  # smoothed over 3 epochs
    flat = analysis.own_loss_figures({"val/loss": [0.5] * 12, "train_eval/loss": falling, **epochs}, analysis.Rule())
    assert flat["loss_has_onset"] == 0.0 and "loss_onset_epoch" not in flat


# ------------------------------------------------------------------------------------------ rules


def run_row(protocol: str, loss: str, model: str, seed: int, **values) -> dict:
    """One run of the tidy table, as lossbench.claims.results writes it; metrics NaN unless given."""
    row = {
        "protocol": protocol,
        "run_id": f"{protocol}-{loss}-{model}-{seed}",
        "run": f"{loss}-{model}-s{seed}",
        "loss": loss,
        "model": model,
        "seed": str(seed),
        "test_images": 10000,
        "label_noise": 0.0,
        "input_noise": 0.0,
        "classes": 10,
        "max_epochs": 15.0,
        "target_acc": 0.8,
        "patience": 3.0,
        "weight_decay": 0.0,
        "lr": 1e-3,
        "train_size": 10000.0,
        "stage": 1,
        **{m: math.nan for m in METRICS},
        OVERFIT_ACC: math.nan,
        STILL_IMPROVING: math.nan,
    }
    row.update({k.replace("__", "/"): v for k, v in values.items()})
    return row


def epochs_table(mae: dict[str, list[float]], mse: dict[str, list[float]], other: str = "mse") -> list[dict]:
    return [
        run_row("claim_losses", loss, model, seed, summary__epochs_to_target=value)
        for loss, by_model in (("mae", mae), (other, mse))
        for model, values in by_model.items()
        for seed, value in enumerate(values)
    ]


def test_claim_2_supported_contradicted_and_undecided_by_a_rank_test() -> None:
    slow = [7.0, 8.0, 9.0, 8.0, 7.0, 9.0, 8.0, 10.0]
    fast = [2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 1.0]
    supported = evaluate.claim_2(epochs_table({"linear": slow, "mlp": slow}, {"linear": fast, "mlp": fast}))
    contradicted = evaluate.claim_2(epochs_table({"linear": fast, "mlp": fast}, {"linear": slow, "mlp": slow}))
    noisy = [3.0, 8.0, 2.0, 9.0, 4.0, 5.0, 6.0, 7.0]
    undecided = evaluate.claim_2(
        epochs_table({"linear": noisy, "mlp": noisy}, {"linear": noisy[::-1], "mlp": noisy[::-1]})
    )
    assert supported.verdict.kind == rules.SUPPORTED and [t.outcome for t in supported.tested] == [rules.HOLDS] * 2
    assert contradicted.verdict.kind == rules.CONTRADICTED
    assert undecided.verdict.kind == rules.NOT_DECIDED and "more seeds" in undecided.verdict.decide
    # the same p-value as scipy's Mann-Whitney U on the two losses' epochs, Holm over the family of 2
    p = scipy_stats.mannwhitneyu(slow, fast, alternative="two-sided").pvalue
    assert supported.tested[0].decision.p_holm == pytest.approx(min(1.0, 2 * p))
    assert "Mann-Whitney" in supported.verdict.rule and "+inf" in supported.verdict.rule


def test_censored_times_are_kept_ranked_last_not_dropped() -> None:
    """MAE reaches the target fast in 3 runs and never in 5; MSE reaches it at epoch 4-5 in all 8. Dropping the
    censored runs would make MAE faster (3 of 3 ahead); kept as +inf, MAE is slower, and decided so."""
    never = math.nan
    mae = [1.0, 1.0, 2.0, never, never, never, never, never]
    mse = [4.0, 5.0, 4.0, 5.0, 4.0, 5.0, 4.0, 5.0]
    rows = epochs_table({"mlp": mae}, {"mlp": mse})
    censored = rules.with_censored_epochs(rows)
    assert [r[rules.EPOCHS_TO_TARGET] for r in censored[:8]] == [1.0, 1.0, 2.0, *[math.inf] * 5]
    assert [r[rules.REACHED] for r in censored[:8]] == [1.0] * 3 + [0.0] * 5
    (tested,) = rules.test_predictions(censored, [evaluate.written(2)[1]])
    assert tested.prediction.where == (("model", "mlp"),)
    assert len(tested.decision.candidate) == 8 and tested.decision.candidate.count(math.inf) == 5
    expected = scipy_stats.mannwhitneyu([1, 1, 2, *[math.inf] * 5], mse, alternative="two-sided").pvalue
    assert tested.decision.p_value == pytest.approx(expected) and tested.outcome == rules.UNDECIDED
    assert "5 of 8 never" in tested.difference
    finding = evaluate.claim_2(rows + epochs_table({"linear": mae}, {"linear": mse}))
    assert "mlp: 5 of 8 mae runs never reached it (censored: kept, ranked last)." in finding.notes


def test_a_mix_of_decided_and_undecided_predictions_is_not_depends() -> None:
    def cases(*outcomes):
        return [
            Case({"model": m, "measure": "NLL"}, o, "3 more seeds") for m, o in zip(("linear", "mlp", "cnn"), outcomes)
        ]

    assert rules.verdict(cases(rules.HOLDS, rules.HOLDS), "r").kind == rules.SUPPORTED
    assert rules.verdict(cases(rules.REVERSED, rules.REVERSED), "r").kind == rules.CONTRADICTED
    assert rules.verdict(cases(rules.REVERSED, rules.NO_DIFFERENCE), "r").kind == rules.CONTRADICTED
    assert rules.verdict(cases(rules.NO_DIFFERENCE, rules.NO_DIFFERENCE), "r").kind == rules.EQUIVALENT
    undecided = rules.verdict(cases(rules.UNDECIDED, rules.UNDECIDED), "r")
    assert undecided.kind == rules.NOT_DECIDED and undecided.decide == "3 more seeds"
    mixed = rules.verdict(cases(rules.HOLDS, rules.UNDECIDED, rules.HOLDS), "r")
    assert mixed.kind == rules.NOT_DECIDED and "depends" not in mixed.text
    assert mixed.text == "2 of 3 predictions decided (holds for linear, cnn; undecided for mlp)"
    assert mixed.decide == "3 more seeds"
    against = rules.verdict(cases(rules.REVERSED, rules.UNDECIDED), "r")
    assert against.kind == rules.NOT_DECIDED and against.text.startswith("1 of 2 predictions decided")
    split = rules.verdict(cases(rules.HOLDS, rules.REVERSED, rules.UNDECIDED), "r")
    assert split.kind == rules.DEPENDS
    assert split.text == "depends on model: holds for linear; reversed for mlp; 1 of 3 not yet decided"
    assert rules.verdict([], "r").kind == rules.NOT_DECIDED


def margin_rows(hinge: dict[float, list[float]], others: dict[float, list[float]]) -> list[dict]:
    rows = []
    for wd in hinge:
        for seed, (h, o) in enumerate(zip(hinge[wd], others[wd])):
            for loss, value in (("hinge", h), ("ce", o), ("mse", o - 0.01)):
                rows.append(
                    run_row("claim_margin", loss, "linear", seed, weight_decay=wd, train_eval__input_margin_q50=value)
                )
    return rows


def test_claim_4_reads_the_training_margin_at_each_l2_penalty() -> None:
    wide, narrow = [2.0, 2.1, 2.05, 1.95, 2.02, 2.08], [1.0, 1.02, 0.99, 1.05, 0.98, 1.01]
    finding = evaluate.claim_4(margin_rows({1e-4: wide, 1e-3: wide}, {1e-4: narrow, 1e-3: narrow}))
    assert finding.verdict.kind == rules.SUPPORTED and len(finding.tested) == 4
    first = finding.tested[0]
    assert first.prediction.block["weight_decay"] == "weight decay 0.0001"
    assert first.decision.paired.differences == pytest.approx([w - n for w, n in zip(wide, narrow)])
    depends = evaluate.claim_4(margin_rows({1e-4: wide, 1e-3: narrow}, {1e-4: narrow, 1e-3: wide}))
    assert depends.verdict.kind == rules.DEPENDS and depends.verdict.text.startswith("depends on weight_decay")
    # test margins, never recorded here: shown as nothing measured, not a crash
    assert {m.measure for m in finding.measured} == {TRAIN_INPUT_MARGIN}


def test_a_synthetic_tie_within_the_margin_is_decided_equivalent() -> None:
    """Claim 7's two-class half: one sigmoid logit and a softmax over two logits are the same model. Seeds whose test
    accuracies differ by a tenth of a point either way: decided equivalent within the 1 pp margin (TOST), not
    'undecided'; 3 pp apart: a difference where a tie was predicted, reversed."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(8):
        for model in ("linear", "mlp"):
            base = 0.85 + rng.normal(0, 0.01)
            rows.append(run_row("claim_binary", "ce", model, seed, classes=2, test_images=2000, test__acc=base))
            tie = base + (0.001 if seed % 2 else -0.001)
            rows.append(run_row("claim_binary", "bce_single", model, seed, classes=2, test_images=2000, test__acc=tie))
    finding = evaluate.claim_7(rows)
    binary = [t for t in finding.tested if t.prediction.protocol == "claim_binary"]
    assert [t.outcome for t in binary] == [rules.HOLDS, rules.HOLDS]
    assert all(t.decision.outcome == stats.EQUIVALENT for t in binary)
    assert binary[0].prediction.expects == "bce_single ≈ ce (±1.00 pp)"
    ten = [t for t in finding.tested if t.prediction.protocol == "claim_losses"]
    assert [t.outcome for t in ten] == [rules.NOT_MEASURED] * 2 and "claim_losses" not in {r["protocol"] for r in rows}
    assert finding.verdict.kind == rules.NOT_DECIDED and "2 of 4 predictions decided" in finding.verdict.text
    apart = [{**r, "test/acc": r["test/acc"] + 0.03} if r["loss"] == "bce_single" else r for r in rows]
    assert [t.outcome for t in evaluate.claim_7(apart).tested[:2]] == [rules.REVERSED] * 2
    # 0.2 pp apart on every seed: the t-test finds a difference, but one too small to matter: still a tie
    close = [{**r, "test/acc": r["test/acc"] + 0.002} if r["loss"] == "bce_single" else r for r in rows]
    (linear, mlp, *_) = evaluate.claim_7(close).tested
    assert linear.decision.outcome == stats.BETTER and linear.within_margin and linear.outcome == rules.HOLDS


def test_a_predicted_difference_inside_its_margin_is_no_difference() -> None:
    """Claim 5 on own probabilities: BCE's own NLL 0.005 above CE's, within the 0.02 margin: no difference (against
    the claim), not 'undecided'."""
    rows = []
    for seed in range(8):
        for model in ("linear", "mlp"):
            for loss, nll in (("ce", 0.40), ("mse", 0.60), ("mae", 0.90), ("bce", 0.405)):
                value = nll + 0.01 * math.sin(seed) * (loss == "ce") + 0.001 * seed
                rows.append(run_row("claim_losses", loss, model, seed, test__own_nll=value))
    finding = evaluate.claim_5(rows)
    outcomes = {(t.prediction.where[0][1], t.prediction.candidate): t.outcome for t in finding.tested}
    assert outcomes[("mlp", "bce")] == rules.NO_DIFFERENCE and outcomes[("mlp", "mse")] == rules.HOLDS
    assert finding.verdict.kind == rules.DEPENDS and "no difference for" in finding.verdict.text


def detector_rows(loss: str, flags: Sequence[tuple[float, float]]) -> list[dict]:
    return [
        run_row("claim_overfitting", loss, "mlp", seed, overfits_on_accuracy=truth, summary__loss_has_onset=flag)
        for seed, (truth, flag) in enumerate(flags)
    ]


def test_claim_6_fails_an_always_yes_detector() -> None:
    """Sensitivity and specificity with Wilson intervals: a val/loss that flags every run (hinge in the last full run:
    12 of 12 flagged, 10 truly overfitting) is reversed, not 'holds'; a detector right in 15 of 16 holds."""
    truth = [1.0, 0.0] * 8
    always = detector_rows("hinge", [(t, 1.0) for t in truth])
    good = detector_rows("ce", [(t, t if i else 1 - t) for i, t in enumerate(truth)])
    finding = evaluate.claim_6(always + good)
    shares = {(m.group["loss"], m.measure): m.interval for m in finding.measured}
    assert shares[("hinge", rules.SENSITIVITY)].mean == 1.0 and shares[("hinge", rules.SPECIFICITY)].mean == 0.0
    low, high = proportion_confint(0, 8, alpha=0.05, method="wilson")
    assert shares[("hinge", rules.SPECIFICITY)].high == pytest.approx(high) and high < 0.5
    assert shares[("ce", rules.SENSITIVITY)].mean == pytest.approx(7 / 8)
    assert shares[("ce", rules.SENSITIVITY)].low == pytest.approx(proportion_confint(7, 8, method="wilson")[0])
    assert finding.verdict.kind == rules.DEPENDS
    assert finding.verdict.text == "depends on the loss: holds for ce; reversed for hinge"
    assert evaluate.claim_6(always).verdict.kind == rules.CONTRADICTED
    nothing_overfits = evaluate.claim_6(detector_rows("mae", [(0.0, 0.0)] * 16))
    assert nothing_overfits.verdict.kind == rules.NOT_DECIDED
    assert "overfitting runs of mae (the design gave none)" in nothing_overfits.verdict.decide


def test_a_failed_positive_control_takes_every_verdict_s_standing() -> None:
    memorised = [
        run_row("claim_overfitting", loss, "mlp", seed, label_noise=0.6, train_size=2000.0, train_eval__memorised=v)
        for seed in range(4)
        for loss, v in (("ce", 0.8 + 0.01 * seed), ("mae", 0.05 + 0.005 * seed))
    ]
    slow = epochs_table(
        {"linear": [9.0, 8.0, 10.0, 9.0, 8.0, 9.0, 10.0, 11.0]}, {"linear": [2.0] * 4 + [3.0] * 4}, "ce"
    )
    held = evaluate.controls(memorised + slow)
    assert [t.outcome for t in held] == [rules.HOLDS, rules.HOLDS] and evaluate.standing(held) == ""
    assert all(not f.verdict.standing for f in evaluate.evaluate(memorised + slow))
    swapped = [{**r, "loss": {"ce": "mae", "mae": "ce"}[r["loss"]]} for r in memorised]
    failed = evaluate.controls(swapped + slow)
    assert [t.outcome for t in failed] == [rules.REVERSED, rules.HOLDS]
    findings = evaluate.evaluate(swapped + slow)
    assert all(f.verdict.standing.startswith("no standing: control ce > mae") for f in findings)


def test_missing_measurements_are_not_measured_not_a_crash() -> None:
    """Runs recorded before the claims' new metrics existed: every claim says 'not measured', nothing raises."""
    rows = [
        run_row(p, loss, "linear", s) for p in MINE for loss in ("ce", "mse", "mae", "hinge", "bce") for s in range(3)
    ]
    findings = evaluate.evaluate(rows)
    for f in findings[1:]:
        assert f.verdict.kind == rules.NOT_DECIDED, (f.claim.number, f.verdict)
    assert {t.outcome for f in findings[2:] for t in f.tested} == {rules.NOT_MEASURED}
    assert "not measured" in findings[4].verdict.decide and "test/own_nll" in findings[4].verdict.decide


def test_the_tuning_picks_each_loss_and_model_s_best_rate_on_validation() -> None:
    rows = [
        run_row("claim_tuning", loss, model, 0, lr=lr, summary__best_val_acc=acc)
        for loss, model, lr, acc in (
            ("ce", "mlp", 1e-3, 0.85),
            ("ce", "mlp", 3e-3, 0.86),
            ("ce", "mlp", 3e-4, 0.80),
            ("mae", "mlp", 1e-3, 0.70),
            ("mae", "mlp", 3e-3, 0.70),  # a tie: the smaller rate
            ("mae", "linear", 3e-4, math.nan),
        )
    ]
    assert tuned_overrides(rows, "summary/best_val_acc") == [
        "++tuned.lr.ce_mlp_10=0.003",
        "++tuned.lr.mae_mlp_10=0.001",
    ]
    cfg = compose("+experiment=claim_losses", "loss=ce", "model=mlp", "++tuned.lr.ce_mlp_10=0.003")
    assert cfg.optimizer.lr == 0.003
    assert compose("+experiment=claim_losses", "loss=mae", "model=linear").optimizer.lr == 1e-3  # run alone


def test_no_machine_specific_path_in_a_printed_command_or_the_claims_page() -> None:
    assert portable("data.root=/work/data") == "data.root=<data.root>"
    assert portable("tracking.uri=sqlite:////home/me/mlflow.db") == "tracking.uri=<tracking.uri>"
    assert portable("tracking.uri=sqlite:///mlflow.db") == "tracking.uri=sqlite:///mlflow.db"  # relative: portable
    assert portable("seed=range(0,8)") == "seed=range(0,8)"
    page = (Path(__file__).parents[1] / "docs" / "claims.md").read_text()
    assert not re.search(r"(?<![\w.<])/(work|home|tmp|root|Users)/", page), "a machine path in docs/claims.md"
    context = write.Context("python -m lossbench.claims data.root=<data.root>", True, 1.0, [], [], [], "abc")
    assert "/work" not in write.markdown(evaluate.evaluate([]), context)


def test_claim_8_reads_the_accuracy_flipped_labels_cost_seed_by_seed() -> None:
    rows = []
    for seed in range(3):
        for loss, cost in (("mae", 0.02), ("ce", 0.10), ("mse", 0.01)):
            rows.append(run_row("claim_label_noise", loss, "mlp", seed, test_last__acc=0.8 + 0.01 * seed))
            rows.append(run_row("claim_label_noise", loss, "mlp", seed, test_last__acc=0.8 - cost, label_noise=0.4))
    with_drops = rules.with_drops(rows)
    assert [round(r.get(rules.DROP, -1), 6) for r in with_drops[:4]] == [-1, 0.02, -1, 0.1]
    finding = evaluate.claim_8(rows)
    assert [(t.prediction.candidate, t.prediction.reference) for t in finding.tested] == [("mae", "ce")]
    assert finding.tested[0].decision.paired.differences == pytest.approx((0.02 - 0.10,) * 3)
    assert finding.tested[0].outcome == rules.HOLDS and finding.verdict.kind == rules.SUPPORTED


def test_separating_finds_the_fewest_dimensions() -> None:
    blocks = [
        ({"model": m, "noise": n}, rules.HOLDS if n == "0.4" else rules.UNDECIDED)
        for m in ("a", "b")
        for n in ("0.0", "0.4")
    ]
    assert rules.separating([Case(b, o) for b, o in blocks]) == ["noise"]
    both = [
        Case({"model": "a", "noise": "0"}, rules.HOLDS),
        Case({"model": "b", "noise": "1"}, rules.REVERSED),
        Case({"model": "a", "noise": "1"}, rules.UNDECIDED),
    ]
    assert rules.separating(both) == ["model", "noise"]


def test_the_pages_have_every_claim_its_verdict_rule_figure_and_per_seed_evidence(tmp_path: Path) -> None:
    rows = epochs_table({"linear": [7.0, 8.0, 9.0, 8.0]}, {"linear": [2.0, 3.0, 2.0, 3.0]})
    rows += [  # 8 of 8 flagged: a Wilson interval whose end lies a hair below the share itself
        run_row("claim_overfitting", "ce", "mlp", s, overfits_on_accuracy=float(s % 2), summary__loss_has_onset=1.0)
        for s in range(16)
    ]
    findings = evaluate.evaluate(rows)
    controls = evaluate.controls(rows)
    context = write.Context("python -m lossbench.claims", True, 60.0, [], [], [], "abc1234", "", controls, [])
    files = write.write(tmp_path, findings, context)
    text = (tmp_path / "claims.md").read_text()
    assert [f.claim.number for f in findings] == list(range(1, 9))
    assert text.count("## Claim ") == 8 and text.count("**Verdict: ") == 8 and text.count("*Rule:* ") == 8
    assert text.index("Positive controls did not reproduce") < text.index("| claim | verdict |")
    assert "(no standing)" in text and "a pilot, not final verdicts" in text and "`data.redraw: true`" in text
    summary = json.loads((tmp_path / "claims.json").read_text())
    assert all(c["verdict"]["kind"] in rules.VERDICTS and c["verdict"]["rule"] for c in summary["claims"])
    linear = summary["claims"][1]["predictions"][0]
    assert linear["values"]["0"] == {"candidate": 7.0, "reference": 2.0} and linear["test"] == "rank"
    assert summary["claims"][1]["predictions"][1]["outcome"] == rules.NOT_MEASURED  # no mlp runs
    assert summary["claims"][5]["verdict"]["kind"] == rules.CONTRADICTED  # flags all 16: specificity 0
    evidence = list(csv.DictReader((tmp_path / "evidence.csv").open()))
    mine = [e for e in evidence if e["claim"] == "2" and e["where"] == "model=linear"]
    assert [(e["seed"], float(e["candidate_value"]), float(e["difference"])) for e in mine] == [
        ("0", 7.0, 5.0),
        ("1", 8.0, 5.0),
        ("2", 9.0, 7.0),
        ("3", 8.0, 5.0),
    ]
    assert (tmp_path / "claim2.png").is_file() and tmp_path / "claim2.png" in files
    assert (tmp_path / "claim6.png").is_file() and "not drawn" not in text
    assert "data:image/png;base64," in (tmp_path / "claims.html").read_text()


# ------------------------------------------------------------------------------------------ the command, end to end


def claims(tmp_path: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    store = tmp_path / "mlflow.db"
    overrides = [o for o in tiny_overrides(root, store) if not o.startswith("trainer.max_epochs")]
    args = [
        sys.executable,
        "-m",
        "lossbench.claims",
        "--quick",
        "--out",
        str(tmp_path / "claims"),
        *overrides,
        "trainer.max_epochs=2",
        *extra,
    ]
    return subprocess.run(args, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)


MERGED = (Path(__file__).parents[1] / "conf" / "loss" / "bce_single.yaml").is_file()


@pytest.mark.slow
@pytest.mark.skipif(
    not MERGED,
    reason="needs issue 34's measurement machinery from another branch (data.redraw, loss=bce_single, the own-"
    "probability and training-margin metrics): the protocols run it; un-skips itself once conf/loss/bce_single.yaml "
    "exists",
)
def test_quick_claims_on_tiny_data_write_every_section_verdict_and_figure_and_a_rerun_reuses_every_job(
    tmp_path: Path,
) -> None:
    root = write_mnist_family(tmp_path / "data", "FashionMNIST", n_train=1200, n_test=400)
    first = claims(tmp_path, root)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = tmp_path / "claims"
    summary = json.loads((out / "claims.json").read_text())
    assert [c["number"] for c in summary["claims"]] == list(range(1, 9))
    for claim in summary["claims"]:
        assert claim["verdict"]["kind"] in rules.VERDICTS and claim["verdict"]["rule"] and claim["statement"]
        assert (out / claim["figure"]).is_file(), claim["figure"]
        assert claim["measured"], f"claim {claim['number']} measured nothing"
    ran = {s["protocol"]: s["outcomes"]["finished"] for s in summary["sweeps"]}
    assert ran == QUICK_JOBS
    text = (out / "claims.md").read_text()
    assert text.count("**Protocol.**") == 8 and "a pilot, not final verdicts" in text
    assert text.index("Positive controls") < text.index("| claim | verdict |")
    assert summary["tuned"] and all(o.startswith("++tuned.lr.") for o in summary["tuned"])
    assert str(tmp_path) not in text and str(tmp_path) not in json.dumps(summary), "a machine path on the pages"
    assert (out / "evidence.csv").read_text().startswith(",".join(write.EVIDENCE_COLUMNS))
    assert (out / "claims.html").read_text().count("data:image/png;base64,") == 8
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("claims").experiment_id])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "claims")}
    assert {"claims/claims.md", "claims/claims.html", "claims/claims.json", "claims/evidence.csv"} <= logged
    assert run.data.tags["lossbench.kind"] == "claims" and "| claim | verdict |" in run.data.tags["mlflow.note.content"]
    assert "--quick" in run.data.tags["mlflow.note.content"] and "--quick" in run.data.tags["lossbench.command"]
    again = claims(tmp_path, root)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((out / "claims.json").read_text())
    assert {s["protocol"]: s["outcomes"]["skipped"] for s in second["sweeps"]} == QUICK_JOBS
    assert [c["verdict"] for c in second["claims"]] == [c["verdict"] for c in summary["claims"]]
    assert len(client.search_runs([client.get_experiment_by_name("claims").experiment_id])) == 1, (
        "the same run, updated"
    )


def test_an_option_hydra_cannot_compose_is_one_line_naming_the_choices_before_any_run(tmp_path, capsys) -> None:
    """The same line python -m lossbench.train gives (lossbench.errors.composition_message), exit 2, nothing run."""
    from lossbench.claims import cli

    status = cli.main(["--quick", "--out", str(tmp_path / "claims"), "data=nosuch", f"data.root={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert err.startswith("lossbench.claims: error: data=nosuch: no such option in conf/data/; choose one of ")
    assert "fashion_mnist" in err and not (tmp_path / "claims" / "claims.md").exists()
