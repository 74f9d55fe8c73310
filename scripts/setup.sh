#!/usr/bin/env bash
# Everything a fresh machine needs: system packages (when root and apt exists), uv, the locked
# Python environment with compiled bytecode. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # dataset-fashion-mnist: real data for tests and benchmarks; postgresql: the team-server test;
  # docker-compose: validates docker/compose.yaml without an engine; chromium: the browser test
  # (driven by the playwright package from uv.lock; nothing else is downloaded); slurmctld slurmd
  # slurm-client munge: the real single-node Slurm cluster of tests/test_slurm.py; texlive-latex-recommended:
  # pdflatex and booktabs, which compile the report's LaTeX table in tests/test_export.py (~35 s to install).
  need=""
  for pkg in dataset-fashion-mnist postgresql docker-compose chromium slurmctld slurmd slurm-client munge texlive-latex-recommended; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $need >/dev/null
  fi
fi

command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
uv sync --frozen --compile-bytecode
