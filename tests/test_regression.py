"""Claim 1's regression task (lossbench.regression): rotated images whose angle is the target, outlier training
targets, MSE/MAE/Huber on one output, the clean-target yardsticks; the config rules that keep classification-only
options off a regression run; and claim 1's rule (lossbench.claims.claim1) on synthetic rows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import compose, read_runs
from hydra.utils import instantiate
from idx import write_mnist_family
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from lossbench import decisions
from lossbench.claims import claim1, evaluate, rules
from lossbench.claims.results import METRICS
from lossbench.config import validate
from lossbench.errors import ConfigError
from lossbench.names import (
    REGRESSION_EPOCH_METRICS,
    REGRESSION_MONITORABLE,
    REGRESSION_YARDSTICKS,
    TEST_LAST_MAE_DEG,
    TEST_LAST_RMSE_DEG,
    TEST_MAE_DEG,
    TEST_RMSE_DEG,
)
from lossbench.regression import RegressionLoss, build_loss, draw_angles, outlier_targets, rotate, yardsticks
from lossbench.train import run


def regression_overrides(root: Path, store: Path, *extra: str) -> list[str]:
    """claim_outliers as one small run on tiny idx data with its own SQLite store."""
    return [
        "+experiment=claim_outliers",
        f"data.root={root}",
        "data.train_size=400",
        "data.val_size=100",
        "data.train_eval_size=100",
        "data.eval_batch_size=100",
        f"tracking.uri=sqlite:///{store}",
        f"tracking.checkpoint_dir={store.parent / 'checkpoints'}",
        "tracking.experiment=lossbench",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        *extra,
    ]


@pytest.fixture
def tiny_fashion(tmp_path: Path) -> Path:
    return write_mnist_family(tmp_path / "data", "FashionMNIST", n_train=600, n_test=200)


# ------------------------------------------------------------------------------------------ the data


def test_rotate_is_torchvisions_rotate_per_image() -> None:
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8).float()
    angles = torch.tensor([0.0, 30.0, -45.0, 90.0, 12.5])
    fill = -3.0
    ours = rotate(images, angles, fill)
    for i, angle in enumerate(angles.tolist()):  # torchvision's fill blends the rim twice: rotate around the fill
        theirs = TF.rotate(images[i] - fill, angle, interpolation=InterpolationMode.BILINEAR) + fill
        assert torch.allclose(ours[i], theirs, atol=1e-3), angle
        assert not torch.allclose(ours[i], TF.rotate(images[i], -angle, interpolation=InterpolationMode.BILINEAR))
    assert torch.allclose(ours[0], images[0], atol=1e-3)  # 0 degrees: every pixel where it was
    turned = rotate(images[3:4], torch.tensor([90.0]))  # a quarter turn counter-clockwise is rot90, bar the rim
    assert torch.allclose(turned[0, 0, 1:-1, 1:-1], torch.rot90(images[3, 0], 1)[1:-1, 1:-1], atol=1e-3)


def test_angles_and_outliers_are_drawn_from_their_seed_alone() -> None:
    a = draw_angles(1000, 45.0, 7)
    assert torch.equal(a, draw_angles(1000, 45.0, 7)) and not torch.equal(a, draw_angles(1000, 45.0, 8))
    assert float(a.abs().max()) <= 45.0 and float(a.min()) < -40 and float(a.max()) > 40
    clean = a / 45
    noisy, report = outlier_targets(clean, 0.3, "uniform", 180.0, 3, 45.0)
    again, _ = outlier_targets(clean, 0.3, "uniform", 180.0, 3, 45.0)
    changed = (noisy != clean).nonzero().flatten()
    assert torch.equal(noisy, again) and report.target_outliers == 300 == len(changed)
    assert float(noisy.abs().max()) <= 4.0 and float(noisy.abs().max()) > 1.0  # within ±180 degrees, beyond ±45
    offset, _ = outlier_targets(clean, 0.1, "offset", 90.0, 3, 45.0)
    moved = offset - clean
    assert sorted(set(moved[moved != 0].abs().round(decimals=5).tolist())) == [2.0]  # ±90 degrees = ±2 units
    assert int((moved != 0).sum()) == 100


def test_rotated_images_rotate_each_split_and_put_outliers_in_training_targets_only(tiny_fashion: Path) -> None:
    cfg = compose(
        "+experiment=claim_outliers", f"data.root={tiny_fashion}", "data.val_size=100", "data.outliers.rate=0.25"
    )
    data = instantiate(cfg.data, shuffle_seed=0)
    s = data.load()
    plain = instantiate(compose("data=fashion_mnist", f"data.root={tiny_fashion}", "data.val_size=100").data)
    p = plain.load()  # the same split (split_seed 0, all training images), not rotated
    scale = cfg.data.rotation.degrees
    for k, (x, y, x0) in enumerate(
        ((s.train_x, s.train_true_y, p.train_x), (s.val_x, s.val_y, p.val_x), (s.test_x, s.test_y, p.test_x))
    ):
        assert torch.allclose(y * scale, draw_angles(len(x0), scale, 0 * 3 + k), atol=1e-5)  # seed 0: the run's
        black = float(-plain.transform.mean.flatten()[0] / plain.transform.std.flatten()[0])
        for i in (0, len(x0) - 1):  # torchvision's own rotation of the unrotated image
            theirs = TF.rotate(x0[i] - black, float(y[i] * scale), interpolation=InterpolationMode.BILINEAR) + black
            assert torch.allclose(x[i], theirs, atol=1e-4)
    n = len(s.train_y)
    outliers = (s.train_y != s.train_true_y).nonzero().flatten()
    assert len(outliers) == round(0.25 * n) and data.noise_report["target_outliers"] == len(outliers)
    assert float(s.val_y.abs().max()) <= 1 and float(s.test_y.abs().max()) <= 1  # clean: within ±45 degrees
    again = instantiate(cfg.data, shuffle_seed=5).load()
    assert torch.equal(again.train_y, s.train_y) and torch.equal(again.train_x, s.train_x)  # cached or re-read: same
    other = instantiate(
        compose(
            "+experiment=claim_outliers",
            f"data.root={tiny_fashion}",
            "data.val_size=100",
            "data.outliers.rate=0.25",
            "seed=1",
        ).data,
        shuffle_seed=1,
    ).load()
    assert not torch.equal(other.test_y, s.test_y)  # a seed redraws the angles (and split, and outliers)


# ------------------------------------------------------------------------------------------ loss and yardsticks


def test_the_yardsticks_are_the_clean_targets_errors_in_degrees() -> None:
    output = torch.tensor([[0.1], [-0.2], [0.5]])
    clean = torch.tensor([0.0, 0.0, 1.0])
    got = yardsticks(output, clean, 45.0)
    # errors 4.5, -9, -22.5 degrees: RMSE sqrt((20.25 + 81 + 506.25) / 3) = sqrt(202.5), MAE 36 / 3
    rmse, mae = REGRESSION_YARDSTICKS
    assert float(got[rmse]) == pytest.approx(math.sqrt(202.5), rel=1e-6)
    assert float(got[mae]) == pytest.approx(12.0, rel=1e-6)


@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_each_loss_is_torchs_own_on_the_one_output(loss: str) -> None:
    cfg = compose("+experiment=claim_outliers", f"loss={loss}")
    built = build_loss(cfg.loss)
    assert isinstance(built, RegressionLoss)
    output, target = torch.tensor([[0.5], [3.0], [-1.0]]), torch.tensor([0.0, 0.5, -1.0])
    r = output[:, 0] - target
    expected = {
        "mse": r.square().mean(),
        "mae": r.abs().mean(),
        "huber": torch.where(r.abs() < 1, 0.5 * r.square(), r.abs() - 0.5).mean(),  # delta 1
    }[loss]
    assert float(built(output, target)) == pytest.approx(float(expected))


@pytest.mark.parametrize(
    "override, expected",
    [
        ("loss=ce", "needs loss= one of mse, mae, huber, smooth_l1"),
        ("data.label_noise.rate=0.2", "needs data.label_noise.rate=0"),
        ("model.net.num_classes=10", "needs model.net.num_classes=1"),
        ("checkpoint.monitor=val/acc", "needs checkpoint.monitor= one of val/loss"),
        ("scheduler=plateau", "a scheduler other than plateau"),
        ("analysis.figures=true", "needs analysis.figures=false"),
        ("data.outliers.kind=far", "data.outliers.kind='far' is invalid: expected one of uniform, offset"),
    ],
)
def test_a_regression_run_refuses_classification_only_options_in_one_line(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(compose("+experiment=claim_outliers", override))
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_a_classification_run_refuses_a_regression_monitor() -> None:
    validate(compose("+experiment=claim_outliers"))  # the protocol itself is valid
    with pytest.raises(ConfigError, match="checkpoint.monitor=val/rmse_deg is a regression yardstick"):
        validate(compose("checkpoint.monitor=val/rmse_deg", "checkpoint.mode=min"))


# ------------------------------------------------------------------------------------------ real runs


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_a_tiny_regression_run_records_the_clean_target_yardsticks(tiny_fashion: Path, tmp_path: Path, loss: str):
    store = tmp_path / "mlflow.db"
    run(compose(*regression_overrides(tiny_fashion, store, f"loss={loss}", "data.outliers.rate=0.2")))
    client, runs = read_runs(store)
    (r,) = runs
    assert r.info.status == "FINISHED" and r.data.tags["loss"] == loss
    for key in REGRESSION_EPOCH_METRICS:
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, key)) == [1, 2], key
    m = r.data.metrics
    for rmse, mae in ((TEST_RMSE_DEG, TEST_MAE_DEG), (TEST_LAST_RMSE_DEG, TEST_LAST_MAE_DEG)):
        assert 0 < m[mae] <= m[rmse] < 225  # RMSE >= MAE; no error beyond 180 + 45 degrees
    assert r.data.tags["noise.target_outliers"] == str(round(0.2 * 400))
    assert set(REGRESSION_MONITORABLE) <= set(m)
    assert not any(k.endswith("/acc") or k.endswith("/nll") for k in m)  # no classification yardstick recorded
    assert r.data.tags["verdict_text"].startswith("not judged: a regression run")


# ------------------------------------------------------------------------------------------ claim 1's rule


def row(loss: str, seed: int, outliers: float, rmse: float, model: str = "mlp") -> dict:
    return {
        "protocol": claim1.PROTOCOL,
        "run_id": f"{loss}-{seed}-{outliers}",
        "loss": loss,
        "model": model,
        "seed": str(seed),
        "outliers": outliers,
        "label_noise": 0.0,
        "input_noise": 0.0,
        "stage": 1,
        **{k: math.nan for k in METRICS},
        TEST_RMSE_DEG: rmse,
    }


def table(rises: dict[str, list[float]]) -> list[dict]:
    rows = []
    for loss, values in rises.items():
        for seed, rise in enumerate(values):
            base = 5.0 + 0.3 * seed
            rows += [row(loss, seed, 0.0, base), row(loss, seed, claim1.OUTLIER_RATE, base + rise)]
    return rows


def test_claim_1_reads_each_losss_rise_over_its_clean_twin_seed_by_seed() -> None:
    rows = table({"mse": [15.0, 14.0, 16.5, 15.2], "mae": [2.0, 1.5, 2.2, 1.9], "huber": [3.0, 3.5, 2.9, 3.1]})
    finding = evaluate.claim_1(rows)
    assert [(t.prediction.candidate, t.prediction.reference) for t in finding.tested] == [
        ("mse", "mae"),
        ("mse", "huber"),
    ]
    assert finding.tested[0].decision.paired.differences == pytest.approx((13.0, 12.5, 14.3, 13.3))
    assert finding.verdict.kind == rules.SUPPORTED


def test_claim_1_is_contradicted_when_mse_rises_less_and_undecided_on_noise() -> None:
    rows = table({"mse": [1.0, 1.2, 0.9, 1.1], "mae": [6.0, 7.0, 6.5, 6.2], "huber": [5.0, 5.5, 4.9, 5.2]})
    assert evaluate.claim_1(rows).verdict.kind == rules.CONTRADICTED
    rows = table({"mse": [3.0, -2.0, 1.0, -1.5], "mae": [-1.0, 2.5, -0.5, 1.0], "huber": [2.0, -3.0, 1.5, 0.0]})
    undecided = evaluate.claim_1(rows)
    assert undecided.verdict.kind == rules.INCONCLUSIVE
    assert {t.outcome for t in undecided.tested} == {rules.UNDECIDED}


def test_the_pilot_plan_asks_for_more_seeds_for_a_smaller_or_noisier_difference() -> None:
    big = claim1.seeds_for([13.0, 12.5, 14.3, 13.3], family=2)
    small = claim1.seeds_for([1.0, 0.2, 1.8, 0.6], family=2)
    assert big is not None and small is not None and 3 <= big < small
    # at the planned n the first look's power reaches 80 %, one seed fewer it does not
    d = torch.tensor([1.0, 0.2, 1.8, 0.6], dtype=torch.float64).numpy()
    spread, alpha = decisions.planning_spread(d), decisions.ALPHA / 2
    assert claim1.first_look_power(float(d.mean()), spread, small, alpha) >= 0.8
    assert claim1.first_look_power(float(d.mean()), spread, small - 1, alpha) < 0.8


def test_uint8_hold_rotates_the_same_images_to_within_a_grey_level(tiny_fashion: Path) -> None:
    held = {}
    for hold in ("float32", "uint8"):
        cfg = compose(
            "+experiment=claim_outliers", f"data.root={tiny_fashion}", "data.val_size=100", f"data.hold={hold}"
        )
        data = instantiate(cfg.data, shuffle_seed=0)
        s = data.load()
        x = s.test_x if data.batch_transform is None else data.batch_transform(s.test_x)
        held[hold] = (x, s.test_y)
    (a, ya), (b, yb) = held["float32"], held["uint8"]
    assert b.dtype == torch.float32 and torch.equal(ya, yb)
    std = float(compose("data=fashion_mnist").data.std[0])
    assert float((a - b).abs().max()) <= 0.5 / 255 / std + 1e-5  # the uint8 pixels are the float ones, rounded
