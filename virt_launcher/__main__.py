"""``python -m virt_launcher``: the same as the ``virt-launcher`` command."""

import sys

from virt_launcher.cli import main

sys.exit(main())
