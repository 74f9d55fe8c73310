"""lossbench's Hydra plugins (Hydra loads plugins only from the ``hydra_plugins`` namespace):
the sweeper that skips finished configs, and the Slurm launcher. Their config is conf/hydra/."""
