"""Where a refused click is seen, and the Stop for a running job: one mechanism for every tab.

A job is started through `Guards.run`: beside its button sit a message box and a Stop button, both
hidden (`message_box`, `stop_button`). A click runs a private check first (the endpoint's own
checks, the same as its validator's), then the job (whose validator refuses the same values):
- refused: the message shows beside the button and as a toast, naming the field; the field's tab
  is selected and the collapsed sections holding it open, and the page scrolls it into view (its
  inline message, from the validator, is then seen where it belongs);
- accepted: Stop shows until the job ends. Stop cancels the job (gradio cancels the handler's
  task; `ui.common.run_cancellable` stops it at its next step and it saves nothing) and says so.

Showing the field needs every tab built (a field may sit on another tab than its button, as the
sweep's references do), so `Guards.wire` runs once, after the tabs.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .common import field_of

STOPPED = "Stopped: the job ended at its next step and saved nothing."
# After a refusal: scroll the field (the message's link names it) into view once its tab has drawn it.
REVEAL_JS = """(box) => {
  document.querySelectorAll('.refused').forEach(el => el.classList.remove('refused'));
  let tries = 0;
  const go = () => {
    const link = document.querySelector('#' + box + ' a[href^="#"]');
    const field = link && document.getElementById(link.getAttribute('href').slice(1));
    if (field && field.offsetParent) {  // drawn: once its section has opened, bring it into view
      field.classList.add('refused');
      setTimeout(() => {
        const r = field.getBoundingClientRect();
        if (r.top < 0 || r.bottom > window.innerHeight) field.scrollIntoView({block: 'center'});
      }, 300);
      return;
    }
    if (link && tries++ < 40) setTimeout(go, 50);
  };
  go();
}"""


def stop_button(elem_id: str) -> gr.Button:
    """A hidden Stop button (made inside the run buttons' row)."""
    return gr.Button("Stop", variant="stop", visible=False, scale=1, elem_id=elem_id)


def message_box(elem_id: str) -> gr.Markdown:
    """The hidden message box under the run buttons."""
    return gr.Markdown(visible=False, elem_id=elem_id, elem_classes="refusal")


@dataclass
class Guard:
    endpoint: object  # ui.common.Endpoint
    message: gr.Markdown
    places: dict  # API parameter -> (tab, accordions outermost first, component)
    checked: object  # the check's event
    location: gr.State  # the refused field's parameter name, or None


def _dom_id(component) -> str:
    """The element id the page gives `component` (one is given where the tab set none: gradio 6
    puts no id on a component without one). Called while the tabs are built, before the page's
    configuration is made."""
    if not component.elem_id:
        component.elem_id = f"field-{component._id}"
    return component.elem_id


def _where(component) -> tuple:
    """The tab and the accordions (outermost first) holding `component`."""
    tab, accordions = None, []
    node = getattr(component, "parent", None)
    while node is not None:
        if isinstance(node, gr.Accordion):
            accordions.insert(0, node)
        elif isinstance(node, gr.Tab) and tab is None:
            tab = node
        node = getattr(node, "parent", None)
    return tab, accordions


def _refusal(problem: str, places: dict, here) -> tuple[str, str | None]:
    """The message beside the button, and the refused field's parameter (None: not a field here)."""
    name = field_of(problem)
    if name not in places:
        return f"⚠ {problem}", None
    tab, accordions, comp = places[name]
    where = f"[{comp.label or name}](#{comp.elem_id})"
    if accordions:
        where += " in " + " › ".join(f"**{a.label}**" for a in accordions) + " (opened)"
    if tab is not None and tab is not here:
        where += f" on the **{tab.label}** tab (shown)"
    return f"⚠ {problem}\n\nThe field: {where}.", name


class Guards:
    """Every guarded run button of the page (`run` while the tabs are built, `wire` after them)."""

    def __init__(self):
        self.guards: list[Guard] = []

    def run(self, endpoint, trigger, inputs: list, outputs: list, message: gr.Markdown, stop=None, **kwargs):
        """The job `endpoint` on `trigger` (a button's click, or after an event), checked first;
        `kwargs` go to the job's event (api_name, concurrency...). Returns the job's event."""
        places = {}
        for name, comp in zip(endpoint.api_params, inputs):
            _dom_id(comp)
            places[name] = (*_where(comp), comp)
        here = _where(message)[0]
        stops = [stop] if stop is not None else []

        def check(*values):
            problem = endpoint.problem(*values)
            if problem is None:
                return [gr.Markdown(visible=False), *[gr.Button(visible=True)] * len(stops), None]
            gr.Warning(problem)
            text, name = _refusal(problem, places, here)
            return [gr.Markdown(text, visible=True), *[gr.skip()] * len(stops), name]

        check.__name__ = f"{endpoint.name}_check"
        location = gr.State(None)
        on = trigger.click if isinstance(trigger, gr.Button) else trigger.then
        # queued (a toast needs the queue), never waiting: its own unlimited concurrency group. The
        # job follows it (not beside it on the same click: the job's refusal paints the inline
        # message, which a check starting after it would clear).
        checked = on(check, inputs, [message, *stops, location], api_visibility="private",
                     concurrency_limit=None, concurrency_id="checks")
        event = checked.success(endpoint.fn, inputs, outputs, validator=endpoint.validator, **kwargs)
        self.guards.append(Guard(endpoint, message, places, checked, location))
        if stop is not None:
            private = {"api_visibility": "private", "queue": False}
            # after the job, however it ended (gradio's `then` skips a job that raised: `failure` too)
            event.then(lambda: gr.Button(visible=False), None, stop, **private)
            event.failure(lambda: gr.Button(visible=False), None, stop, **private)

            def stopped():
                return gr.Markdown(STOPPED, visible=True), gr.Button(visible=False)

            stopped.__name__ = f"{endpoint.name}_stop"
            stop.click(stopped, None, [message, stop], cancels=[event], **private)
        return event

    def wire(self, tabs: gr.Tabs) -> None:
        """After a refusal: the field's tab selected, its sections opened, the field scrolled into view."""
        for guard in self.guards:
            here = _where(guard.message)[0]
            accordions = list({id(a): a for _, held, _ in guard.places.values() for a in held}.values())

            def reveal(name, guard=guard, here=here, accordions=accordions):
                if name not in guard.places:
                    return [gr.skip()] * (1 + len(accordions))
                tab, held, _ = guard.places[name]
                return [gr.Tabs(selected=tab.id) if tab is not None and tab is not here else gr.skip()] + [
                    gr.Accordion(open=True) if a in held else gr.skip() for a in accordions]

            reveal.__name__ = f"{guard.endpoint.name}_reveal"
            private = {"api_visibility": "private", "queue": False}
            guard.checked.then(reveal, guard.location, [tabs, *accordions], **private).then(
                None, None, None, js=f"() => ({REVEAL_JS})('{guard.message.elem_id}')", **private)
