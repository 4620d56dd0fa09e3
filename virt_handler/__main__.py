"""``python -m virt_handler``: the virt-handler command."""

from virt_handler.main import main

raise SystemExit(main())
