"""The output folder: atomic PNG writes, a retention policy, and disk errors that say the fix."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

# the names the app gives: a time stamp, what made it, a seed or a random part; PNGs, exports,
# sweep tables and a sweep's cell folder (no suffix); under studies/, the study folders of sweeps
# (compare) and studies (study). An operator's own files never match.
MADE_HERE = re.compile(r"\d{8}-\d{6}-(?:txt2img|img2img|vl|compare|study)-[0-9a-z-]+(?:\.(?:png|safetensors|csv|json))?")
RANDOM_PART = re.compile(r"-[0-9a-f]{16}(?:-|\.|$)")  # what every hosted name carries
UMASK = os.umask(0o022)  # read once, at import (os.umask both sets and returns it), and put back
os.umask(UMASK)
STUDIES = "studies"  # <output>/studies/<name>/: the study folders of sweeps and studies (llm_dit.studies.runner)
STUDY_INFO = "study.json"  # a study folder's record; its "status" is "running" until the runner finishes it
REFERENCES = "references"  # <output>/studies/references/<sha256>-<random>/: stored uploads studies name
ORPHAN_AGE_S = 600  # a stored reference no study names is pruned once this old (a run may be starting)


class OutputFolder:
    """Where generated files go. `keep` > 0 keeps at most `keep` of the files the app wrote (PNGs,
    exported embeddings, sweep tables, a sweep's cells, the study folders of sweeps and studies
    under `studies/`), oldest deleted first."""

    def __init__(self, path: str | Path, keep: int = 0, shown_as: str | None = None, unguessable: bool = False):
        self.path = Path(path).expanduser().resolve()
        self.keep = keep
        self.shown_as = shown_as or str(self.path)  # how messages name it (hosted: no server path)
        # Hosted: the folder is served (gradio's allowed_paths, so results stored outside its temp
        # folder can be returned), and a name made of a time stamp and a seed can be guessed by
        # anyone; each name then also carries 64 random bits.
        self.unguessable = unguessable
        self._lock = threading.Lock()

    def stem(self, kind: str) -> str:
        """A new name's stem: the time stamp first (what `prune` recognises), then `kind`, then,
        when `unguessable`, 16 random hex digits (else 6, to tell apart two in one second)."""
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(8 if self.unguessable else 3)}"

    def _private(self, name: str) -> str:
        if not self.unguessable:
            return name
        path = Path(name)
        return f"{path.stem}-{secrets.token_hex(8)}{path.suffix}"

    def write(self, name: str, write_to) -> Path:
        """`write_to(tmp_path)` writes the file; it appears under `name` only when complete (a temp
        file in the same folder, then an atomic rename): a full disk leaves no partial file.
        Raises ValueError naming the folder and the fix when the disk refuses."""
        tmp = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=Path(name).suffix, dir=self.path)
            os.close(fd)
            write_to(tmp)
            os.chmod(tmp, 0o666 & ~UMASK)  # a temp file is 0600: the file gets what open() would give it
            with self._lock:
                target = self._free_name(self._private(name))
                os.replace(tmp, target)
            tmp = None
        except OSError as err:
            raise ValueError(f"output_dir: could not save {Path(name).name} in the output folder {self.shown_as} "
                             f"({err.strerror or type(err).__name__}): free space there, make it writable, or "
                             f"point --output-dir at another folder. The result was still returned.") from None
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        self.prune()
        return target

    def _free_name(self, name: str) -> Path:
        stem, suffix = Path(name).stem, Path(name).suffix
        path, n = self.path / name, 1
        while path.exists():
            n += 1
            path = self.path / f"{stem}-{n}{suffix}"
        return path

    def made_here(self, name: str) -> bool:
        return bool(MADE_HERE.fullmatch(name)) and (not self.unguessable or bool(RANDOM_PART.search(name)))

    def prune(self, protect: str = "") -> list[Path]:
        """Delete the oldest entries while more than `keep` files remain. Every kind the app writes
        counts, a sweep's cell folder by the files in it, and a study folder under `studies/` by
        every file in it, removed whole (on a hosted Space, repeated exports, sweeps or studies
        must not fill the disk); only names the app gives (`made_here`): an operator's own files
        in the folder are never touched. A study still running (its study.json says so) and names
        starting with `protect` (a sweep still being written) stay. Returns what was deleted."""
        if self.keep <= 0:
            return []
        with self._lock:
            entries = []  # (time, path, files, removable)
            for path in self.path.iterdir() if self.path.is_dir() else ():
                try:
                    if self.made_here(path.name) and not path.is_symlink():
                        files = sum(1 for _ in path.iterdir()) if path.is_dir() else 1
                        entries.append((path.stat().st_mtime_ns, path, max(1, files), True))
                except OSError:  # deleted meanwhile
                    continue
            entries += self._studies()
            entries.sort()
            total, doomed = sum(files for _, _, files, _ in entries), []
            for _, path, files, removable in entries:
                if total <= self.keep:
                    break
                if not removable or (protect and path.name.startswith(protect)):
                    continue
                doomed.append(path)
                total -= files
            for path in doomed:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            doomed += self._orphan_references()
        return doomed

    def _orphan_references(self) -> list[Path]:
        """Delete the stored references (studies/references/*/) that no study folder's study.json
        names any more (their studies were pruned), once ORPHAN_AGE_S old."""
        store = self.path / STUDIES / REFERENCES
        if not store.is_dir() or store.is_symlink():
            return []
        named = "".join(info.read_text(encoding="utf-8", errors="replace")
                        for info in (self.path / STUDIES).glob(f"*/{STUDY_INFO}"))
        gone = []
        for folder in store.iterdir():
            try:
                old = time.time() - folder.stat().st_mtime > ORPHAN_AGE_S
            except OSError:
                continue
            if old and folder.is_dir() and not folder.is_symlink() and f"/{folder.name}/" not in named:
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(folder)
        return gone

    def _studies(self) -> list[tuple]:
        """The study folders the app made under `studies/`: (when last written, folder, its files,
        whether it may go: not while its study.json says `running`). A folder without a readable
        study.json (one being created) is left alone and not counted."""
        found = []
        root = self.path / STUDIES
        for folder in root.iterdir() if root.is_dir() and not root.is_symlink() else ():
            try:
                if not self.made_here(folder.name) or folder.is_symlink() or not folder.is_dir():
                    continue
                info = folder / STUDY_INFO
                status = json.loads(info.read_text(encoding="utf-8")).get("status", "running")
                files = sum(1 for p in folder.rglob("*") if p.is_file())
                found.append((info.stat().st_mtime_ns, folder, max(1, files), status != "running"))
            except (OSError, ValueError, AttributeError):  # being written, deleted meanwhile, or not a study
                continue
        return found
