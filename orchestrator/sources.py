"""The mask sources a sweep may name: the registry of :mod:`workers.mask_sources`.

Each source is declared once there (one module per source: its task, its inits, its
planning rules); this module only re-exports it for the sweep validation and the planner.
"""
from __future__ import annotations

from workers.mask_sources import INITS, MASK_SOURCES, ImpSource, MaskSource, RandomSource

__all__ = ["INITS", "MASK_SOURCES", "ImpSource", "MaskSource", "RandomSource"]
