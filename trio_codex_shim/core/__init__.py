"""The sans-IO shim: every rule of the shim's behaviour, with no I/O inside.

Inputs are Commands, normalised Codex events, turn endings and clock ticks;
outputs are protocol Events to send and actions (start a turn, stop a turn,
exit) for the Trio drivers to carry out.  See :class:`~.machine.ShimCore`.
"""
