"""Where a stream's timeline breaks, judged on the stamps of the frames a camera *sent*.

A break (the carried state must be reset) is a stamp older than the previous one (a bag loop, a
restarted driver) or a leap forward past a threshold (the camera stopped, the stream dropped).
The stamps compared are those of consecutive *received* frames: a consumer that skips frames
under load (the ROS node keeps only the newest) must feed every received stamp to `observe`, not
only the stamps of the frames it processed, or a slow model would look like a stopped camera.

No torch and no rclpy: the Derainer and the ROS node's subscription callbacks share it.
"""
from __future__ import annotations

TIME_BACKWARDS = 'time_backwards'
GAP = 'gap'


class StampTimeline:
    """The received stamps of one stream, and the breaks between them.

    Args:
        gap_ns: a forward step larger than this (ns) is a gap.

    Attributes:
        breaks: how many breaks were observed so far (monotonic; a consumer that applies breaks
            later compares it with the count it has applied).
        reason: the reason of the latest break ('time_backwards' | 'gap'), '' before any.
        detail: a short human explanation of the latest break (the stamps' distance).
    """

    def __init__(self, gap_ns: int) -> None:
        self.gap_ns = int(gap_ns)
        self.last_ns: int | None = None
        self.breaks = 0
        self.reason = ''
        self.detail = ''

    def observe(self, stamp_ns: int | None) -> str | None:
        """Record a received stamp; the break reason if this frame starts a new timeline."""
        if stamp_ns is None:
            return None
        reason = None
        if self.last_ns is not None:
            step = stamp_ns - self.last_ns
            if step < 0:
                reason = TIME_BACKWARDS
                self.detail = f'received stamp went back {-step / 1e9:.3f} s'
            elif step > self.gap_ns:
                reason = GAP
                self.detail = (f'received stamps {step / 1e9:.3f} s apart > '
                               f'{self.gap_ns / 1e9:g} s')
        self.last_ns = stamp_ns
        if reason is not None:
            self.breaks += 1
            self.reason = reason
        return reason

    def forget(self) -> None:
        """Start over: the next stamp is compared with nothing."""
        self.last_ns = None
