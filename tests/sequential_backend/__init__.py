"""A backend written for the tests: stages one after another, each in a fresh process on this machine.

It exists to show that a backend is one subpackage plus one line in
``orchestrator.backends.BACKENDS`` (see ``docs/extending/backend.md``); nothing else knows it.
"""
