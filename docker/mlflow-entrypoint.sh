#!/bin/sh
# Start MLflow's basic-auth app (users, per-experiment permissions) on the team's PostgreSQL.
# The entrypoint of docker/mlflow.Dockerfile; tests/servers.py starts its test server with it too.
#
# From the environment (docker/compose.yaml passes them from docker/.env):
#   LOSSBENCH_AUTH_DATABASE_URI     where users and permissions live, e.g. the tracking store's
#                                   postgresql+psycopg://mlflow@postgres:5432/mlflow (password: PGPASSWORD)
#   MLFLOW_AUTH_ADMIN_PASSWORD      the admin's password at the first start (MLflow ignores it once the
#                                   admin exists; rotate with `python -m lossbench.team set-password admin`)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  the static CSRF secret of every worker
#   MLFLOW_AUTH_ADMIN_USERNAME      optional, default admin
#   MLFLOW_AUTH_CONFIG_PATH         optional, where to write the ini (default $HOME/basic_auth.ini)
#   LOSSBENCH_AUTH_CACHE_S          optional, default 60: how long a worker trusts a checked password. MLflow
#                                   hashes passwords with scrypt (~0.1-0.3 s of CPU per check), and without this
#                                   cache checks on every request, i.e. every metric a run logs. The price: a
#                                   changed or deleted password still works for up to this long on the other
#                                   workers. 0 checks every request.
# Arguments are `mlflow server`'s (store URIs, --host, --port, --workers).
#
# A new user gets no permission on anything until an admin grants one (default_permission): MLflow's
# own default, READ, would let every account read every experiment.
set -eu

: "${LOSSBENCH_AUTH_DATABASE_URI:?set LOSSBENCH_AUTH_DATABASE_URI (the auth database, e.g. the tracking store URI)}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD (docker/.env: MLFLOW_ADMIN_PASSWORD)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY (docker/.env: MLFLOW_SECRET_KEY)}"

# docker/.env.example's placeholders are as well known as MLflow's old admin/password1234.
case "$MLFLOW_AUTH_ADMIN_PASSWORD" in CHANGE-ME*)
    echo "mlflow-entrypoint: MLFLOW_ADMIN_PASSWORD in docker/.env is still the example's placeholder: set your own" >&2
    exit 2 ;;
esac
case "$MLFLOW_FLASK_SERVER_SECRET_KEY" in CHANGE-ME*)
    echo "mlflow-entrypoint: MLFLOW_SECRET_KEY in docker/.env is still the example's placeholder: set your own" >&2
    exit 2 ;;
esac

ini="${MLFLOW_AUTH_CONFIG_PATH:-$HOME/basic_auth.ini}"
umask 077
cat >"$ini" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = ${LOSSBENCH_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${LOSSBENCH_AUTH_CACHE_S:-60}
EOF
export MLFLOW_AUTH_CONFIG_PATH="$ini"

exec mlflow server --app-name basic-auth "$@"
