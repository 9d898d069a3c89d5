"""``python -m trio_codex_shim``: the same as the ``trio-codex-shim`` command."""

from .cli import main

main()
