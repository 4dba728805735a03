#!/usr/bin/env bash
# docker-test.sh - builds the kvserve Docker image and tests it for real, on a machine without
# a container registry: Debian's docker.io (dockerd is started here if no engine answers), a
# debian:bookworm-slim base made locally with debootstrap when missing, builds on the host
# network, a container on the host network with a mounted model, a read-only root and a
# non-root user; completions (plain and streaming), SIGTERM draining a running stream with
# exit code 0, and compose's `scale` profile (replicas behind nginx). Removes the containers,
# networks and volumes it created (and stops dockerd if it started it); images stay as cache.
#
# Usage: scripts/docker-test.sh            (as root, or with sudo available)
# Env:   KVSERVE_SHARED      shared data dir (default: ../shared next to the repository)
#        KVSERVE_DOCKER_MODEL  model to serve (default: kjv-tiny-f16.gguf from the shared dir)
#        KVSERVE_DOCKER_PORT / KVSERVE_DOCKER_LB_PORT  ports to use (default: free ones)
#        KVSERVE_DOCKER_MIRROR  Debian mirror for debootstrap (default: the one apt uses)
#        KVSERVE_DOCKER_RMI=1  also remove the images built here
# Exits non-zero on any failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

BASE=debian:bookworm-slim
TAG=kvserve:test
NGINX_TAG=kvserve-nginx:test
ID=kvsdt$$
SHARED=${KVSERVE_SHARED:-$ROOT/../shared}
[ -d "$SHARED" ] || SHARED=/work/shared
MODEL=${KVSERVE_DOCKER_MODEL:-$SHARED/models/kjv-tiny/kjv-tiny-f16.gguf}
MAX_DELTA=$((60 * 1000 * 1000))   # the runtime stage may add at most 60 MB to its base
T0=$(date +%s)
TMP=$(mktemp -d /tmp/kvserve-docker-test.XXXXXX)
chmod 755 "$TMP"
DOCKERD_PID=""
COMPOSE=()

log() { printf '[docker-test %3ds] %s\n' $(($(date +%s) - T0)) "$*"; }
fail() { log "FAIL: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

cleanup() {
    local rc=$?
    set +e
    if [ "$rc" -ne 0 ] && command -v docker >/dev/null; then
        for c in $(docker ps -aq --filter "label=kvserve.test=$ID" 2>/dev/null); do
            log "logs of $(docker inspect -f '{{.Name}}' "$c"):"
            docker logs --tail 40 "$c" 2>&1 | sed 's/^/    /'
        done
    fi
    if [ ${#COMPOSE[@]} -gt 0 ]; then
        [ "$rc" -ne 0 ] && compose --profile scale logs --tail 30 2>&1 | sed 's/^/    /'
        compose --profile scale down -v --remove-orphans --timeout 15 >/dev/null 2>&1
    fi
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        local ids
        ids=$(docker ps -aq --filter "label=kvserve.test=$ID")
        # shellcheck disable=SC2086 # one id per word
        [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
        if [ "${KVSERVE_DOCKER_RMI:-0}" = "1" ]; then
            docker rmi "$TAG" "$NGINX_TAG" >/dev/null 2>&1
        fi
    fi
    if [ -n "$DOCKERD_PID" ]; then
        log "stopping the dockerd started here (pid $DOCKERD_PID)"
        $SUDO kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 30); do $SUDO kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
    rm -rf "$TMP"
    if [ "$rc" -eq 0 ]; then log "PASS"; else log "failed (exit $rc)"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- tools ------------------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

ensure_packages() {
    local want=(docker.io debootstrap python3) missing=()
    # Compose v2 plugin if apt has it (Debian 13+), else the v1 python docker-compose.
    if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
        if apt-cache policy docker-compose-plugin 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            want+=(docker-compose-plugin)
        else
            want+=(docker-compose)
        fi
    fi
    for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
    command -v docker >/dev/null || missing+=(docker.io)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
    else COMPOSE=(docker-compose); fi
    log "using $("${COMPOSE[@]}" version 2>/dev/null | head -1)"
    COMPOSE=()   # set again (with the project) once compose is used
}

ensure_engine() {
    if docker info >/dev/null 2>&1; then return; fi
    log "no Docker engine answers: starting dockerd"
    $SUDO bash -c 'dockerd >/tmp/dockerd.log 2>&1 & echo $!' >"$TMP/dockerd.pid"
    DOCKERD_PID=$(cat "$TMP/dockerd.pid")
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return
        sleep 1
    done
    tail -20 /tmp/dockerd.log || true
    fail "dockerd did not come up within 60 s (log: /tmp/dockerd.log)"
}

# The Debian mirror apt uses (first non-security deb line or deb822 URIs), and its security
# counterpart.
apt_mirror() {
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    cat "${files[@]}" 2>/dev/null \
        | sed -n -e 's/^deb \(\[[^]]*\] \)\{0,1\}\(https\{0,1\}:[^ ]*\) .*/\2/p' \
                 -e 's/^URIs: *\(https\{0,1\}:[^ ]*\).*/\1/p' \
        | grep -v -e security -e '://[^/]*google' -e nodesource | grep -m1 debian || true
}

ensure_base() {
    if docker image inspect "$BASE" >/dev/null 2>&1; then return; fi
    local mirror=${KVSERVE_DOCKER_MIRROR:-$(apt_mirror)}
    mirror=${mirror:-http://deb.debian.org/debian}
    local security=${mirror%/debian}/debian-security
    log "$BASE is missing: debootstrap --variant=minbase bookworm from $mirror"
    local rootfs="$TMP/rootfs"
    $SUDO debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$TMP/debootstrap.log" 2>&1 \
        || { tail -20 "$TMP/debootstrap.log"; fail "debootstrap failed"; }
    # Like the official slim image: no docs, man pages or translations, apt lists cleaned.
    $SUDO tee "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    $SUDO tee "$rootfs/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
EOF
    $SUDO tee "$rootfs/etc/apt/sources.list" >/dev/null <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
    $SUDO bash -c "cd '$rootfs' && find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete \
        && rm -rf usr/share/man/* usr/share/info/* usr/share/locale/* var/lib/apt/lists/* \
                  var/cache/apt/* var/log/*.log var/log/apt/*"
    $SUDO tar --numeric-owner -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' \
        --exclude='./sys/*' -cf - . \
        | docker import --change 'CMD ["bash"]' --message "debootstrap minbase bookworm" - "$BASE" \
        >/dev/null
    $SUDO rm -rf "$rootfs"
    log "imported $BASE ($(docker image inspect -f '{{.Size}}' "$BASE") bytes)"
}

# A TCP port nobody listens on (the containers share the host network).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

compose() { "${COMPOSE[@]}" "$@"; }

# ---- HTTP client checks (python3 standard library) ---------------------------------------------
cat >"$TMP/client.py" <<'EOF'
"""HTTP checks for docker-test.sh: completions, SSE streams, health, load balancing."""
import http.client, json, sys, threading, time

def post(port, body, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", "/v1/completions", json.dumps(body),
              {"Content-Type": "application/json"})
    return c, c.getresponse()

def complete(port, prompt="In the beginning", max_tokens=16, **extra):
    c, r = post(port, {"prompt": prompt, "max_tokens": max_tokens, **extra})
    data = r.read()
    assert r.status == 200, f"status {r.status}: {data[:300]!r}"
    j = json.loads(data)
    text = j["choices"][0]["text"]
    assert isinstance(text, str) and text, f"empty completion: {j}"
    n = j.get("usage", {}).get("completion_tokens", 0)
    assert 0 < n <= max_tokens, f"completion_tokens {n}: {j}"
    return text, n

def stream(port, prompt="In the beginning", max_tokens=16, started=None, **extra):
    """Reads an SSE completion to its end; returns (text, n_events, got_done, t_done)."""
    c, r = post(port, {"prompt": prompt, "max_tokens": max_tokens, "stream": True, **extra})
    assert r.status == 200, f"status {r.status}: {r.read()[:300]!r}"
    ctype = r.getheader("Content-Type", "")
    assert ctype.startswith("text/event-stream"), f"Content-Type {ctype}"
    text, events, done = "", 0, False
    while True:
        line = r.readline()
        if not line:
            break
        line = line.rstrip(b"\r\n")
        if not line.startswith(b"data: "):
            assert line == b"" or line.startswith(b":"), f"bad SSE line {line!r}"
            continue
        payload = line[6:]
        if payload == b"[DONE]":
            done = True
            continue
        assert not done, "data after [DONE]"
        j = json.loads(payload)
        assert "error" not in j, f"error event: {j}"
        text += j["choices"][0].get("text") or ""
        events += 1
        if started and events == 1:
            open(started, "w").close()
    return text, events, done, time.time()

def cmd_complete(port):
    text, n = complete(port)
    print(f"completion: {n} tokens: {text!r}")
    text, events, done, _ = stream(port)
    assert done, "stream did not end with data: [DONE]"
    assert events > 0 and text, "stream carried no text"
    print(f"stream: {events} events, [DONE]: {text!r}")

def cmd_rate(port):
    """Prints a max_tokens for a stream of a second or two: long enough to be running when
    docker stop arrives, well inside the 8 s shutdown grace (decode slows as context grows)."""
    t = time.time()
    _, n = complete(port, "And it came to pass", max_tokens=64, temperature=0)
    dt = max(time.time() - t, 1e-3)
    print(max(64, min(1000, int(1.5 * n / dt))))

def cmd_drain(port, max_tokens, started, out):
    # Greedy: kjv-tiny repeats itself on this prompt instead of ending early, so the stream
    # reliably runs max_tokens long.
    text, events, done, t_done = stream(port, "And it came to pass", int(max_tokens), started,
                                        temperature=0)
    json.dump({"events": events, "done": done, "t_done": t_done, "chars": len(text)},
              open(out, "w"))

def cmd_health(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/health")
    r = c.getresponse()
    body = r.read()
    sys.exit(0 if r.status == 200 and json.loads(body).get("status") == "ok" else 1)

def cmd_lb(port, n):
    """n plain and n streaming completions at once through the balancer."""
    n, errors = int(n), []
    def one(i):
        try:
            if i % 2:
                complete(port, max_tokens=24)
            else:
                _, events, done, _ = stream(port, max_tokens=24)
                assert done and events > 0, "stream without [DONE]"
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(f"request {i}: {e!r}")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2 * n)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, "; ".join(errors)
    print(f"{2 * n} requests through the balancer ok")

if __name__ == "__main__":
    try:
        globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
    except AssertionError as e:
        print(f"check failed: {e}", file=sys.stderr)
        sys.exit(1)
EOF
client() { python3 "$TMP/client.py" "$@"; }

wait_healthy() {   # container, seconds
    local s
    for _ in $(seq 1 "$2"); do
        s=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1")
        case "$s" in
            "running healthy") return 0 ;;
            running*) ;;
            *) fail "container $1 is $s" ;;
        esac
        sleep 1
    done
    fail "container $1 not healthy after $2 s ($s)"
}

# ---- setup ------------------------------------------------------------------------------------
[ -r "$MODEL" ] || fail "model $MODEL not found (set KVSERVE_SHARED or KVSERVE_DOCKER_MODEL)"
ensure_packages
ensure_engine
ensure_base

log "building $TAG (docker/Dockerfile, host network)"
docker build --network host -f docker/Dockerfile -t "$TAG" . >"$TMP/build.log" 2>&1 \
    || { tail -40 "$TMP/build.log"; fail "docker build failed"; }

base_size=$(docker image inspect -f '{{.Size}}' "$BASE")
size=$(docker image inspect -f '{{.Size}}' "$TAG")
delta=$((size - base_size))
log "image sizes: $BASE $base_size bytes, $TAG $size bytes, runtime stage adds $delta bytes" \
    "($((delta / 1000000)) MB)"
[ "$delta" -lt "$MAX_DELTA" ] || fail "the runtime stage adds $delta bytes (limit $MAX_DELTA)"
[ "$(docker image inspect -f '{{.Config.User}}' "$TAG")" != "" ] || fail "image has no USER"

log "building $NGINX_TAG (nginx from Debian on the local base)"
cat >"$TMP/nginx.Dockerfile" <<EOF
FROM $BASE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \\
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/*
EXPOSE 8080
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
EOF
docker build --network host -t "$NGINX_TAG" - <"$TMP/nginx.Dockerfile" >"$TMP/nginx-build.log" 2>&1 \
    || { tail -20 "$TMP/nginx-build.log"; fail "nginx image build failed"; }

# A config for the tests: the image's, with a small KV budget and one thread per server.
sed -e 's/^memory_mb = .*/memory_mb = 128/' -e 's/^\[server\]/[server]\nthreads = 1/' \
    docker/kvserve.toml >"$TMP/kvserve.toml"
chmod 644 "$TMP/kvserve.toml"

# ---- one container, host network, read-only root ------------------------------------------------
PORT=${KVSERVE_DOCKER_PORT:-$(free_port)}
ONE=$ID-one
log "docker run $TAG on 127.0.0.1:$PORT (host network, --read-only, model read-only)"
docker run -d --name "$ONE" --label "kvserve.test=$ID" --network host --read-only \
    --tmpfs /tmp:rw,size=256m,mode=1777 --health-interval 1s --stop-timeout 20 \
    -e KVSERVE_PORT="$PORT" -v "$(realpath "$MODEL")":/models/model.gguf:ro \
    -v "$TMP/kvserve.toml":/etc/kvserve/kvserve.toml:ro \
    "$TAG" --host 127.0.0.1 --port "$PORT" >/dev/null
wait_healthy "$ONE" 90
log "healthy"

[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$ONE")" = "true" ] \
    || fail "root filesystem is not read-only"
uid=$(docker exec "$ONE" id -u)
[ "$uid" != "0" ] || fail "the server runs as root"
log "runs as uid $uid with a read-only root filesystem"
if docker exec -u 0 "$ONE" bash -c 'echo x >/etc/kvserve-write-test' 2>/dev/null; then
    fail "even root could write to the container's root filesystem"
fi
docker exec "$ONE" bash -c 'echo x >/tmp/x && rm /tmp/x' || fail "cannot write to the /tmp tmpfs"

client health "$PORT" || fail "GET /health"
client complete "$PORT" || fail "completion checks"

# SIGTERM while a stream runs: the stream must still end with [DONE] and the exit code be 0.
max_tokens=$(client rate "$PORT") || fail "rate probe"
log "docker stop during a streaming completion (max_tokens $max_tokens)"
client drain "$PORT" "$max_tokens" "$TMP/started" "$TMP/drain.json" &
drain_pid=$!
for _ in $(seq 1 300); do [ -e "$TMP/started" ] && break; sleep 0.1; done
[ -e "$TMP/started" ] || fail "the stream did not start"
t_stop=$(date +%s.%N)
docker stop -t 20 "$ONE" >/dev/null
t_stopped=$(date +%s.%N)
wait "$drain_pid" || fail "the stream broke on docker stop"
code=$(docker inspect -f '{{.State.ExitCode}}' "$ONE")
read -r done_ events t_done < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]));
print(j["done"], j["events"], j["t_done"])' "$TMP/drain.json")
log "stop took $(python3 -c "print(round($t_stopped - $t_stop, 2))") s, exit code $code," \
    "stream: $events events, [DONE] $done_"
[ "$code" = "0" ] || fail "exit code $code after docker stop (want 0)"
[ "$done_" = "True" ] || fail "the stream did not end with [DONE]"
python3 -c "import sys; sys.exit(0 if $t_done > $t_stop else 1)" \
    || fail "the stream ended before docker stop: nothing was drained (raise max_tokens)"
docker rm "$ONE" >/dev/null

# ---- compose: scale profile, replicas behind nginx ------------------------------------------------
LB_PORT=${KVSERVE_DOCKER_LB_PORT:-$(free_port)}
HOST_PORT=$(free_port)
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
else COMPOSE=(docker-compose); fi
COMPOSE+=(-p "$ID" -f docker/compose.yaml)
export KVSERVE_IMAGE="$TAG" KVSERVE_NGINX_IMAGE="$NGINX_TAG" KVSERVE_MODEL
export KVSERVE_CONFIG="$TMP/kvserve.toml" KVSERVE_LB_PORT="$LB_PORT" KVSERVE_HOST_PORT="$HOST_PORT"
KVSERVE_MODEL=$(realpath "$MODEL")
log "compose --profile scale up: kvserve on 127.0.0.1:$HOST_PORT, 3 replicas behind nginx on" \
    "127.0.0.1:$LB_PORT"
compose --profile scale up -d --no-build --scale replica=3 >"$TMP/compose.log" 2>&1 \
    || { cat "$TMP/compose.log"; fail "compose up"; }
one_c=$(compose ps -q kvserve)
[ -n "$one_c" ] || fail "no kvserve container"
[ "$(docker inspect -f '{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.ReadonlyRootfs}}' \
    "$one_c")" = "unless-stopped true" ] || fail "kvserve service: restart policy / read-only"
wait_healthy "$one_c" 90
client complete "$HOST_PORT" >/dev/null || fail "completion from the compose kvserve service"
log "compose kvserve service healthy and answering on 127.0.0.1:$HOST_PORT"
nginx_c=$(compose ps -q nginx)
[ -n "$nginx_c" ] || fail "no nginx container"
[ "$(compose ps -q replica | wc -l)" -eq 3 ] || fail "want 3 replicas"
for _ in $(seq 1 60); do client health "$LB_PORT" 2>/dev/null && break; sleep 1; done
client health "$LB_PORT" || fail "GET /health through nginx"
wait_healthy "$nginx_c" 60
client lb "$LB_PORT" 3 || fail "requests through nginx"
client complete "$LB_PORT" || fail "completion through nginx"
upstreams=$(docker logs "$nginx_c" 2>/dev/null | sed -n 's/.*"POST [^"]*" 200 .*upstream=\([^ ]*\).*/\1/p' \
            | sort -u | wc -l)
log "nginx spread the completions over $upstreams replicas"
[ "$upstreams" -ge 2 ] || fail "nginx used $upstreams replica(s), want at least 2"
compose --profile scale down -v --remove-orphans --timeout 15 >/dev/null 2>&1 || fail "compose down"
COMPOSE=()
log "compose scale profile ok"
