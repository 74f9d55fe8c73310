"""Where lossbench finds its Hydra configs."""

import os
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from lossbench import folders, launch  # noqa: F401  (register the resolvers of conf/data/folder.yaml, npz.yaml and conf/hydra/launcher/parallel.yaml)

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The `conf/` folder: beside the package in a checkout, inside it in a built wheel."""
    for candidate in (_PACKAGE.parent / "conf", _PACKAGE / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"lossbench's conf/ folder is missing (looked beside and inside {_PACKAGE})")


def compose(*overrides: str, hydra_config: bool = False):
    """The real config, composed as ``python -m lossbench.train`` would, without Hydra's runtime (tests, notebooks,
    the benchmark); ``hydra_config=True`` keeps the ``hydra`` node (sweeper params, launcher, mode)."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra_config)


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be written into (created where missing), or None: the nearest existing part of the
    path is a file, or not writable."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None
