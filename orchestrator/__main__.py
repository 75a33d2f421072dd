"""``python -m orchestrator`` is the ``prunesweep`` command."""
from orchestrator.cli import console

console()
