"""Controls built from the request's declared fields, and the generic request handler.

Every generating event is wired the same way (`Endpoint`):
- a validator runs before the queue (gradio's `validator=`): it builds the request, runs the
  cheap checks (`llm_dit.core.request.validate` under the hosting policy) and the per-session pending
  limit, so a bad request never waits in the queue or takes a ZeroGPU slot, and its message names
  the field (API clients get it as a 422 naming the parameter);
- the handler (an async generator) runs the job in a worker thread; when the client cancels
  (gradio cancels the handler's task) or disconnects (its session's event stream closes), the
  stop event is set and the job stops at its next denoise step (or cell, or token), saving nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import re
import threading

import gradio as gr

from llm_dit.serving import cancel
from llm_dit.core.attention import attention_backends
from llm_dit.runtime.cache import partition as cache_partition
from llm_dit.runtime.models import ModelLoadError
from llm_dit.core.request import GenerationRequest, field_meta
from llm_dit.core.templates import names as template_names
from llm_dit.runtime.limits import check_size

from .docs import docstring
from .fields import FieldDropdown, FieldNumber, FieldSlider, UploadImage

LONG_TEXT = {"prompt": 3, "negative_prompt": 2, "system_prompt": 2, "thinking_content": 2,
             "assistant_content": 2, "loras": 2}
HEARTBEAT_S = 0.1  # how often a running job checks whether its client is still there
NAMED = re.compile(r"\b([a-z_]+)=")  # a field named with its value: "width=1000"
FIELD_AT_START = re.compile(r"^\s*([a-z_]+)(?:\[\d+\])?(?:\s*[=:]|\s+(?:is|has|needs)\b)")


def control(name: str, hosted: bool = False, **kwargs):
    """A gradio component for one request field: label, default and range come from the field."""
    meta = field_meta(name)
    common = {"label": meta["label"], "info": meta["info"] or None, "value": meta["default"], **kwargs}
    if name == "attention_backend":
        return FieldDropdown(choices=attention_backends(hosted=hosted), **common)
    if name == "template":
        return FieldDropdown(choices=[("(none)", "")] + template_names("style"), **common)
    if "choices" in meta:
        return FieldDropdown(choices=list(meta["choices"]), **common)
    if isinstance(meta["default"], bool):
        return gr.Checkbox(**common)
    if isinstance(meta["default"], str):
        return gr.Textbox(lines=LONG_TEXT.get(name, 1), max_length=meta.get("max_chars"), **common)
    bounds = {"minimum": meta["minimum"], "maximum": meta["maximum"], **common}  # a kwarg may narrow them
    if "step" not in meta:  # seed: free integer entry
        return FieldNumber(precision=0, **bounds)
    return FieldSlider(step=meta["step"], **bounds)


def image_input(label: str, **kwargs):
    """An upload handed to us as the original file (no gradio conversion: 16-bit, alpha and CMYK
    are converted by `llm_dit.core.images.load_image`, which also names the field when it cannot)."""
    return UploadImage(label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"], **kwargs)


def field_of(message: str) -> str | None:
    """The request field a validation message starts with ("seed=-5 is …", "loras: …")."""
    match = FIELD_AT_START.match(message)
    return match.group(1) if match else None


class Endpoint:
    """One API event: `fn` (the handler) and `validator`, whose API parameters are `leading`
    (e.g. images) then exactly `fields`.

    `action(request, **leading values)` does the work (a function, or a generator with `stream`).
    `check(request, **leading values)` (optional) adds cheap checks of its own; it also runs
    inside the handler, so a raw call that skips the validator is checked all the same. With
    `sized`, the size is checked against the DiT's maximum (`Studio.size_limit`).
    """

    def __init__(self, studio, name: str, fields: list[str], action, leading: tuple = (),
                 request_cls=GenerationRequest, stream: bool = False, with_session: bool = False,
                 check=None, outputs: int = 1, sized: bool = False):
        self.studio, self.name, self.fields, self.action = studio, name, fields, action
        self.leading, self.request_cls, self.stream, self.check = leading, request_cls, stream, check
        self.with_session, self.outputs, self.sized = with_session, outputs, sized
        params = [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for p in leading]
        own = studio.manager.request_defaults()  # the checkpoint's (Z-Image Base: CFG, steps)
        params += [inspect.Parameter(f, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                     default=own.get(f, field_meta(f)["default"])) for f in fields]
        self.api_params = [p.name for p in params]
        params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=gr.Progress(track_tqdm=True)))
        # gradio fills a gr.Request parameter itself; it is not an API parameter
        params.append(inspect.Parameter("session", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                        annotation=gr.Request))
        self.signature = inspect.Signature(params)
        self.fn = self._named(self._handle, name)
        self.fn.__doc__ = docstring(name, leading, fields, request_cls)  # API page and MCP tool descriptions
        self.validator = self._named(self._validate, name + "_validator")

    def _named(self, fn, name):
        """`fn` under the event's name and API signature (an async generator stays one)."""
        if inspect.isasyncgenfunction(fn):
            async def wrapper(*args, **kwargs):
                async for item in fn(*args, **kwargs):
                    yield item
        else:
            def wrapper(*args, **kwargs):
                return fn(*args, **kwargs)

        wrapper.__name__ = wrapper.__qualname__ = name
        wrapper.__signature__ = self.signature
        wrapper.__annotations__ = {"session": gr.Request}
        return wrapper

    # ---- building and checking the request -----------------------------------------------------
    def _prepare(self, args, kwargs):
        values = self.signature.bind(*args, **kwargs).arguments
        values.pop("progress", None)
        session = values.pop("session", None)
        extra = {p: values.pop(p, None) for p in self.leading}
        try:
            request = self.request_cls(**values)
        except TypeError as err:
            raise ValueError(f"{self.name}: {err}") from None
        if self.check is not None:
            self.check(request, **extra)
        if self.sized:  # it makes an image: no larger than the DiT's own maximum
            check_size(request.height, request.width, self.studio.size_limit)
        if self.with_session:
            extra["session"] = session
        return request, extra, session

    def problem(self, *args, **kwargs) -> str | None:
        """What refuses these values (the request's checks, then this session's pending limit), or
        None. A page's pre-check asks this; it holds no place in the queue."""
        return self._problem(args, kwargs, hold=False)

    def _problem(self, args, kwargs, hold: bool) -> str | None:
        try:
            _, _, session = self._prepare(args, kwargs)
        except (ValueError, ModelLoadError) as err:
            return str(err)
        return self.studio.admission.refuse(session, hold=hold)

    def _validate(self, *args, **kwargs):
        """Before the queue: the request's checks and this session's pending limit (an admitted job
        holds its place until gradio records it)."""
        problem = self._problem(args, kwargs, hold=True)
        if problem:
            return self._invalid(problem)
        return [gr.validate(True, "") for _ in self.api_params]

    def _invalid(self, message: str):
        """The message on the field it starts with, and on every other field it names as `name=`
        (a size error names height and width); on the first parameter when it names none."""
        named = {field_of(message), *NAMED.findall(message)} & set(self.api_params) or {self.api_params[0]}
        return [gr.validate(p not in named, message if p in named else "") for p in self.api_params]

    # ---- running it -----------------------------------------------------------------------------
    async def _handle(self, *args, **kwargs):
        self.studio.admission.started(self.signature.bind(*args, **kwargs).arguments.get("session"))
        try:  # off the event loop: the checks may decode images
            request, extra, session = await asyncio.to_thread(self._prepare, args, kwargs)
        except (ValueError, ModelLoadError) as err:
            raise gr.Error(str(err)) from err
        try:
            async for item in run_cancellable(lambda: self.action(request, **extra), self.stream,
                                              lambda: self.studio.admission.connected(session),
                                              self.studio.cache_partition(session)):
                self.studio.note_result(session, item)
                yield item
        except (ValueError, ModelLoadError) as err:  # a load problem's toast stays until closed
            raise gr.Error(str(err), duration=None if isinstance(err, ModelLoadError) else 10) from err


async def run_cancellable(job, stream: bool, connected=lambda: True, partition: str = ""):
    """Run `job()` (returning a value, or with `stream` a generator) in a worker thread and yield
    what it produces. The job stops at its next step (`llm_dit.serving.cancel`), and its result is
    dropped, when the client cancels (gradio cancels the task awaiting this generator: the stop
    event is set at once) or disconnects (`connected()`, asked every HEARTBEAT_S); this generator
    ends only after the worker thread has, so the concurrency slot is never freed early.

    Nothing is yielded while the job works: each yield is a message to the page, and gradio's
    progress bar hides on every one (a heartbeat of empty updates made it flicker). A stream
    yields at most one update per HEARTBEAT_S: each item is the whole state so far (a reply's
    text, a sweep's cells), so only the newest one is sent. Per token, a browser would re-render
    every output each time and, on a shared CPU, slow the model it is watching.

    `partition` is the visitor's share of the embedding caches (`Studio.cache_partition`: hosted,
    no visitor finds what another one encoded)."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    nothing = object()

    def put(kind, item):
        try:
            loop.call_soon_threadsafe(items.put_nowait, (kind, item))
        except RuntimeError:  # the server's event loop is closed: nobody is listening
            stop.set()

    def work():
        with cancel.scope(stop), cache_partition(partition):
            try:
                if stream:
                    for item in job():
                        put("item", item)
                        if stop.is_set():
                            return
                else:
                    put("item", job())
            except cancel.Cancelled:
                pass
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's task
                put("error", err)
            finally:
                put("done", None)

    context = contextvars.copy_context()  # gradio's progress tracking follows the job
    worker = threading.Thread(target=context.run, args=(work,), daemon=True)
    worker.start()
    newest, due = nothing, loop.time() + HEARTBEAT_S
    try:
        while True:
            try:
                kind, item = await asyncio.wait_for(items.get(), timeout=max(0.0, due - loop.time()))
            except asyncio.TimeoutError:  # a tick: send the newest item, or see whether anyone listens
                if newest is not nothing:
                    yield newest
                    newest = nothing
                elif not connected():
                    return
                due = loop.time() + HEARTBEAT_S
                continue
            if kind == "item":
                newest = item
                continue
            if newest is not nothing:  # the last item before the end or an error is always sent
                yield newest
            if kind == "error":
                raise item
            return
    finally:
        stop.set()
        # the GPU slot (this task) is released only once the worker has stopped: a cancelled job's
        # thread never works on beside the next one
        await asyncio.shield(asyncio.to_thread(worker.join))


def saved(result, studio):
    """Handler outputs for a generation: PNG path (saved with metadata), seed used, metadata. When
    the disk refuses, the image is still returned (gradio serves it from its cache) with a
    warning that names the output folder and the fix, and the app keeps serving."""
    cancel.check()  # the client left while the image was finishing: keep nothing
    try:
        return str(result.save(studio.outputs)), result.seed, result.metadata
    except ValueError as err:
        gr.Warning(str(err))
        return result.image, result.seed, {**result.metadata, "saved": False, "save_error": str(err)}
