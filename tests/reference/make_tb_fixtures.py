"""Write tests/fixtures/tb/expected.json: what TensorBoard's own reader
decodes from the committed event file that our Rust writer made.

    pip install tensorboard        # no TensorFlow needed
    python3 tests/reference/make_tb_fixtures.py

The event file, tests/fixtures/tb/events.out.tfevents.1700000000.sgraf-fixture,
is written by the Rust test crates/sgraf-train/tests/tensorboard.rs from
fixed inputs and fixed wall times (run it with SGRAF_WRITE_TB_FIXTURE=1 to
rewrite it); that test then checks that the writer still makes those exact
bytes and that they hold the (tag, step, value, wall_time) records listed
here.

The records are read with tensorboard.backend.event_processing's
LegacyEventFileLoader, which yields the Event protos as stored (the newer
EventFileLoader rewrites simple_value scalars into tensors) through
TensorBoard's record reader: that reader checks the masked CRC32C of every
record's length and data and raises on a mismatch. The same file is also
loaded by EventAccumulator, the component TensorBoard serves scalars from,
and its scalars must agree.
"""

import json
import os

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing.event_file_loader import (
    LegacyEventFileLoader,
)

HERE = os.path.dirname(os.path.abspath(__file__))
TB = os.path.normpath(os.path.join(HERE, "..", "fixtures", "tb"))
NAME = "events.out.tfevents.1700000000.sgraf-fixture"


def main():
    path = os.path.join(TB, NAME)
    events = list(LegacyEventFileLoader(path).Load())
    first = events[0]
    assert first.WhichOneof("what") == "file_version", first
    scalars = []
    for ev in events[1:]:
        assert ev.WhichOneof("what") == "summary", ev
        for v in ev.summary.value:
            assert v.WhichOneof("value") == "simple_value", v
            scalars.append(
                {
                    "tag": v.tag,
                    "step": ev.step,
                    "value": v.simple_value,
                    "wall_time": ev.wall_time,
                }
            )

    # TensorBoard's serving path reads the same values (it keeps every
    # scalar when the size guidance says 0).
    acc = event_accumulator.EventAccumulator(
        path, size_guidance={event_accumulator.SCALARS: 0}
    )
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        served = [(s.step, s.value, s.wall_time) for s in acc.Scalars(tag)]
        ours = [(s["step"], s["value"], s["wall_time"]) for s in scalars if s["tag"] == tag]
        assert served == ours, (tag, served, ours)

    out = {
        "file_version": first.file_version,
        "first_wall_time": first.wall_time,
        "scalars": scalars,
    }
    with open(os.path.join(TB, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote %d scalars to %s" % (len(scalars), os.path.join(TB, "expected.json")))


if __name__ == "__main__":
    main()
