"""One list (config.OPERATIONAL_KEYS) decides what is the experiment: every other key changes the config hash."""

from __future__ import annotations

import copy

import pytest
from omegaconf import OmegaConf, open_dict

from lossbench.config import HASHED_WHEN_SET, OPERATIONAL_KEYS, config_hash, flatten, is_operational, resolved
from lossbench.paths import compose


def changed(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1 if value != -1 else 2
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    return 1  # None


def leaves(cfg) -> list[str]:
    """Dotted keys of the config's leaves that hold a value of their own (not an interpolation of another key)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    return [k for k, v in flatten(raw) if not (isinstance(v, str) and v.startswith("${"))]


CFG = compose("data=fashion_mnist", "model=mlp", "scheduler=cosine", "optimizer=sgd")
KEYS = leaves(CFG)


def hash_with(key: str) -> str:
    cfg = copy.deepcopy(CFG)
    with open_dict(cfg):
        OmegaConf.update(cfg, key, changed(OmegaConf.select(cfg, key)), force_add=True)
    return config_hash(cfg)


def test_both_kinds_of_key_are_present() -> None:
    operational = [k for k in KEYS if is_operational(k)]
    assert len(operational) >= 10 and len(KEYS) - len(operational) >= 40
    assert {k.split(".")[0] for k in operational} >= {"tracking", "analysis", "launch", "resume", "threads"}
    assert all(any(k == p or k.startswith(p + ".") for p in OPERATIONAL_KEYS) for k in operational)


@pytest.mark.parametrize("key", [k for k in KEYS if is_operational(k) and k not in HASHED_WHEN_SET])
def test_changing_an_operational_key_keeps_the_hash(key: str) -> None:
    assert hash_with(key) == config_hash(CFG)


@pytest.mark.parametrize("key", [k for k in KEYS if not is_operational(k)])
def test_changing_a_training_key_changes_the_hash(key: str) -> None:
    assert hash_with(key) != config_hash(CFG)


def test_the_builders_of_data_and_trainer_are_not_the_experiment() -> None:
    """Their _target_ names the code that builds them: configs written before it existed keep their hash."""
    assert {"data._target_", "trainer._target_"} <= set(KEYS)
    assert is_operational("data._target_") and is_operational("trainer._target_")
    assert not is_operational("optimizer._target_") and not is_operational("model.net._target_")
    before = copy.deepcopy(CFG)
    with open_dict(before):
        del before.data["_target_"], before.trainer["_target_"]
    assert config_hash(before) == config_hash(CFG)


def test_the_hash_ignores_hydras_node_and_key_order() -> None:
    with_hydra = compose("data=fashion_mnist", "model=mlp", "scheduler=cosine", "optimizer=sgd", hydra_config=True)
    assert config_hash(with_hydra) == config_hash(CFG)
    assert list(resolved(CFG)) == list(resolved(with_hydra))


@pytest.mark.parametrize("key", sorted(HASHED_WHEN_SET))
def test_a_key_hashed_when_set_keeps_old_hashes_at_its_default_and_changes_the_hash_otherwise(key: str) -> None:
    """data.redraw=true draws other data, analysis.margins/confident_wrong=true record what other runs lack: other
    experiments; at their default the hash is that of a config written before the key existed."""
    assert key in KEYS and OmegaConf.select(CFG, key) == HASHED_WHEN_SET[key]
    before = copy.deepcopy(CFG)
    group, leaf = key.rsplit(".", 1)
    with open_dict(before):
        del OmegaConf.select(before, group)[leaf]
    assert config_hash(before) == config_hash(CFG)
    assert hash_with(key) != config_hash(CFG)
