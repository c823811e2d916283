"""Reads a guild's topic from Redis with the module protoc generates from
proto/guild/v1/message.proto, to show that a program in another language reads what
guild stores.

Generate the module, then run this with the guild's Redis, the guild's id and a topic:

    python3 -m pip install grpcio-tools redis
    python3 -m grpc_tools.protoc -I proto --python_out=examples/python \
        proto/guild/v1/message.proto
    python3 examples/python/read_topic.py redis://127.0.0.1:6379 request-response questions

Each stream entry's field `frame` holds a guild.v1.Frame: the messages one publish stored.
It prints one JSON line per message. With --follow it then waits for new entries.
"""

import argparse
import json
import sys

import redis

from guild.v1 import message_pb2


def as_json(message):
    """A guild.v1.Message as a dict, its payload decoded when it is JSON or text."""
    payload = message.payload
    if payload.format == "json":
        body = json.loads(payload.bytes)
    elif payload.format == "guild.v1.DeadLetter":
        letter = message_pb2.DeadLetter.FromString(payload.bytes)
        body = {
            "client": letter.client,
            "topic": letter.topic,
            "failure": {"kind": letter.failure.kind, "text": letter.failure.text},
            "message": as_json(letter.message),
        }
    else:
        body = payload.bytes.decode("utf-8", errors="replace")
    line = {
        "id": str(message.id),
        "sender": message.sender,
        "topics": list(message.topics),
        "priority": message_pb2.Priority.Name(message.priority),
        "timestamp_ms": message.timestamp_ms,
        "format": payload.format,
        "payload": body,
    }
    if message.HasField("reply_to"):
        line["reply_to"] = message.reply_to
    if message.HasField("in_reply_to"):
        line["in_reply_to"] = str(message.in_reply_to)
    if message.headers:
        line["headers"] = dict(message.headers)
    return line


def print_entries(entries):
    """Prints the messages of stream entries; returns the last entry's id."""
    last = None
    for entry_id, fields in entries:
        last = entry_id
        frame = fields.get(b"frame")
        if frame is None:
            print(f"entry {entry_id.decode()} holds no frame; skipped", file=sys.stderr)
            continue
        for message in message_pb2.Frame.FromString(frame).messages:
            print(json.dumps(as_json(message)), flush=True)
    return last


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the guild's Redis, such as redis://127.0.0.1:6379")
    parser.add_argument("guild", help="the guild's id")
    parser.add_argument("topic")
    parser.add_argument("--prefix", default="guild", help="the guild's key prefix")
    parser.add_argument("--follow", action="store_true", help="wait for new messages")
    args = parser.parse_args()

    client = redis.Redis.from_url(args.url)
    stream = f"{args.prefix}:{args.guild}:topic:{args.topic}"
    last = print_entries(client.xrange(stream)) or b"0-0"
    while args.follow:
        for _, entries in client.xread({stream: last}, block=1000) or []:
            last = print_entries(entries) or last


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
