-- Stores one batch of publishes from one backend instance, as frames; see writer.rs.
--
-- KEYS[1]: the publisher's record: the number of the last publish it stored.
-- ARGV: max_len (0: none), min_id (0: none), the records' lifetime in seconds, the
-- batch's last publish number, then per frame: its stream, its guild's key prefix,
-- whether to list the stream among the guild's topics ('1' the first time a connection
-- writes to it, else '0'), the entry ids of its first and last messages, the entry ids
-- of all its messages joined by commas, and the frame.
--
-- The record is set in the same atomic call that stores the batch, so after a lost
-- reply the writer reads it and sends only what it does not cover. A frame is stored under the entry id of
-- its first message, and the stream's last id is moved to its last message's, so the
-- entries of a stream split the entry id space between them and a message is found
-- by id in the entry with the greatest id not above its own. Where the stream has
-- moved past a frame's first id already (its messages reached Redis after newer
-- ones), the frame is stored under a fresh entry id instead, and where each of its
-- messages went is recorded in an hourly "late" hash of its guild.
local record = KEYS[1]
local max_len, min_id, ttl = ARGV[1], ARGV[2], ARGV[3]
local last = ARGV[4]

-- A command that fails (a key of another type under our prefix) must not end the
-- script half done: its error is collected and returned, and the rest goes on.
local errors = {}
local function try(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    errors[#errors + 1] = reply.err
    return nil
  end
  return reply
end

local function add(stream, id, frame)
  if max_len == '0' then
    return redis.pcall('XADD', stream, id, 'frame', frame)
  end
  return redis.pcall('XADD', stream, 'MAXLEN', '~', max_len, id, 'frame', frame)
end

local touched = {}
for a = 5, #ARGV, 7 do
  local stream, guild, list, low, high, ids, frame =
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local added = add(stream, low, frame)
  if type(added) == 'table' and added.err then
    local moved = add(stream, '*', frame)
    if type(moved) == 'table' and moved.err then
      errors[#errors + 1] = stream .. ': ' .. moved.err
    else
      for id in string.gmatch(ids, '[^,]+') do
        local hour = math.floor(tonumber(string.match(id, '^(%d+)')) / 3600000)
        local late = guild .. ':late:' .. hour
        try('HSET', late, id, stream .. '\n' .. moved)
        try('EXPIRE', late, ttl)
      end
    end
  elseif high ~= low then
    try('XSETID', stream, high)
  end
  if list == '1' then
    try('SADD', guild .. ':topics', stream)
  end
  if min_id ~= '0' then
    touched[stream] = true
  end
end
for stream in pairs(touched) do
  try('XTRIM', stream, 'MINID', min_id)
end
redis.call('SET', record, last, 'EX', ttl)
return errors
