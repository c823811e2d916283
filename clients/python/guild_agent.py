"""Write a guild agent in Python: the `exec` agent type's line protocol, version 1.

Standard library only. A program built with it is started by guild (`type = "exec"`,
`command = ["python3", "my_agent.py"]`) and speaks newline-delimited JSON over its
standard input and output; see docs/exec-protocol.md. Print nothing else to standard
output: use standard error (or `logging`), which guild logs with the agent's id.

    import guild_agent

    def handle(ctx, delivery):
        ctx.reply({"echo": delivery.payload})

    guild_agent.run(handle)

A handler that returns completes its delivery; one that raises fails it, and guild
dead-letters the message and goes on with the next. A MemoryError (the agent's memory
cap reached) ends the agent, reported as killed by its limit.
"""

import json
import os
import sys
import traceback

PROTOCOL = 1

__all__ = ["Context", "Delivery", "GuildError", "run"]


class GuildError(Exception):
    """Guild refused a request (a publish, a reply or a history query)."""


class Delivery:
    """One message handed to the agent."""

    def __init__(self, line):
        self.raw = line
        self.id = line["id"]
        self.topic = line.get("topic")
        self.sender = line.get("sender")
        self.payload = line.get("payload")
        self.format = line.get("format", "json")
        self.payload_base64 = line.get("payload_base64")
        self.reply_to = line.get("reply_to")
        self.priority = line.get("priority", "normal")
        self.headers = line.get("headers", {})
        self.thread = line.get("thread")

    def __repr__(self):
        return f"Delivery(id={self.id!r}, topic={self.topic!r}, payload={self.payload!r})"


class Context:
    """What a handler may ask of guild while its delivery is out."""

    def __init__(self, hello, reader, writer):
        self.hello = hello
        self.agent = hello.get("agent")
        self.guild = hello.get("guild")
        self.settings = hello.get("settings") or {}
        self._reader = reader
        self._writer = writer
        self._requests = 0
        self._delivery = None

    def publish(self, topic, payload, reply_to=None, priority=None, wait=False):
        """Publishes `payload` (any JSON value) to `topic`.

        Without `wait`, returns at once (None); should guild refuse the publish, the
        delivery fails. With `wait=True`, waits for guild and answers the new id, or
        raises GuildError.
        """
        line = {"kind": "publish", "topic": topic, "payload": payload}
        if reply_to is not None:
            line["reply_to"] = reply_to
        if priority is not None:
            line["priority"] = priority
        return self._send(line, wait)

    def reply(self, payload, wait=False):
        """Replies to the delivery being handled, as `publish` does."""
        if self._delivery is None:
            raise GuildError("no delivery is being handled")
        return self._send({"kind": "reply", "to": self._delivery.id, "payload": payload}, wait)

    def history(self, topic, limit=100):
        """The last `limit` retained messages of `topic`, oldest first."""
        return self._ask({"kind": "history", "topic": topic, "limit": limit})["messages"]

    def _send(self, line, wait):
        if wait:
            return self._ask(line)["id"]
        # Sent with the delivery's done, in one write.
        self._writer(line, flush=False)
        return None

    def _ask(self, line):
        self._requests += 1
        line["request"] = self._requests
        self._writer(line)
        answer = self._reader()
        if answer is None:
            sys.exit(0)
        if answer.get("request") != self._requests:
            raise GuildError(f"an answer to another request: {answer!r}")
        if answer.get("kind") == "failed":
            raise GuildError(answer.get("error", "refused"))
        return answer


def run(handle, start=None):
    """Serves deliveries until guild closes standard input, then returns.

    `handle(ctx, delivery)` handles one delivery; `start(ctx)`, when given, runs once
    before the agent says it is ready (load a model there, say).
    """
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    # Anything else printed to standard output would break the protocol.
    sys.stdout = sys.stderr

    def read():
        line = stdin.readline()
        if not line:
            return None
        return json.loads(line)

    def write(obj, flush=True):
        stdout.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        if flush:
            stdout.flush()

    hello = read()
    if hello is None:
        return
    if hello.get("kind") != "hello" or hello.get("protocol") != PROTOCOL:
        raise SystemExit(f"guild_agent: expected a hello of protocol {PROTOCOL}, got {hello!r}")
    ctx = Context(hello, read, write)
    if start is not None:
        start(ctx)
    write({"kind": "ready"})
    while True:
        line = read()
        if line is None:
            return
        if line.get("kind") != "deliver":
            raise SystemExit(f"guild_agent: expected a delivery, got {line!r}")
        delivery = Delivery(line)
        ctx._delivery = delivery
        try:
            handle(ctx, delivery)
        except MemoryError as error:
            # Past the memory cap: guild ends the agent as killed by its limit.
            write({"kind": "exhausted", "id": delivery.id, "resource": "memory", "error": f"MemoryError: {error}"})
            os._exit(1)
        except Exception as error:  # noqa: BLE001 - a failed delivery, reported
            traceback.print_exc(file=sys.stderr)
            write({"kind": "error", "id": delivery.id, "error": f"{type(error).__name__}: {error}"})
        else:
            write({"kind": "done", "id": delivery.id})
        finally:
            ctx._delivery = None
