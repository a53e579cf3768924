"""First use of a checkpoint given as a hub id: find it in the local cache, else say what will be
downloaded (how many files, how big) and download just the files the loaders read, with progress.

huggingface_hub's timeouts bound each read, and its downloads retry; diffusers' `from_pretrained(hub_id)`
first asks `repo_info` with no timeout at all, so against a hub that accepts connections and never
answers it waits without end (measured: no answer after 25 min). Here the
question "what would be downloaded?" goes to the hub in a worker thread and the caller waits at
most `deadline_s` for the answer; without one it fails at once with a `HubUnavailable` that says
which hub was asked and why it gave nothing. With `HF_HUB_OFFLINE=1` the hub is not asked at all.

The hub endpoint, the cache folder and offline mode are huggingface_hub's own operator settings
(`HF_ENDPOINT`, `HF_HUB_CACHE`/`HF_HOME`, `HF_HUB_OFFLINE`); no request can choose them.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..serving import cancel
from ..core.devices import ModelLoadError
from . import shards

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often the download's progress reaches the caller's bar

# The files each loader reads (no README, images or duplicate weight formats).
ZIMAGE_FILES = ("model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/*.json",
                "text_encoder/*.safetensors", "transformer/*.json", "transformer/*.safetensors", "vae/*.json",
                "vae/*.safetensors")
VL_FILES = ("*.json", "*.safetensors", "merges.txt", "vocab.json", "*.jinja")


class HubUnavailable(Exception):
    """The checkpoint is not in the local cache and the hub gave no answer to download it."""


def is_local(source: str) -> bool:
    """A folder (existing, or written as a path) rather than a hub id."""
    return os.path.isdir(source) or source.startswith(("/", ".", "~")) or os.path.isabs(source)


def load_error(what: str, source: str, err: Exception, repo: str, flag: str, hosted: bool = False) -> ModelLoadError:
    """The message for a checkpoint that cannot be loaded: what, where we looked, why, and the fix.
    Hosted: generic (remote clients learn no server path); the details go to the server log. A
    checkpoint file cut short is named (relative to the checkpoint) with its size and the fix."""
    damaged = shards.advice(source, repo) if os.path.isdir(os.path.expanduser(source)) else ""
    if hosted:
        log.error("could not load the %s from %s: %s", what, source, err, exc_info=err)
        return ModelLoadError(f"The {what} could not be loaded on this server ({type(err).__name__}); "
                              + (f"{damaged}" if damaged else "the operator can read the details in the server log."))
    if damaged:
        return ModelLoadError(f"Could not load the {what} from the local folder "
                              f"{os.path.abspath(os.path.expanduser(source))}. {damaged}")
    if is_local(source):
        where = f"the local folder {os.path.abspath(os.path.expanduser(source))}"
    else:
        where = f"the Hugging Face hub id {source!r} (local cache {cache_dir()})"
    detail = str(err) if isinstance(err, HubUnavailable) else f"{type(err).__name__}: {err}"
    return ModelLoadError(
        f"Could not load the {what} from {where}: {detail}\n"
        f"To fix: download it where the hub is reachable (`hf download {repo} --local-dir DIR`) and "
        f"pass {flag} DIR (env LLM_DIT_{flag[2:].replace('-', '_').upper()}); or run with --tiny "
        f"for offline random-weight models."
    )


def local_folder(source: str, what: str, repo: str, flag: str, patterns, deadline_s: float,
                 hosted: bool = False) -> str:
    """The local folder of a checkpoint: `source` itself, or the snapshot of a hub id (`folder`);
    a `ModelLoadError` with the fix when there is none."""
    if is_local(source):
        if not os.path.isdir(os.path.expanduser(source)):
            raise load_error(what, source, FileNotFoundError("no such folder"), repo, flag, hosted)
        return os.path.expanduser(source)
    try:
        return folder(source, patterns, deadline_s, hosted)
    except cancel.Cancelled:
        raise
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear message
        raise load_error(what, source, err, source, flag, hosted) from err


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def cache_dir() -> str:
    """The hub cache folder, read as huggingface_hub reads it (`HF_HUB_CACHE`, else `HF_HOME`/hub)."""
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.abspath(os.path.expanduser(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")))


def cached(repo: str, patterns=None) -> str | None:
    """The complete cached snapshot of `repo` (the files matching `patterns`), or None. No network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        found = snapshot_download(repo, local_files_only=True, allow_patterns=list(patterns) if patterns else None,
                                  cache_dir=cache_dir())
    except LocalEntryNotFoundError:  # not downloaded, or only part of it (IncompleteSnapshotError)
        return None
    # A snapshot folder exists from the first file on: with the file list cached, every wanted file
    # must be there; without it, at least the files named outright (e.g. model_index.json).
    missing = known_size(repo, patterns) if patterns else 0
    if missing is None:
        missing = sum(not os.path.isfile(os.path.join(found, p)) for p in patterns if not set(p) & set("*?["))
    return None if missing else found


def known_size(repo: str, patterns) -> int | None:
    """Bytes still to download for `repo`, when an earlier (interrupted) download left the file
    list in the cache; None when only the hub can tell. No network."""
    from huggingface_hub import get_cached_repo_tree, try_to_load_from_cache
    from huggingface_hub.errors import CachedRepoTreeNotFoundError
    from huggingface_hub.utils import filter_repo_objects

    cache = cache_dir()
    try:
        tree = get_cached_repo_tree(repo, cache_dir=cache)
    except CachedRepoTreeNotFoundError:
        return None
    wanted = filter_repo_objects(tree, allow_patterns=list(patterns), key=lambda f: f.path)
    return sum(f.size for f in wanted if not isinstance(try_to_load_from_cache(repo, f.path, cache_dir=cache), str))


@dataclass(frozen=True)
class Download:
    """What fetching `repo` will bring: the files not in the cache yet, with their sizes."""

    repo: str
    files: tuple[tuple[str, int], ...]
    patterns: tuple[str, ...]
    cache: str
    endpoint: str

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)

    def announcement(self, hosted: bool = False) -> str:
        """One line for the log and the progress bar; hosted: no server path."""
        where = "" if hosted else f" into {self.cache}"
        count = f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}"
        return f"Downloading {self.repo}: {human_size(self.size)} in {count}{where} (first use only)"


def human_size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def probe(repo: str, patterns, deadline_s: float) -> Download:
    """Ask the hub which files `repo` has and how big they are; wait at most `deadline_s` in all."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.utils import filter_repo_objects

    endpoint, cache = hub_endpoint(), cache_dir()
    if offline():
        raise HubUnavailable("it is not in the local cache, and HF_HUB_OFFLINE is set, so the hub is not asked")
    answers: queue.Queue = queue.Queue(maxsize=1)

    def ask():  # in a worker thread: httpx's timeout bounds each read, not the whole exchange
        try:
            answers.put(HfApi(endpoint=endpoint).model_info(repo, files_metadata=True, timeout=deadline_s))
        except Exception as err:  # noqa: BLE001 - handed to the caller's thread
            answers.put(err)

    threading.Thread(target=ask, daemon=True, name=f"hub probe {repo}").start()
    try:
        info = answers.get(timeout=deadline_s)
    except queue.Empty:
        raise HubUnavailable(f"it is not in the local cache, and the hub at {endpoint} did not answer within "
                             f"{deadline_s:g} s") from None
    if isinstance(info, Exception):
        raise HubUnavailable(f"it is not in the local cache, and the hub at {endpoint} could not be asked for it "
                             f"({type(info).__name__}: {_first_line(info)})") from info
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or ()}
    wanted = filter_repo_objects(sorted(sizes), allow_patterns=list(patterns))
    missing = tuple((name, sizes[name]) for name in wanted
                    if not isinstance(try_to_load_from_cache(repo, name, cache_dir=cache, revision=info.sha), str))
    return Download(repo, missing, tuple(patterns), cache, endpoint)


def fetch(download: Download, hosted: bool = False) -> str:
    """Download the files (huggingface_hub's `snapshot_download`, its parallel workers and its
    cache) and return the snapshot folder. Progress goes to one tqdm bar made in the calling
    thread, whose description is the announcement (gradio's `track_tqdm` shows it on the page)."""
    from huggingface_hub import snapshot_download

    log.info("%s", download.announcement())
    tally = _tally()
    result: dict = {}

    def work():
        try:
            result["folder"] = snapshot_download(download.repo, allow_patterns=list(download.patterns),
                                                 cache_dir=download.cache, endpoint=download.endpoint,
                                                 tqdm_class=tally)
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = err

    worker = threading.Thread(target=work, daemon=True, name=f"download {download.repo}")
    worker.start()
    # The library's bars are updated from its worker threads, which a web page's progress
    # tracking cannot see; this bar is updated here, from the thread that asked for the model.
    with tqdm(total=download.size, unit="B", unit_scale=True, desc=download.announcement(hosted)) as bar:
        while worker.is_alive():
            worker.join(POLL_S)
            bar.update(tally.bytes() - bar.n)
            cancel.check()  # the client went away: stop waiting (the download finishes into the cache)
    if "error" in result:
        raise result["error"]
    log.info("downloaded %s into %s", download.repo, result["folder"])
    return result["folder"]


def folder(source: str, patterns, deadline_s: float, hosted: bool = False) -> str:
    """The local folder of `source`, a hub id: the cached snapshot, else a fresh download after a
    probe of at most `deadline_s`. `HubUnavailable` when neither can be had."""
    found = cached(source, patterns)
    if found:
        return found
    return fetch(probe(source, patterns, deadline_s), hosted)


def _tally():
    """A tqdm class for `snapshot_download` that shows nothing and keeps its bars to be read."""

    class Tally(tqdm):
        bars: list = []

        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})
            Tally.bars.append(self)

        @classmethod
        def bytes(cls) -> int:
            return int(max((b.n for b in cls.bars if b.unit == "B"), default=0))

    return Tally


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
