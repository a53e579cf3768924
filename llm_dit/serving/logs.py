"""Start-up noise: warnings optional libraries log on import that say nothing to a user of this app.

transformers and diffusers import torchao whenever it is installed (their quantizer registries),
even when nothing is quantized; torchao then logs that its CUDA-only kernels did not load, and
diffusers that torchao's tensor types are unavailable; torch logs a deprecation for enums torchao
registers. Each is dropped by its exact wording (a logging filter on the logger that emits it),
so any other warning of those libraries still shows. Call `quiet_imports()` before importing them.
"""

from __future__ import annotations

import logging
import re

# logger name -> the messages of it that are dropped
KNOWN = {
    "torchao": re.compile(r"Failed to load .*torchao/_C\w*\.[\w.-]*so\b"),
    "diffusers.quantizers.torchao.torchao_quantizer": re.compile(r"Unable to import `torchao` Tensor objects"),
    "torch.utils._pytree": re.compile(r"is an Enum subclass and is now natively supported by torch\.compile"),
}


class _Drop(logging.Filter):
    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_imports() -> None:
    """Install the filters (once; repeated calls add nothing)."""
    for name, pattern in KNOWN.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(pattern))
