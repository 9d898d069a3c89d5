"""Everything that knows about Codex: its event shapes, argv, processes, backends.

The core never imports from here except :mod:`.events`, the normalised,
backend-neutral vocabulary both backends translate into.
"""
