"""Stage workers of prunesweep: everything that trains, prunes and evaluates.

A backend runs one stage folder with :func:`workers.entry.run_stage` (or
``python -m workers STAGE_DIR``). The workers know nothing about schedulers or the
sweep: a stage folder's ``stage.json`` says all they need.
"""
