"""``python -m virt_api``: the same as the ``virt-api`` command."""

from virt_api.main import main

raise SystemExit(main())
