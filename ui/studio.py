"""What every tab is built from: the model manager, the settings, the hosting policy, the output
folder and the admission rule for the queue."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from llm_dit.runtime.models import ModelManager
from llm_dit.serving.outputs import OutputFolder
from llm_dit.serving.policy import Policy
from llm_dit.runtime.limits import dit_max_size
from llm_dit.runtime.settings import Settings

from .guard import Guards

GPU = "gpu"  # one job at a time on the accelerator: generations, VL extraction, local rewrites
HTTP = "http"  # rewrites through an OpenAI-compatible server: never hold the GPU slot
PREVIEW = "preview"  # cheap recomputes from cached data
HTTP_LIMIT = 4
QUEUE_SIZE = 32


class Admission:
    """Hosted: how many jobs one browser session may have waiting or running at once, so that one
    client cannot fill the queue. Reads gradio's own record of each session's pending events."""

    def __init__(self, limit: int):
        self.limit = limit
        self.demo = None  # set once the Blocks exist

    def refuse(self, session) -> str | None:
        if not self.limit or self.demo is None or session is None:
            return None
        pending = self.demo._queue.pending_event_ids_session.get(session.session_hash, ())
        if len(pending) >= self.limit:
            return (f"queue: you already have {len(pending)} job(s) waiting or running here (the limit is "
                    f"{self.limit}): wait for one to finish, or cancel one.")
        return None

    def connected(self, session) -> bool:
        """Whether the client that sent this job still listens. When a session's event stream
        closes (the page left, the client process ended), gradio marks its events dead
        (`alive`) and may drop its message queue; it notices that only when a job yields, and
        a job that yields nothing while it works (so the progress bar stays) asks here instead."""
        queue = getattr(self.demo, "_queue", None)
        listening = getattr(queue, "pending_messages_per_session", None)
        if session is None or listening is None:
            return True
        if session.session_hash not in listening:
            return False
        events = [e for job in getattr(queue, "active_jobs", ()) if job for e in job
                  if getattr(e, "session_hash", None) == session.session_hash]
        return all(getattr(e, "alive", True) for e in events)


@dataclass
class Studio:
    manager: ModelManager
    settings: Settings
    policy: Policy
    outputs: OutputFolder
    admission: Admission
    guards: Guards = field(default_factory=Guards)  # run buttons: refusals where seen, Stop (ui/guard.py)

    @classmethod
    def create(cls, settings: Settings, manager: ModelManager | None = None) -> "Studio":
        manager = manager or ModelManager(settings)
        policy = manager.policy
        shown = None
        if policy.hosted:
            from pathlib import Path

            shown = Path(settings.output_dir).name or "outputs"
        outputs = OutputFolder(settings.output_dir, policy.output_keep, shown, unguessable=policy.hosted)
        return cls(manager, settings, policy, outputs, Admission(policy.max_pending))

    @functools.cached_property
    def size_limit(self) -> tuple[int, int]:
        """The largest (height, width) the DiT makes, from its config (llm_dit.runtime.limits)."""
        return dit_max_size(self.manager.zimage_source)

    @property
    def hosted(self) -> bool:
        return self.policy.hosted
