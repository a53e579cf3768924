"""The output folder: atomic PNG writes, a retention policy, and disk errors that say the fix."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path


class OutputFolder:
    """Where generated PNGs go. `keep` > 0 keeps only the newest `keep` PNGs (oldest deleted)."""

    def __init__(self, path: str | Path, keep: int = 0, shown_as: str | None = None):
        self.path = Path(path).expanduser().resolve()
        self.keep = keep
        self.shown_as = shown_as or str(self.path)  # how messages name it (hosted: no server path)
        self._lock = threading.Lock()

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
            with self._lock:
                target = self._free_name(name)
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

    def prune(self) -> list[Path]:
        """Delete the oldest PNGs beyond `keep`; returns what was deleted."""
        if self.keep <= 0:
            return []
        with self._lock:
            pngs = sorted((p for p in self.path.glob("*.png") if p.is_file()), key=lambda p: p.stat().st_mtime_ns)
            doomed = pngs[: max(0, len(pngs) - self.keep)]
            for path in doomed:
                path.unlink(missing_ok=True)
        return doomed
