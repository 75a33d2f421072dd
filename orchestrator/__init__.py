"""prunesweep's orchestrator: sweep spec, planner, ledger, backends and the command line."""
