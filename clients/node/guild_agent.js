// Write a guild agent in Node.js: the `exec` agent type's line protocol, version 1.
//
// No dependencies. A program built with it is started by guild (`type = "exec"`,
// `command = ["node", "my_agent.js"]`) and speaks newline-delimited JSON over its
// standard input and output; see docs/exec-protocol.md. Write nothing else to standard
// output: use console.error, which guild logs with the agent's id.
//
//   const { run } = require("./guild_agent.js");
//   run(async (ctx, delivery) => {
//     await ctx.reply({ echo: delivery.payload });
//   });
//
// A handler that returns (or resolves) completes its delivery; one that throws (or
// rejects) fails it, and guild dead-letters the message and goes on with the next.

"use strict";

const readline = require("readline");

const PROTOCOL = 1;

class GuildError extends Error {}

class Context {
  constructor(hello, next, write) {
    this.hello = hello;
    this.agent = hello.agent;
    this.guild = hello.guild;
    this.settings = hello.settings || {};
    this._next = next;
    this._write = write;
    this._requests = 0;
    this._delivery = null;
  }

  // Publishes `payload` (any JSON value) to `topic`. Without `wait`, resolves at once
  // (to undefined), and a publish guild refuses fails the delivery; with `wait: true`,
  // resolves to the new id or rejects with a GuildError.
  async publish(topic, payload, { replyTo, priority, wait } = {}) {
    const line = { kind: "publish", topic, payload };
    if (replyTo !== undefined) line.reply_to = replyTo;
    if (priority !== undefined) line.priority = priority;
    return this._send(line, wait);
  }

  // Replies to the delivery being handled, as `publish` does.
  async reply(payload, { wait } = {}) {
    if (!this._delivery) throw new GuildError("no delivery is being handled");
    return this._send({ kind: "reply", to: this._delivery.id, payload }, wait);
  }

  async _send(line, wait) {
    if (wait) return (await this._ask(line)).id;
    this._write(line);
    return undefined;
  }

  // The last `limit` retained messages of `topic`, oldest first.
  async history(topic, limit = 100) {
    return (await this._ask({ kind: "history", topic, limit })).messages;
  }

  async _ask(line) {
    this._requests += 1;
    line.request = this._requests;
    this._write(line);
    const answer = await this._next();
    if (answer === null) process.exit(0);
    if (answer.request !== this._requests) {
      throw new GuildError(`an answer to another request: ${JSON.stringify(answer)}`);
    }
    if (answer.kind === "failed") throw new GuildError(answer.error || "refused");
    return answer;
  }
}

// Serves deliveries until guild closes standard input. `handle(ctx, delivery)` may be
// async; `start(ctx)`, when given, runs once before the agent says it is ready.
async function run(handle, start) {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  const iterator = lines[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await iterator.next();
    return done ? null : JSON.parse(value);
  };
  const write = (obj) => {
    process.stdout.write(JSON.stringify(obj) + "\n");
  };
  // Anything else written to standard output would break the protocol.
  console.log = console.error;
  const hello = await next();
  if (hello === null) return;
  if (hello.kind !== "hello" || hello.protocol !== PROTOCOL) {
    console.error(`guild_agent: expected a hello of protocol ${PROTOCOL}, got ${JSON.stringify(hello)}`);
    process.exit(2);
  }
  const ctx = new Context(hello, next, write);
  if (start) await start(ctx);
  write({ kind: "ready" });
  for (;;) {
    const line = await next();
    if (line === null) return;
    if (line.kind !== "deliver") {
      console.error(`guild_agent: expected a delivery, got ${JSON.stringify(line)}`);
      process.exit(2);
    }
    ctx._delivery = line;
    try {
      await handle(ctx, line);
      write({ kind: "done", id: line.id });
    } catch (error) {
      console.error(error && error.stack ? error.stack : String(error));
      write({ kind: "error", id: line.id, error: String(error && error.message ? error.message : error) });
    } finally {
      ctx._delivery = null;
    }
  }
}

module.exports = { run, Context, GuildError, PROTOCOL };
