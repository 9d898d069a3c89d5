"""Run the OpenAI Codex CLI as a long-lived agent behind batty's shim protocol."""
