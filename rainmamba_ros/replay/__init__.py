"""`rainmamba replay`: derain image topics of a recorded bag into a new ROS 2 bag, offline.

    rainmamba replay INPUT OUTPUT --topic /front/image_raw [--topic ...] [--format mcap|sqlite3]
                     [--replace] [--overwrite] [--export-video PATH] [model options]

No ROS install needed (rosbags + the Derainer). INPUT is a ROS 2 bag (sqlite3 or MCAP, split
and/or compressed, or a bare .db3/.mcap) or a ROS 1 .bag. OUTPUT is a new ROS 2 bag holding:
- every input message unchanged, byte for byte, with its topic's QoS profiles and its receive
  time (ROS 1 input is converted to CDR, see `bagio`);
- for each chosen topic, the derained frames on `<namespace>/derained/image` as
  sensor_msgs/Image (what the live node publishes): same header (stamp, frame_id), same encoding
  (for CompressedImage input: the raw encoding its `format` names, else bgr8), same receive
  time and QoS as the input message. With `--replace` they take the place of the input frames
  instead, in the input's type (CompressedImage is re-compressed in its own format).

Pipeline (so decoding, inference and writing overlap and memory stays flat):
    reader thread:  bag -> CDR -> message -> RGB            --queue(bounded)-->
    main thread:    Derainer.process_batch (one frame per chosen topic per batch; topics of
                    equal size step together)               --queue(bounded)-->
    writer thread:  RGB -> message -> CDR -> output bag (+ side-by-side video)
Messages leave the writer in input order. Ctrl-C (or SIGTERM from the CLI) stops all three,
removes the temporary output and leaves OUTPUT as it was; exit code 130.

Modules: `api` (replay_bag, ReplaySummary), `pipeline` (the three stages), `video` (the
side-by-side MP4), `cli` (`rainmamba replay` and the `replay` console script); the replay
benchmark lives with the other ROS-side benchmarks in `rainmamba_ros.bench.replay`.

Exit codes: 0 done, 2 bad input (unreadable/corrupt bag, missing or non-image topic, existing
output without --overwrite, bad option), 130 interrupted.
"""
from __future__ import annotations

from rainmamba_ros.replay.api import ReplaySummary, replay_bag
from rainmamba_ros.replay.cli import add_arguments, main, run
from rainmamba_ros.replay.errors import ReplayError

__all__ = ['ReplayError', 'ReplaySummary', 'replay_bag', 'add_arguments', 'run', 'main']
