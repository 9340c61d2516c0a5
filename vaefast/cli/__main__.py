"""``python -m vaefast.cli``: the ``vaefast`` command."""

import sys

from vaefast.cli import main

sys.exit(main())
