"""Test support shipped with the package: fake Codex, mock model server, Hypothesis strategies."""
