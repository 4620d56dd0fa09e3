"""``python -m virtctl``: the same as the ``virtctl`` command."""

from virtctl.cli import main

main()
