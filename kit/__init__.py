"""The lowest layer: small asyncio and file kits (one debouncer, guarded background
tasks, atomic files) that every other package may use. It imports nothing of ours."""
