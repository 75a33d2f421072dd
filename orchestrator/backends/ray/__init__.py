"""The ray backend: ``backend.py`` runs stages, ``settings.py`` is its section of the sweep file."""
