"""``python -m lossbench.claims``: the textbook's claims about losses, each turned into a verdict a reader can check.

One protocol (an ordinary experiment under ``conf/experiment/claim_*.yaml``) per kind of evidence; each runs as a
lossbench sweep (``python -m lossbench.train -m +experiment=claim_X``: finished jobs are skipped, the sweep's own
report lands on its parent run); the runs are read back from MLflow into one tidy table, and each claim's rule
turns that table into a verdict with the evidence beside it. The package reads in one direction:

- :mod:`~lossbench.claims.protocols`: the claims, the protocols that test them, the ``--quick`` overrides, launching;
- :mod:`~lossbench.claims.results`: the runs read back, as a tidy table (one row per run);
- :mod:`~lossbench.claims.rules`: pure functions from that table to measured figures, paired tests and verdicts;
- :mod:`~lossbench.claims.evaluate`: each claim's predictions, figures and notes (``claim_1`` ... ``claim_7``);
- :mod:`~lossbench.claims.write`: ``claims.md``, ``claims.html``, ``claims.json``, the figures, and the MLflow run;
- :mod:`~lossbench.claims.cli`: the command.
"""
