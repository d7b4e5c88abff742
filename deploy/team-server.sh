#!/usr/bin/env bash
# The team's MLflow server: PostgreSQL as its store, proxied artifacts, basic auth (docs/team.md).
#
#   export MNIST_VAE_ADMIN_PASSWORD=...                                   # required, >= 12 characters
#   export MNIST_VAE_USER_USERNAME=alice MNIST_VAE_USER_PASSWORD=...       # optional second, non-admin user
#   deploy/team-server.sh start  --dir /srv/mnist-vae [--host 127.0.0.1] [--port 5000] [--workers 2]
#   deploy/team-server.sh status --dir /srv/mnist-vae
#   deploy/team-server.sh stop   --dir /srv/mnist-vae
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m mnist_vae.ops.team_server "$@"
