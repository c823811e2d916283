"""An exec agent in Python: shouts each text it gets and passes it on.

Each delivery's payload is a text; the agent publishes it upper-cased to the topic its
`to` setting names (`shouted` by default).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))

import guild_agent  # noqa: E402


def handle(ctx, delivery):
    if not isinstance(delivery.payload, str):
        raise ValueError(f"expected a text, got {delivery.payload!r}")
    ctx.publish(ctx.settings.get("to", "shouted"), delivery.payload.upper() + "!")


guild_agent.run(handle)
