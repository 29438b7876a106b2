"""The one-slot loopback channel that carries a trial's reports from its Train controller."""

from __future__ import annotations

import secrets
import threading
import time

import numpy as np
import pytest

from raylung.tune.report_channel import ReportChannel, send_report


@pytest.fixture
def channel():
    opened = ReportChannel()
    yield opened
    opened.close()


def _send_in_background(channel: ReportChannel, item: dict) -> tuple[threading.Thread, dict[str, bool]]:
    """The controller's side, in a thread (it waits until the trial takes the report)."""
    result: dict[str, bool] = {}
    sender = threading.Thread(
        target=lambda: result.update(ok=send_report(channel.address, channel.authkey, item))
    )
    sender.start()
    return sender, result


def test_reports_arrive_in_order_with_their_values(channel):
    sent = [{"epoch": epoch, "val_loss": 1.0 / epoch, "nan": float("nan")} for epoch in (1, 2, 3)]
    for item in sent:
        sender, result = _send_in_background(channel, item)
        received = channel.get()
        sender.join(timeout=10)
        assert received["epoch"] == item["epoch"] and received["val_loss"] == item["val_loss"]
        assert np.isnan(received["nan"])
        assert result == {"ok": True}
    # numpy scalars (a metric computed with numpy) arrive as plain numbers
    _send_in_background(channel, {"auroc": np.float32(0.5)})
    assert channel.get() == {"auroc": 0.5}


def test_a_sender_waits_while_the_trial_still_holds_the_previous_report(channel):
    """One slot, as a full Queue(maxsize=1): the controller cannot run ahead of the trial."""
    assert send_report(channel.address, channel.authkey, {"epoch": 1}) is True  # into the slot
    sender, second = _send_in_background(channel, {"epoch": 2})
    time.sleep(1.0)
    assert sender.is_alive() and not second  # still waiting: the slot is full
    assert channel.get() == {"epoch": 1}
    sender.join(timeout=10)
    assert second == {"ok": True}
    assert channel.get() == {"epoch": 2}


def test_a_wrong_key_is_refused_and_puts_nothing_in_the_slot(channel):
    other_key = secrets.token_bytes(len(channel.authkey))  # another trial's, say
    assert send_report(channel.address, other_key, {"epoch": 99}) is False
    assert send_report(channel.address, channel.authkey, {"epoch": 1}) is True
    assert channel.get() == {"epoch": 1}


def test_reports_to_a_closed_channel_are_refused_at_once():
    """A trial that Tune stopped is gone with its channel: the controller's report is dropped."""
    channel = ReportChannel()
    channel.close()
    start = time.monotonic()
    assert send_report(channel.address, channel.authkey, {"epoch": 1}) is False
    assert time.monotonic() - start < 5


def test_a_controller_that_never_reached_its_trial_fails_loudly_but_a_stopped_trial_is_quiet():
    """Reports lost before any got through mean a broken channel, not an ASHA stop."""
    from raylung.errors import RaylungError
    from raylung.tune.reports import ChannelReportCallback

    never = ReportChannel()
    never.close()
    with pytest.raises(RaylungError, match="cannot reach the trial's report channel"):
        ChannelReportCallback(never.address, never.authkey).after_report(None, [{"epoch": 1}], None)

    channel = ReportChannel()
    callback = ChannelReportCallback(channel.address, channel.authkey)
    callback.after_report(None, [{"epoch": 1}], None)
    assert channel.get() == {"epoch": 1}
    channel.close()  # Tune stopped the trial after its first report
    callback.after_report(None, [{"epoch": 2}], None)  # dropped, no error
