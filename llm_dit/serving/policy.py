"""The hosting policy: what the operator decided, and what a remote client may choose.

Two kinds of caller reach this code. The *operator* starts the app: flags, environment variables
and files on the server are theirs. *Remote clients* send requests: every request field and every
event (private ones too, by `fn_index`) is theirs. On a hosted app (a Space, a shared server) no
request field may name an environment variable, a server path or a network destination the
operator did not list here. Locally, the person at the keyboard is the operator, so they may.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .budgets import Budgets, choose

HOSTING = ("auto", "hosted", "local")
LORA_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class RewriteServer:
    """An OpenAI-compatible server the operator configured; clients pick it by `name`."""

    name: str
    base_url: str
    api_key_env: str = ""  # the environment variable holding its key ("" = no key)
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    hosted: bool
    reason: str  # why hosted or local, for the status tab and the start-up log
    rewrite_servers: dict = field(default_factory=dict)  # name -> RewriteServer
    lora_dir: Path | None = None
    output_keep: int = 0  # files kept in the output folder (0 = all)
    max_upload_bytes: int = 0  # 0 = no cap
    max_pending: int = 0  # queued or running jobs per browser session (0 = no cap)
    max_pending_client: int = 0  # queued or running jobs per client address, all its sessions (0 = no cap)
    trusted_proxy: str = ""  # the reverse proxy whose X-Forwarded-For names the client ("" = none)
    budgets: Budgets = field(default_factory=Budgets)  # how much one request may ask (0 = no budget)
    # gradio's copies of results and uploads older than this are deleted hourly (0 = kept): hosted,
    # every visitor's files land in one cache that would otherwise only grow
    cache_max_age_s: int = 0

    # ---- what clients may choose -------------------------------------------------------------
    def rewrite_target(self, server: str, base_url: str, api_key_env: str, model: str) -> tuple[str, str, str]:
        """(url, key variable, label for messages) of a rewrite request, or a ValueError.

        A configured server is chosen by name. An arbitrary URL (and the variable holding its key)
        only locally: hosted, that would let any client make the server send its secrets anywhere.
        """
        if server:
            chosen = self.rewrite_servers.get(server)
            if chosen is None:
                raise ValueError(f"server={server!r} is not configured here: choose one of "
                                 f"{self._server_names()}.")
            if chosen.models and model not in chosen.models:
                raise ValueError(f"model={model!r} is not offered by server {server!r}: use one of "
                                 f"{', '.join(chosen.models)}.")
            return chosen.base_url, chosen.api_key_env, f"server {server!r}"
        if self.hosted:
            what = "base_url" if base_url else "server"
            raise ValueError(f"{what}: this app is hosted, so it only talks to the rewrite servers its operator "
                             f"configured: choose one by name with server= (one of {self._server_names()}).")
        if not base_url:
            raise ValueError("base_url is empty: give an OpenAI-compatible URL (e.g. http://127.0.0.1:8000/v1) "
                             "or a configured server name.")
        return base_url, api_key_env, f"server at {base_url}"

    def check_rewrite_fields(self, base_url: str, api_key_env: str) -> None:
        if self.hosted and (base_url or api_key_env):
            name = "base_url" if base_url else "api_key_env"
            raise ValueError(f"{name}: this app is hosted: a request may not choose a server URL or an "
                             f"environment variable; choose a configured server by name with server= "
                             f"(one of {self._server_names()}).")

    def _server_names(self) -> str:
        return ", ".join(self.rewrite_servers) or "none: the operator configured no rewrite server"

    def lora_names(self) -> list[str]:
        """The LoRAs offered by name: the operator's folder's `.safetensors` files."""
        if self.lora_dir is None or not self.lora_dir.is_dir():
            return []
        return sorted(p.stem for p in self.lora_dir.glob("*" + LORA_SUFFIX) if p.is_file())

    def lora_path(self, entry: str) -> str:
        """A LoRA entry (a name from the operator's folder, or locally also a path) -> file path.

        Hosted, only names are accepted and nothing the client typed is ever looked up on disk, so
        no answer can tell a missing file from an unreadable one.
        """
        if entry in self.lora_names():
            return str(self.lora_dir / (entry + LORA_SUFFIX))
        offered = ", ".join(self.lora_names()) or "none (the operator sets --lora-dir)"
        if self.hosted:
            raise ValueError(f"loras: {entry!r} is not one of the LoRAs this app offers: choose from {offered}.")
        if not os.path.isfile(entry):
            raise ValueError(f"loras: {entry!r} does not exist: give the path of a LoRA .safetensors file or a "
                             f"name from --lora-dir ({offered}), as entry or entry:scale (one per line).")
        if not entry.endswith(LORA_SUFFIX):
            raise ValueError(f"loras: {entry!r} is not a .safetensors file: only safetensors LoRAs load.")
        return entry

    # ---- what clients may see ------------------------------------------------------------------
    def public_name(self, source: str) -> str:
        """A model source or file as clients see it: hosted, a local path becomes its base name."""
        local = source.startswith(("/", ".", "~")) or os.path.isabs(source) or os.path.exists(source)
        if self.hosted and local:
            return Path(source).name
        return source

    def describe(self) -> str:
        mode = "hosted" if self.hosted else "local"
        return f"{mode} ({self.reason})"


def is_loopback(host: str) -> bool:
    if host in ("", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def share_wanted(share: bool, environ) -> tuple[bool, str]:
    """Whether gradio will open a public share link, and why: asked for, `GRADIO_SHARE=True`, or a
    hosted notebook (Colab, Kaggle, SageMaker), where gradio opens one by itself. The app passes
    the answer to `launch()` explicitly, so the policy and gradio cannot disagree."""
    if share:
        return True, "a public share link is on (--share)"
    if str(environ.get("GRADIO_SHARE", "")).lower() == "true":
        return True, "a public share link is on (GRADIO_SHARE=True)"
    if environ.get("COLAB_RELEASE_TAG") or environ.get("COLAB_GPU") or "google.colab" in sys.modules:
        return True, "running in Google Colab (gradio opens a share link there)"
    if environ.get("KAGGLE_KERNEL_RUN_TYPE") or os.path.exists("/home/ec2-user/SageMaker"):
        return True, "running in a hosted notebook (gradio opens a share link there)"
    return False, ""


def decide_hosted(hosting: str, host: str, share: bool, environ) -> tuple[bool, str]:
    """hosted or local, and why: auto is hosted unless the app is certain only this machine can
    reach it (a Space, a non-loopback bind, a share link or a hosted notebook are all hosted). A
    reverse proxy on loopback cannot be seen from here: it needs --hosting hosted."""
    if hosting != "auto":
        return hosting == "hosted", f"--hosting {hosting}"
    if environ.get("SPACE_ID"):
        return True, f"running on the Space {environ['SPACE_ID']}"
    bound = host or environ.get("GRADIO_SERVER_NAME", "")
    if not is_loopback(bound):
        return True, f"listening on {bound}, not only on loopback"
    shared, why = share_wanted(share, environ)
    if shared:
        return True, why
    return False, "listening on loopback only"


def load_rewrite_servers(path: str) -> dict:
    """`[servers.NAME]` tables with `base_url`, optional `api_key_env` and `models`, from the
    operator's TOML file; a mistake stops the app at start-up with the file and entry named."""
    if not path:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"rewrite_servers: cannot read {path} ({err}): fix the file or the flag.") from None
    servers = {}
    for name, entry in (data.get("servers") or {}).items():
        if not isinstance(entry, dict) or not str(entry.get("base_url", "")).startswith(("http://", "https://")):
            raise ValueError(f"rewrite_servers: [servers.{name}] in {path} needs base_url = 'http(s)://…'.")
        models = entry.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ValueError(f"rewrite_servers: [servers.{name}].models in {path} must be a list of names.")
        servers[name] = RewriteServer(name, entry["base_url"], str(entry.get("api_key_env", "")), tuple(models))
    return servers


def from_settings(settings, environ=None) -> Policy:
    environ = os.environ if environ is None else environ
    hosted, reason = decide_hosted(settings.hosting, settings.host, settings.share, environ)
    keep = settings.output_keep if settings.output_keep >= 0 else (500 if hosted else 0)
    upload = settings.max_upload_mb * 2**20
    body = settings.max_body_mb * 2**20 if settings.max_body_mb >= 0 else upload * 4 // 3 + 2**20
    budgets = choose(hosted, settings.max_image_pixels, settings.max_output_pixels, settings.max_steps,
                     settings.max_cells, settings.max_work, body, settings.max_batch_pixels, upload)
    return Policy(hosted=hosted, reason=reason, rewrite_servers=load_rewrite_servers(settings.rewrite_servers),
                  lora_dir=Path(settings.lora_dir).expanduser() if settings.lora_dir else None,
                  output_keep=keep, max_upload_bytes=upload,
                  max_pending=settings.max_pending if hosted else 0,
                  max_pending_client=settings.max_pending_client if hosted else 0,
                  trusted_proxy=settings.trusted_proxy, budgets=budgets, cache_max_age_s=86_400 if hosted else 0)
