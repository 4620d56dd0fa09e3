"""``python -m virt_launcher.prepare``: one preparation request on stdin, one result on stdout."""

import sys

from .run import main

sys.exit(main())
