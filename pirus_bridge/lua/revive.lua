-- Move one message from the failure queue back to pending (failed retry): due now, with a
-- fresh history (so its backlog age counts from now).
-- KEYS 1 failed  2 pending  3 stats  4 meta  5 msg  6 retry
-- ARGV 1 id  2 now  3 month
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HINCRBY', KEYS[3], 'failed:' .. ARGV[3], -1)
if redis.call('HEXISTS', KEYS[5], ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
