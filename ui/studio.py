"""What every tab is built from: the model manager, the settings, the hosting policy, the output
folder and the admission rule for the queue."""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field

from llm_dit.runtime.models import ModelManager
from llm_dit.serving.outputs import OutputFolder
from llm_dit.serving.policy import Policy
from llm_dit.runtime.limits import dit_max_size
from llm_dit.runtime.settings import Settings

from .guard import Guards
from .limits import client_address
from .sessions import SessionTable

GPU = "gpu"  # one job at a time on the accelerator: generations, VL extraction and preview, local rewrites
HTTP = "http"  # rewrites through an OpenAI-compatible server: never hold the GPU slot
HTTP_LIMIT = 4
QUEUE_SIZE = 32
ADMISSION_HELD_S = 2.0  # an admitted job's place is held until gradio records its event (milliseconds later)
TIMELINE_SESSIONS = 1024  # sessions whose last timeline is kept, the least recently used forgotten first


class Admission:
    """Hosted: how many jobs one browser session, and one client address over all its sessions
    (`ui.limits.client_address`: a fresh session hash per job does not make a new client), may
    have waiting or running at once, so that one client cannot fill the queue. Reads gradio's own
    record of the pending events (queued and running, `/call` and `/queue/join` alike)."""

    def __init__(self, limit: int, client_limit: int = 0, trusted_proxy: str = ""):
        self.limit, self.client_limit, self.trusted_proxy = limit, client_limit, trusted_proxy
        self.demo = None  # set once the Blocks exist
        # Gradio runs the validators of a burst of joins side by side and records their events only
        # afterwards, so counting its record alone let 22 of 60 parallel joins through a limit of 8.
        # An admission is therefore held here, by its HTTP request, until gradio records its event,
        # its handler starts (`started`), or ADMISSION_HELD_S passes (a join that failed after it).
        self._lock = threading.Lock()
        self._held: list = []  # (admitted at, the HTTP request, its limits' keys)

    def _limits(self, session) -> list:
        """The limits in force for `session`: (key, limit, whether an event counts against it, refusal)."""
        limits = []
        if self.limit:
            limits.append((("session", session.session_hash), self.limit,
                           lambda e, h=session.session_hash: e.session_hash == h,
                           "queue: you already have {} job(s) waiting or running here (the limit is {}): wait "
                           "for one to finish, or cancel one."))
        if self.client_limit:
            client = client_address(session, self.trusted_proxy)
            limits.append((("client", client), self.client_limit,
                           lambda e: client_address(e.request, self.trusted_proxy) == client,
                           "queue: your address already has {} job(s) waiting or running here, over all its "
                           "sessions (the limit is {} per client): wait for one to finish."))
        return limits

    def refuse(self, session, hold: bool = True) -> str | None:
        """Why this session may not queue another job, or None. Jobs are the events that have a
        validator (a page's pre-checks are not jobs); with `hold`, None holds the job's place until
        gradio records its event, so the validators of a burst cannot all see the same free places."""
        if self.demo is None or session is None:
            return None
        queue, now = self.demo._queue, time.monotonic()
        jobs = [e for e in list(queue.event_ids_to_events.values())
                if getattr(getattr(e, "fn", None), "validator", None) is not None]
        limits = self._limits(session)
        with self._lock:
            recorded = {id(e.request) for e in jobs}
            self._held = [h for h in self._held if now - h[0] < ADMISSION_HELD_S and id(h[1]) not in recorded]
            for key, limit, counts, refusal in limits:
                pending = sum(map(counts, jobs)) + sum(key in keys for _, _, keys in self._held)
                if pending >= limit:
                    return refusal.format(pending, limit)
            if hold:
                self._held.append((now, session.request, [key for key, *_ in limits]))
        return None

    def started(self, session) -> None:
        """A job's handler runs: gradio has recorded its event, so its admission is no longer held
        (an event may start and end between two looks at gradio's record)."""
        if session is not None:
            with self._lock:
                self._held = [h for h in self._held if h[1] is not session.request]

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
    # each session's last generation timeline: hosted, the status tab shows a visitor only theirs
    timelines: SessionTable = field(default_factory=lambda: SessionTable(TIMELINE_SESSIONS))

    def note_result(self, session, item) -> None:
        """Remember the timeline in a handler's output (a generation's metadata) for its session."""
        found = [v["timeline"] for v in (item if isinstance(item, (tuple, list)) else ())
                 if isinstance(v, dict) and isinstance(v.get("timeline"), list)]
        if found and session is not None:
            self.timelines.update(session.session_hash, lambda _: found[-1], None)

    def timeline_of(self, session) -> list:
        """The timeline the status tab shows: hosted, this session's own; locally, the last one."""
        if not self.hosted:
            return self.manager.last_timeline
        return self.timelines.get(session.session_hash, []) if session is not None else []

    @classmethod
    def create(cls, settings: Settings, manager: ModelManager | None = None) -> "Studio":
        manager = manager or ModelManager(settings)
        policy = manager.policy
        shown = None
        if policy.hosted:
            from pathlib import Path

            shown = Path(settings.output_dir).name or "outputs"
        outputs = OutputFolder(settings.output_dir, policy.output_keep, shown, unguessable=policy.hosted)
        return cls(manager, settings, policy, outputs,
                   Admission(policy.max_pending, policy.max_pending_client, policy.trusted_proxy))

    @functools.cached_property
    def size_limit(self) -> tuple[int, int]:
        """The largest (height, width) the DiT makes, from its config (llm_dit.runtime.limits)."""
        return dit_max_size(self.manager.zimage_source)

    @property
    def hosted(self) -> bool:
        return self.policy.hosted

    def cache_partition(self, session) -> str:
        """The embedding caches' partition for this visitor's jobs (`llm_dit.runtime.cache`): hosted,
        their session (another visitor's prompt or reference never comes back from the cache, so
        its timing tells nothing); locally one partition for all."""
        return (getattr(session, "session_hash", None) or "") if self.hosted else ""
