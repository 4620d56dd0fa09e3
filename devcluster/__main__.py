"""``python -m devcluster``: the devcluster CLI."""

from devcluster.cli import main

raise SystemExit(main())
