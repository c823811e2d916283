// An exec agent in Node.js: counts the words of each text it gets and passes the
// count on, to the topic its `to` setting names (`counted` by default).

"use strict";

const path = require("path");
const { run } = require(path.join(__dirname, "..", "..", "clients", "node", "guild_agent.js"));

run(async (ctx, delivery) => {
  const text = String(delivery.payload);
  const words = text.split(/\s+/).filter((word) => word.length > 0).length;
  await ctx.publish(ctx.settings.to || "counted", { text, words });
});
