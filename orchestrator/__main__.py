"""``python -m orchestrator`` is the ``prunesweep`` command."""
from .cli import console

console()
