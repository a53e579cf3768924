"""'Stop after this cell' goes by the page's click times, not by the order the server handles the
two requests in (ui/stops.py)."""

import math

from ui.stops import Stops


def test_a_stop_handled_before_its_runs_note_still_stops_that_sweep():
    stops = Stops()
    stops.stop_clicked("page", 2000)  # the server handles Stop first ...
    stops.run_clicked("page", 1000)  # ... then Run, which the page clicked earlier
    assert stops.stopped("page", stops.started("page"))


def test_a_stop_clicked_before_run_does_not_stop_the_new_sweep():
    stops = Stops()
    stops.run_clicked("page", 1000)
    stops.stop_clicked("page", 1500)  # stopped the first sweep
    stops.run_clicked("page", 3000)  # a new Run, handled in either order
    assert not stops.stopped("page", stops.started("page"))
    assert stops.stopped("page", 1000)  # the first sweep still reads its own stop


def test_pages_do_not_stop_each_other_and_the_api_is_never_stopped_by_accident():
    stops = Stops()
    stops.run_clicked("a", 1000)
    stops.run_clicked("b", 1000)
    stops.stop_clicked("b", 1100)
    assert not stops.stopped("a", stops.started("a")) and stops.stopped("b", stops.started("b"))
    assert stops.started(None) == -math.inf and not stops.stopped(None, -math.inf)
    assert not stops.stopped("never-clicked", stops.started("never-clicked"))


def test_invented_sessions_and_times_are_bounded_and_harmless():
    stops = Stops(sessions=3)
    for i in range(10):
        stops.run_clicked(f"s{i}", i)
    assert stops.started("s0") == -math.inf and stops.started("s9") == 9  # only the newest 3 remain
    for odd in ("not a time", float("nan"), 10**400, None, [1]):
        stops.run_clicked("odd", odd)  # an int too large for a float, a list: no error, a time of 0
    assert stops.started("odd") == 0.0


def test_a_forgotten_session_loses_its_run_and_its_stop_together():
    """A flood of invented sessions pushes a page out: an old Stop must not then stop its new sweep
    (its Run forgotten, the sweep would read -inf), and a Stop pressed after that still works."""
    stops = Stops(sessions=2)
    stops.run_clicked("page", 1000)
    stops.stop_clicked("page", 1500)
    stops.run_clicked("page", 3000)  # a new sweep ...
    for i in range(5):
        stops.run_clicked(f"flood{i}", 0)  # ... and the page is pushed out before it starts
    since = stops.started("page")
    assert not stops.stopped("page", since)
    stops.stop_clicked("page", 4000)
    assert stops.stopped("page", since)
