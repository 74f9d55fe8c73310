# syntax=docker/dockerfile:1
# MLflow tracking server for the team stack (docker/compose.yaml): MLflow's basic-auth app (users,
# per-experiment permissions) with psycopg 3 for the PostgreSQL store, every package pinned by version
# and hash (mlflow-requirements.txt, resolved from the repository's uv.lock), run as a non-root user.
#   docker build -f docker/mlflow.Dockerfile -t lossbench-mlflow:3.17.2 docker
# CI lints this file (hadolint) but does not build it.

FROM python:3.11.14-slim-bookworm

COPY mlflow-requirements.txt /tmp/mlflow-requirements.txt
COPY mlflow-entrypoint.sh /usr/local/bin/mlflow-entrypoint.sh
RUN pip install --no-cache-dir --no-deps --require-hashes -r /tmp/mlflow-requirements.txt \
    && rm /tmp/mlflow-requirements.txt \
    && useradd --no-log-init --create-home --uid 1000 --user-group mlflow \
    && install -d -o mlflow -g mlflow /mlartifacts

ENV PYTHONUNBUFFERED=1

USER 1000:1000
WORKDIR /home/mlflow
EXPOSE 5000

# The entrypoint writes the auth app's ini from the environment and runs `mlflow server --app-name
# basic-auth`; compose.yaml passes the store URIs, --host and --port as arguments.
ENTRYPOINT ["/usr/local/bin/mlflow-entrypoint.sh"]
CMD ["--host", "0.0.0.0", "--port", "5000"]
