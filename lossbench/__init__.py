"""lossbench: how does the choice of loss function (and optimizer) change how a network trains and overfits?"""

__version__ = "0.1.0"

from lossbench import launch as _launch  # noqa: E402

_launch.register()  # ${lossbench.parallel_jobs:...} in conf/hydra/launcher/parallel.yaml
