/**
 * A BullMQ job as data for a Redis script of the stores: the keys and arguments of
 * ADD_STANDARD_JOB_LUA, so that a run and its jobs are stored in one atomic step (RunStore.create:
 * `/ship` answers after one Redis round trip, and no crash can leave a run without its jobs).
 */
export interface ScriptedJob {
  /** The job's hash, then the queue's wait, paused, meta, active, events and marker keys. */
  keys: [string, string, string, string, string, string, string];
  /** Job id, name, data (JSON), options (JSON), timestamp (ms, Date.now() as BullMQ takes it). */
  args: [string, string, string, string, string];
}

/**
 * `addStandardJob(keys, args)` for a Lua script: adds a job exactly as BullMQ's own addStandardJob
 * script does (bullmq is pinned to 5.81.5 in package.json) for the only kind `/ship` adds: a
 * custom id, no delay, no priority, no parent, no deduplication. The job hash, the wait (or paused)
 * list, the marker that wakes a worker and the 'added'/'waiting' events are what Queue.add leaves;
 * test/integration/ship-redis-work.test.ts compares the two, so a BullMQ upgrade that changes them
 * fails there. Only the auto-id counter (INCR <queue>:id) is left alone: custom ids never read it.
 * An id that exists already is left as it is, as BullMQ does (it only emits 'duplicated').
 */
export const ADD_STANDARD_JOB_LUA = `
local function addStandardJob(k, a)
  local maxEvents = redis.call('HGET', k[4], 'opts.maxLenEvents')
  if not maxEvents then
    maxEvents = 10000
    redis.call('HSET', k[4], 'opts.maxLenEvents', maxEvents)
  end
  if redis.call('EXISTS', k[1]) == 1 then
    redis.call('XADD', k[6], 'MAXLEN', '~', maxEvents, '*', 'event', 'duplicated', 'jobId', a[1])
    return
  end
  redis.call('HMSET', k[1], 'name', a[2], 'data', a[3], 'opts', a[4], 'timestamp', a[5], 'delay', 0, 'priority', 0)
  redis.call('XADD', k[6], '*', 'event', 'added', 'jobId', a[1], 'name', a[2])
  local meta = redis.call('HMGET', k[4], 'paused', 'concurrency')
  local target, pausedOrMaxed = k[2], false
  if meta[1] then
    target, pausedOrMaxed = k[3], true
  elseif meta[2] and redis.call('LLEN', k[5]) >= tonumber(meta[2]) then
    pausedOrMaxed = true
  end
  redis.call('LPUSH', target, a[1])
  if not pausedOrMaxed then redis.call('ZADD', k[7], 0, '0') end
  redis.call('XADD', k[6], 'MAXLEN', '~', maxEvents, '*', 'event', 'waiting', 'jobId', a[1])
end
`;
