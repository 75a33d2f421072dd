"""``python -m orchestrator`` is the ``prunesweep`` command."""
import sys

from .cli import main

sys.exit(main())
