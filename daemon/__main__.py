"""``python -m chatmod``."""

import sys

from chatmod.cli.main import main

sys.exit(main())
