#!/usr/bin/env bash
# Two "nodes" as Linux network namespaces joined by a veth pair (10.77.0.1 and 10.77.0.2, no
# loopback shortcut between them): `moeserve serve --ep-launch processes --nnodes 2` with 2 ranks
# per node, rank 0's front ends in node A; greedy completions compared with one process
# (--ep-size 1) in node A. Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN for `ip netns`); not part of
# CI. Prints MATCH / MISMATCH per prompt and exits non-zero on any mismatch.
#   tools/ep-netns-check.sh build/server/moeserve
set -euo pipefail
bin=$(realpath "${1:-build/server/moeserve}")
a=moeserve-ep-a$$
b=moeserve-ep-b$$
logs=$(mktemp -d /tmp/moeserve-netns-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$a" 2>/dev/null || true
  ip netns del "$b" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$a"
ip netns add "$b"
ip link add "veth-a$$" type veth peer name "veth-b$$"
ip link set "veth-a$$" netns "$a"
ip link set "veth-b$$" netns "$b"
ip -n "$a" addr add 10.77.0.1/24 dev "veth-a$$"
ip -n "$b" addr add 10.77.0.2/24 dev "veth-b$$"
for ns in "$a" "$b"; do
  ip -n "$ns" link set lo up
done
ip -n "$a" link set "veth-a$$" up
ip -n "$b" link set "veth-b$$" up

export OMP_WAIT_POLICY=PASSIVE
serve=("$bin" serve --threads 2 --grpc-port 0)
prompts=("The capital of France is" "Once upon a time" "def fibonacci(n):" "1, 2, 3, 5, 8,")

wait_port() {  # ns url
  for _ in $(seq 600); do
    ip netns exec "$1" curl -sf "$2/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "not healthy: $2" >&2
  cat "$logs"/*.log >&2
  return 1
}
complete() {  # ns url prompt
  ip netns exec "$1" curl -sf "$2/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"prompt\": \"$3\", \"max_tokens\": 12, \"temperature\": 0, \"logprobs\": 1}" |
    python3 -c 'import json,sys; c=json.load(sys.stdin)["choices"][0]; print(json.dumps([c["text"], c["logprobs"]["token_logprobs"]]))'
}

# The oracle: one process in node A.
ip netns exec "$a" "${serve[@]}" --host 10.77.0.1 --port 8001 >"$logs/one.log" 2>&1 &
pids+=($!)
wait_port "$a" http://10.77.0.1:8001
declare -a want
for p in "${prompts[@]}"; do want+=("$(complete "$a" http://10.77.0.1:8001 "$p")"); done
kill "${pids[0]}"
wait "${pids[0]}" || true
pids=()

# Node B first (it retries the rendezvous until node A's store is up), then node A.
common=(--ep-size 4 --ep-launch processes --nnodes 2 --dist-init-addr 10.77.0.1:29500
        --comm-timeout 60 --port 8000)
ip netns exec "$b" "${serve[@]}" --host 10.77.0.2 --node-rank 1 "${common[@]}" >"$logs/b.log" 2>&1 &
pids+=($!)
ip netns exec "$a" "${serve[@]}" --host 10.77.0.1 --node-rank 0 "${common[@]}" >"$logs/a.log" 2>&1 &
pids+=($!)
wait_port "$a" http://10.77.0.1:8000
status=0
for i in "${!prompts[@]}"; do
  got=$(complete "$a" http://10.77.0.1:8000 "${prompts[$i]}")
  if [[ "$got" == "${want[$i]}" ]]; then echo "MATCH    ${prompts[$i]}"; else
    echo "MISMATCH ${prompts[$i]}: $got vs ${want[$i]}"; status=1; fi
done
grep -h "rendezvous at\|listens" "$logs"/a.log "$logs"/b.log | head -8
kill -TERM "${pids[1]}"
wait "${pids[1]}" && echo "node A exit 0" || { echo "node A exit $?"; status=1; }
wait "${pids[0]}" && echo "node B exit 0" || { echo "node B exit $?"; status=1; }
pids=()
exit $status
