"""Runtime: settings, the model manager (lazy, lock-guarded loading), the memory plan and its
levers, placement, downloads, tiny checkpoints, the scorer and the remote encoders the manager
swaps in for local models.

May import `conditioning`, `core` and `serving`.
"""
