"""Where lossbench finds its Hydra configs."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The `conf/` folder: beside the package in a checkout, inside it in a built wheel."""
    for candidate in (_PACKAGE.parent / "conf", _PACKAGE / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"lossbench's conf/ folder is missing (looked beside and inside {_PACKAGE})")
