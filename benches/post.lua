-- wrk script: POST a chat completion; print exact figures (microseconds) at the end.
-- RAMPART_BODY overrides the request body; RAMPART_KEY adds `authorization: Bearer <key>`.
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
if os.getenv("RAMPART_KEY") then
  wrk.headers["authorization"] = "Bearer " .. os.getenv("RAMPART_KEY")
end
wrk.body = os.getenv("RAMPART_BODY") or
  '{"model":"gpt-4.1","max_tokens":16,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise the benefits of a gateway in front of LLM providers."}]}'

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d errors=%d rps=%.1f p50=%d p90=%d p99=%d p999=%d mean=%.1f\n",
    summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean))
end
