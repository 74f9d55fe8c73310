"""The data sets lossbench ships: ``conf/data/<name>.yaml``, read from there by whoever needs the list.

One owner: a data set's class, files, shape, classes, normalisation and noise map are in its YAML and
nowhere else. scripts/prepare_data.py (what to import where), the benchmark (which data it can time),
the message for missing files (which data sets a Debian package provides) and the tests read them here.
Torch-free: each YAML is read as it is written (its own keys, not composed), or composed on request.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from lossbench.paths import compose, conf_dir


def data_names() -> list[str]:
    """Every ``data=`` option: the YAML files directly in ``conf/data/`` (``conf/data/base/`` holds shared keys)."""
    return sorted(path.stem for path in (conf_dir() / "data").glob("*.yaml"))


def data_yaml(name: str) -> DictConfig:
    """``conf/data/<name>.yaml`` as written (its own keys; the shared ones of ``base/`` are not merged in)."""
    return OmegaConf.load(conf_dir() / "data" / f"{name}.yaml")


def data_config(name: str, *overrides: str) -> DictConfig:
    """The ``data`` node of the composed config for ``data=<name>``, as a run sees it."""
    return compose(f"data={name}", *overrides).data


def downloadable() -> list[str]:
    """The data sets torchvision reads (and downloads): those whose source names files under ``data.root``."""
    return [name for name in data_names() if "files" in data_yaml(name).source]


def offline_data() -> dict[str, dict[str, Any]]:
    """Data set name -> ``{package, path}`` of the Debian package that ships its files, for those that have one."""
    found = {}
    for name in downloadable():
        debian = data_yaml(name).source.get("debian")
        if debian:
            found[name] = OmegaConf.to_container(debian)
    return found
