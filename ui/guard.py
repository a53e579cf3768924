"""Where a refused click is seen, and the Stop for a running job: one mechanism for every tab.

A run button is guarded (`Guards.add`): beside it sit a message box and a Stop button, both hidden
(`stop_button`, `message_box`). When it is clicked, a private check (the endpoint's own checks, the same as
its validator's) runs at once:
- refused: the message shows beside the button and as a toast, naming the field; the field's tab
  is selected and the collapsed sections holding it open, and the page scrolls it into view (its
  inline message, from the validator, is then seen where it belongs);
- accepted: Stop shows until the job ends. Stop cancels the job (gradio cancels the handler's
  task; `ui.common.run_cancellable` stops it at its next step and it saves nothing) and says so.

The wiring needs every tab and section built, so `Guards.wire` runs once, after the tabs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    if (field && field.offsetParent) {
      field.classList.add('refused');
      field.scrollIntoView({block: 'center'});
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
    button: gr.Button
    inputs: list  # components, in the order of endpoint.api_params
    events: list  # the job's events (Stop cancels them)
    message: gr.Markdown
    stop: gr.Button | None  # None: a quick job with no Stop (an export)


def _dom_id(component) -> str:
    """The element id the page gives `component` (one is given where the tab set none: gradio 6
    puts no id on a component without one)."""
    if not component.elem_id:
        component.elem_id = f"field-{component._id}"
    return component.elem_id


def _where(component) -> tuple[str | None, list, list[str]]:
    """The tab, the accordions (outermost first) holding `component`, and their labels."""
    tab, accordions = None, []
    node = getattr(component, "parent", None)
    while node is not None:
        if isinstance(node, gr.Accordion):
            accordions.insert(0, node)
        elif isinstance(node, gr.Tab) and tab is None:
            tab = node
        node = getattr(node, "parent", None)
    return tab, accordions, [a.label for a in accordions]


@dataclass
class Guards:
    guards: list = field(default_factory=list)

    def add(self, endpoint, button, inputs: list, events: list, message, stop=None) -> None:
        self.guards.append(Guard(endpoint, button, inputs, list(events), message, stop))

    def wire(self, tabs: gr.Tabs) -> None:
        """The check, the reveal and the Stop of every guarded button (inside the Blocks, after the tabs)."""
        for guard in self.guards:
            _wire(guard, tabs)


def _wire(guard: Guard, tabs: gr.Tabs) -> None:
    button_tab = _where(guard.button)[0]
    places = {name: _where(comp) for name, comp in zip(guard.endpoint.api_params, guard.inputs)}
    components = dict(zip(guard.endpoint.api_params, guard.inputs))
    ids = {name: _dom_id(comp) for name, comp in components.items()}  # before the page's config is made
    accordions = list({id(a): a for _, acc, _ in places.values() for a in acc}.values())
    stop = [guard.stop] if guard.stop is not None else []
    outputs = [guard.message, *stop, tabs, *accordions]
    label = guard.endpoint.name

    def check(*values):
        problem = guard.endpoint.problem(*values)
        if problem is None:
            return [gr.Markdown(visible=False), *[gr.Button(visible=True)] * len(stop), gr.skip()] + [
                gr.skip()] * len(accordions)
        gr.Warning(problem)
        name = field_of(problem)
        if name not in places:
            return [gr.Markdown(f"⚠ {problem}", visible=True), *[gr.skip()] * len(stop), gr.skip()] + [
                gr.skip()] * len(accordions)
        tab, holding, labels = places[name]
        comp = components[name]
        where = f"[{comp.label or name}](#{ids[name]})"
        if labels:
            where += " in " + " › ".join(f"**{text}**" for text in labels) + " (opened)"
        elsewhere = tab is not None and tab is not button_tab
        if elsewhere:
            where += f" on the **{tab.label}** tab (shown)"
        text = f"⚠ {problem}\n\nThe field: {where}."
        opened = [gr.Accordion(open=True) if a in holding else gr.skip() for a in accordions]
        return [gr.Markdown(text, visible=True), *[gr.skip()] * len(stop),
                gr.Tabs(selected=tab.id) if elsewhere else gr.skip()] + opened

    check.__name__ = f"{label}_check"
    private = {"api_visibility": "private", "queue": False}
    # queued (a toast needs the queue), never waiting: its own unlimited concurrency group
    checked = guard.button.click(check, guard.inputs, outputs, api_visibility="private", concurrency_limit=None,
                                 concurrency_id="checks")
    checked.then(None, None, None, js=f"() => ({REVEAL_JS})('{guard.message.elem_id}')", **private)
    if guard.stop is None:
        return
    for event in guard.events:
        event.then(lambda: gr.Button(visible=False), None, guard.stop, **private)

    def stopped():
        return gr.Markdown(STOPPED, visible=True), gr.Button(visible=False)

    stopped.__name__ = f"{label}_stop"
    guard.stop.click(stopped, None, [guard.message, guard.stop], cancels=guard.events, **private)
