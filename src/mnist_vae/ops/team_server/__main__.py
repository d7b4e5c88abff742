"""`python -m mnist_vae.ops.team_server start|stop|status|share --dir DIR`: the team server's command line
(deploy/team-server.sh and `make team-server` run it)."""

from __future__ import annotations

import argparse
import os
import sys

from mnist_vae.errors import UserError
from mnist_vae.ops import team_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="team-server", description=team_server.__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status", "share"))
    parser.add_argument("--dir", default=os.environ.get("MNIST_VAE_TEAM_DIR", "team-server"),
                        help="folder of the database, artifacts and logs (default: ./team-server)")
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1; put TLS in front for anything else)")
    parser.add_argument("--port", type=int, help="MLflow's port (default 5000, then whatever the last start used)")
    parser.add_argument("--pg-port", type=int, help="PostgreSQL's port on 127.0.0.1 (default: a free one, then kept)")
    parser.add_argument("--workers", type=int, default=2, help="MLflow server worker processes (default 2)")
    parser.add_argument("--user", help="share: the user who gets EDIT on the experiment and registered model")
    parser.add_argument("--experiment", default="mnist-vae", help="share: the team's experiment (default mnist-vae)")
    parser.add_argument("--model", default="mnist-vae", help="share: the registered model's name (default mnist-vae)")
    args = parser.parse_args(argv)
    try:
        server = team_server.TeamServer(args.dir, host=args.host, port=args.port, pg_port=args.pg_port, workers=args.workers)
        if args.command == "start":
            admin, user = team_server.admin_from_env(), team_server.user_from_env()
            server.start(admin, user)
            print(f"team server up: MLFLOW_TRACKING_URI={server.url} (artifacts proxied; stop with "
                  f"`python -m mnist_vae.ops.team_server stop --dir {server.root}`)")
        elif args.command == "share":
            if not args.user:
                raise UserError("share needs --user NAME")
            experiment_id = server.share(team_server.admin_from_env(), args.user, args.experiment, args.model)
            print(f"{args.user} may now log runs to experiment {args.experiment!r} ({experiment_id}) "
                  f"and versions of model {args.model!r}")
        elif args.command == "stop":
            server.stop()
            print("team server stopped")
        else:
            print(server.status())
    except UserError as exc:
        print(f"team-server: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
