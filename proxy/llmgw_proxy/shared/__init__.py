"""The shared store (Redis, through redis-py's asyncio client): the one I/O layer for state that
sidecars share. ``store`` owns the connection, its bounds and its health; ``limiter`` runs the
global limits and budgets of ``policies.global_limits`` through it, with the per-pod fallback."""
