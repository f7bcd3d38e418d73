#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# demo.sh — northstar end to end: an MQTT broker container and a client
# container under rootless containerd with the northstar shim authenticate
# to each other with northstar tokens from the agent's API (identity by
# socket), then with mutual TLS on the X.509-SVIDs of their SPIFFE Workload
# API, then, as the fallback, with the shared lifecycle secret (sealed by a
# swtpm TPM): outsiders, other identities and replayed tokens are refused;
# a containerd restart rotates the secret.
#
# Run as root from anywhere (`make demo`).  Everything lives in a fresh
# temporary directory that is removed at exit, with every process started
# here (swtpm, rootlesskit, containerd, shims, containers).  Prints no secret.
# Exit 0 only if every step behaved as described.
#
# Environment: DEMO_KEEP=1 keeps the temporary directory (for debugging).
set -euo pipefail

readonly PROG=${0##*/}
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root (sudo make demo)"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH=/usr/local/go/bin:$PATH
NSTEST_USER=${NSTEST_USER:-nstest}
RUNTIME=io.containerd.northstar.v2
PORT=1883
BROKER=127.0.0.1:$PORT
BROKER_TLS=127.0.0.1:$((PORT + 1))
T0=$(date +%s%N)

FAILED=0
ok() { printf '  [ok]   %s\n' "$*"; }
bad() {
	printf '  [FAIL] %s\n' "$*"
	FAILED=$((FAILED + 1))
}
# step TITLE: a section of the report, with the seconds since the start.
step() { printf '\n== %s (%d s)\n' "$*" $((($(date +%s%N) - T0) / 1000000000)); }

# ------------------------------------------------------------ prerequisites
need_setup=0
for c in swtpm rootlesskit slirp4netns containerd ctr runc containerd-shim-runc-v2 busybox newuidmap setpriv; do
	command -v "$c" >/dev/null || need_setup=1
done
id "$NSTEST_USER" >/dev/null 2>&1 || need_setup=1
if ((need_setup)); then
	step "setup (scripts/setup.sh)"
	bash scripts/setup.sh
fi
command -v go >/dev/null || die "go not found"

# ------------------------------------------------------------------ workdir
W=$(mktemp -d /tmp/nsdemo.XXXXXX) # short: unix socket paths live under it
chmod 0755 "$W"
CTD=$W/ctd
TPM=$W/tpm
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# purge = stop containerd, kill every process of the rootless user
	# namespace (shims, containers), stop rootlesskit, remove the dir.
	if [[ -d $CTD ]]; then scripts/rootless-containerd.sh purge "$CTD" >/dev/null 2>&1 || rc=1; fi
	if [[ -d $TPM ]]; then scripts/swtpm.sh stop "$TPM" >/dev/null 2>&1 || rc=1; fi
	if [[ ${DEMO_KEEP:-0} == 1 ]]; then
		printf '%s: kept %s\n' "$PROG" "$W" >&2
	else
		rm -rf "$W" || rc=1
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

AS_USER=(setpriv "--reuid=$(id -u "$NSTEST_USER")" "--regid=$(id -g "$NSTEST_USER")" --init-groups)
X=(scripts/rootless-containerd.sh exec "$CTD")
CTR_FLAGS=(--cgroup "" --cpu-shares 0 --net-host --runtime "$RUNTIME")

# ------------------------------------------------------------------- build
step "build (only what the demo runs: the three binaries, the example's two)"
# Static, cgo-free binaries, as `make build` builds them; examples/mqtt is a
# module of its own (its MQTT libraries stay out of the product's go.mod).
# On a cold Go cache this is the demo's longest step: it shows how far it is.
export CGO_ENABLED=0
install -d -m 0755 "$W/bin" "$W/bin/mqtt"
GOPROGRESS=scripts/go-progress.sh
"$GOPROGRESS" "modules of northstar and examples/mqtt" 0 \
	bash -c "go list -deps ./cmd/... >'$W/deps' && go -C examples/mqtt list -deps ./broker ./client >'$W/deps-mqtt'"
"$GOPROGRESS" "northstar" "$(wc -l <"$W/deps")" \
	go build -v -trimpath -o "$W/bin/" ./cmd/northstar-hook ./cmd/northstarctl ./cmd/containerd-shim-northstar-v2
"$GOPROGRESS" "examples/mqtt" "$(wc -l <"$W/deps-mqtt")" \
	go -C examples/mqtt build -v -trimpath -o "$W/bin/mqtt/" ./broker ./client
for p in broker client; do
	mv "$W/bin/mqtt/$p" "$W/bin/mqtt-$p"
done
rmdir "$W/bin/mqtt"
unset CGO_ENABLED
for p in broker client; do
	MKROOTFS_OWNER=$NSTEST_USER: scripts/mkrootfs.sh "$W/rootfs-$p" "$W/bin/mqtt-$p" >"$W/mkrootfs.log" 2>&1 || {
		cat "$W/mkrootfs.log" >&2
		die "mkrootfs.sh failed"
	}
done
ok "northstar-hook, northstarctl, containerd-shim-northstar-v2; MQTT broker and client rootfs (busybox + static binary)"

# ---------------------------------------------------------- TPM, containerd
step "swtpm, northstar, rootless containerd"
install -d -m 0700 -o "$NSTEST_USER" -g "$NSTEST_USER" "$TPM" "$W/state" "$W/logs"
scripts/swtpm.sh start "$TPM" >/dev/null 2>&1 || die "swtpm did not start (scripts/swtpm.sh start $TPM)"
ok "swtpm (TPM 2.0) running as $NSTEST_USER on $TPM/swtpm.sock"
CONFIG=$W/config.toml
install -d -m 0755 -o "$NSTEST_USER" -g "$NSTEST_USER" "$W/run"
AGENT_SOCK=$W/run/agent/agent.sock
cat >"$CONFIG" <<EOF
state_dir = "$W/state"
sealer    = "tpm"
[tpm]
path = "unix:$TPM/swtpm.sock"
pcrs = []
[agent]
socket = "$AGENT_SOCK"
[api]
enable = true
[rotation]
grace = "3s"
[spiffe]
trust_domain = "demo.northstar.example"
EOF
chmod 0644 "$CONFIG"
CTL=("${AS_USER[@]}" "$W/bin/northstarctl")
"${CTL[@]}" init --config "$CONFIG" >/dev/null || die "northstarctl init failed"
status() { "${CTL[@]}" status --json --config "$CONFIG"; }
# The record's generation: the first one; the containers' follow it.
gen() { status | tr ',{}' '\n' | sed -n 's/^ *"generation": *\([0-9]*\).*/\1/p' | head -n 1; }

lifecycle() { status | tr ',{}' '\n' | sed -n 's/^ *"lifecycle_id": *"\([^"]*\)".*/\1/p'; }
G0=$(gen)
[[ $G0 =~ ^[0-9]+$ ]] || die "northstarctl status shows no generation"
ok "northstarctl init: secret generation $G0 sealed by the TPM (state dir $W/state)"
NORTHSTAR_BIN=$W/bin NORTHSTAR_CONFIG=$CONFIG scripts/rootless-containerd.sh start "$CTD" >/dev/null 2>&1 ||
	die "rootless containerd did not start (see $CTD/containerd.log)"
ok "rootless containerd (pid $(<"$CTD/containerd.pid")) as $NSTEST_USER, runtime $RUNTIME available"
# The agent (northstarctl agent with [api] enable) runs where the runtime
# and the hook run: inside rootlesskit's namespaces.
scripts/rootless-containerd.sh agent "$CTD" >/dev/null 2>&1 ||
	die "northstarctl agent did not start: $(tail -n 3 "$CTD/agent.log" | tr '\n' ' ')"
[[ -S $AGENT_SOCK ]] || die "northstarctl agent serves, but not on $AGENT_SOCK"
ok "northstar agent (northstarctl agent) serving the containers' API sockets"

# ------------------------------------------------------------------ helpers
SEQ=0
# run_client NAME [client flags...]: client container, prints its output
# indented; returns the client's exit code.
run_client() {
	local name=$1 rc=0
	shift
	SEQ=$((SEQ + 1))
	"${X[@]}" ctr run --rm "${CTR_FLAGS[@]}" "${EXTRA[@]}" --rootfs "$W/rootfs-client" "$name-$SEQ" \
		/bin/mqtt-client --broker "$BROKER" --client-id "$name" --timeout 5s "$@" >"$W/out" 2>&1 || rc=$?
	sed 's/^/         | /' "$W/out"
	return "$rc"
}
# outsider [client flags...]: the client binary as a plain process on the
# MQTT broker's network (inside rootlesskit's namespaces), no secret.
outsider() {
	local rc=0
	"${X[@]}" "$W/bin/mqtt-client" --auth secret --broker "$BROKER" --client-id outsider --timeout 5s "$@" >"$W/out" 2>&1 || rc=$?
	sed 's/^/         | /' "$W/out"
	return "$rc"
}
start_broker() { # start_broker NAME token|mtls|secret [LISTEN]
	"${X[@]}" ctr run -d --log-uri "file://$W/logs/$1.log" "${CTR_FLAGS[@]}" --annotation io.northstar.identity=broker \
		--rootfs "$W/rootfs-broker" "$1" /bin/mqtt-broker --auth "$2" --listen "${3:-$BROKER}" >/dev/null || return 1
	local i
	for ((i = 0; i < 100; i++)); do
		grep -q "broker: listening" "$W/logs/$1.log" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}
stop_broker() {
	"${X[@]}" ctr task kill --signal SIGTERM "$1" >/dev/null || return 1
	local i
	for ((i = 0; i < 100; i++)); do
		"${X[@]}" ctr task ls | grep -q "^$1 .*STOPPED" && break
		sleep 0.05
	done
	"${X[@]}" ctr task delete "$1" >/dev/null && "${X[@]}" ctr container rm "$1" >/dev/null
}
expect() { # expect WANT RC WHAT
	if [[ $2 -eq $1 ]]; then ok "$3 (exit $2)"; else bad "$3: exit $2, want $1"; fi
}
EXTRA=()

as() { EXTRA=(--annotation "io.northstar.identity=$1"); }

# ------------------------------------------------------------------ tokens
step "tokens: the client logs in as its identity with a one-time token"
if start_broker broker1 token; then
	G1=$(gen)
	ok "MQTT broker container (identity broker) started; the shim adopted the secret init made for this runtime lifecycle (generation $G1, lifecycle $(lifecycle))"
	[[ $G1 -eq $G0 ]] || bad "generation $G1, want $G0 (init's secret, adopted)"
else
	bad "MQTT broker container did not start"
	G1=$(gen)
fi
as client
rc=0
run_client client1 || rc=$?
expect 0 "$rc" "client accepted: username client, password a token for broker, verified once on the MQTT broker's own API socket"
rc=0
outsider --no-password || rc=$?
expect 3 "$rc" "outsider refused: no password"
as mallory
rc=0
run_client mallory --username client || rc=$?
expect 3 "$rc" "refused: container mallory holds the same /run/northstar/secret but cannot log in as client (its token names mallory)"
as client
rc=0
run_client client2 --replay || rc=$?
expect 0 "$rc" "a captured token replayed: refused the second time"

step "rotation: containerd restarts"
OLDPID=$(<"$CTD/containerd.pid")
scripts/rootless-containerd.sh restart-containerd "$CTD" >/dev/null 2>&1 || die "restart-containerd failed"
ok "containerd restarted (pid $OLDPID -> $(<"$CTD/containerd.pid")); MQTT broker broker1 kept running"
rc=0
run_client client3 || rc=$?
G2=$(gen)
if [[ $G2 -eq $((G1 + 1)) ]]; then
	ok "new client container started a new lifecycle: secret generation $G1 -> $G2"
else
	bad "generation $G2 after the restart, want $((G1 + 1))"
fi
expect 0 "$rc" "the old MQTT broker, not restarted, accepts the new client (the shared secret's limit is gone for token users)"

step "audit log"
# Its later lines (the recorded head it checked) indented under the verdict.
if "${CTL[@]}" audit verify --config "$CONFIG" >"$W/out" 2>&1; then
	ok "northstarctl audit verify: $(sed '2,$s/^/         /' "$W/out")"
else
	bad "northstarctl audit verify: $(sed '2,$s/^/         /' "$W/out")"
fi

# ------------------------------------------------------------ mutual TLS
step "mutual TLS: the client presents the X.509-SVID of its identity (--auth mtls)"
if start_broker broker3 mtls "$BROKER_TLS"; then
	ok "MQTT broker broker3 listens for TLS only on $BROKER_TLS, as $(sed -n 's/.*(mutual TLS as \(.*\))$/\1/p' "$W/logs/broker3.log"): its SVID from its own /run/northstar/api/spiffe.sock (the shim set SPIFFE_ENDPOINT_SOCKET)"
else
	bad "could not start the MQTT broker with --auth mtls"
fi
as client
rc=0
run_client client-mtls --auth mtls --broker "$BROKER_TLS" || rc=$?
expect 0 "$rc" "client accepted: its certificate is the SVID of spiffe://demo.northstar.example/client, its username client; no password crossed the network"
as mallory
rc=0
run_client mallory3 --auth mtls --broker "$BROKER_TLS" --username client || rc=$?
expect 3 "$rc" "refused: mallory's certificate is a valid SVID, of mallory: it cannot log in as client"
rc=0
outsider --auth mtls --no-certificate --broker "$BROKER_TLS" || rc=$?
if [[ $rc -eq 1 ]] && grep -q "certificate required" "$W/out"; then
	ok "outsider refused: no client certificate, the TLS handshake fails (exit $rc)"
else
	bad "outsider without a certificate: exit $rc, want 1 and the broker's 'certificate required'"
fi
EXTRA=()

# ------------------------------------------------------- the shared secret
step "the shared lifecycle secret (--auth secret), rotated live"
if stop_broker broker1 && start_broker broker2 secret; then
	ok "MQTT broker broker2 lets in whoever presents the generation-$G2 secret, read again at every login"
else
	bad "could not start the MQTT broker with --auth secret"
fi
as client
rc=0
run_client client4 --auth secret || rc=$?
expect 0 "$rc" "client accepted with its /run/northstar/secret as password"
as mallory
rc=0
run_client mallory2 --auth secret --username client || rc=$?
expect 0 "$rc" "documented limit of the shared secret: mallory, holding the same secret, gets in as client"
EXTRA=(--annotation io.northstar.secret.disable=true)
rc=0
run_client nosecret --auth secret --no-password || rc=$?
expect 3 "$rc" "outsider refused: container with io.northstar.secret.disable=true, no password"
EXTRA=()
# holder NAME: a running container that keeps a copy of the secret it got
# (in its /dev/shm, not a file of northstar's) and logs in with it later.
holder() {
	"${X[@]}" ctr run -d "${CTR_FLAGS[@]}" --rootfs "$W/rootfs-client" "$1" /bin/sh -c 'cat /run/northstar/secret > /dev/shm/held; sleep 600' >/dev/null
}
held_login() { # held_login NAME: log in with the copy it kept
	local rc=0
	"${X[@]}" ctr task exec --exec-id "login-$SEQ" "$1" /bin/mqtt-client --auth secret --secret-file /dev/shm/held \
		--broker "$BROKER" --client-id "$1" --timeout 5s >"$W/out" 2>&1 || rc=$?
	SEQ=$((SEQ + 1))
	sed 's/^/         | /' "$W/out"
	return "$rc"
}
holder stale || bad "could not start container stale"
OLDPID=$(<"$CTD/containerd.pid")
scripts/rootless-containerd.sh restart-containerd "$CTD" >/dev/null 2>&1 || die "restart-containerd failed"
rc=0
run_client client5 --auth secret || rc=$?
G3=$(gen)
[[ $G3 -eq $((G2 + 1)) ]] || bad "generation $G3 after the second restart, want $((G2 + 1))"
expect 0 "$rc" "containerd restarted (pid $OLDPID -> $(<"$CTD/containerd.pid")): client5, started after it with generation $G3, is accepted by broker2, started before it (live rotation: broker2's /run/northstar/secret is generation $G3 now)"
rc=0
held_login stale || rc=$?
expect 0 "$rc" "container stale still presents its copy of generation $G2: accepted during the grace period (secret.previous)"
sleep 4
rc=0
held_login stale || rc=$?
expect 3 "$rc" "the grace period is over: stale's copy of generation $G2 is refused"
holder rogue || bad "could not start container rogue"
"${CTL[@]}" rotate --config "$CONFIG" --revoke rogue >/dev/null || bad "northstarctl rotate --revoke rogue failed"
G4=$(gen)
sleep 1
if "${X[@]}" ctr task exec --exec-id revoked-ls rogue /bin/sh -c 'test -e /run/northstar/secret' >/dev/null 2>&1; then
	bad "the revoked container rogue still has /run/northstar/secret"
else
	ok "northstarctl rotate --revoke rogue: generation $G4 reaches every running container but rogue, whose /run/northstar/secret is gone"
fi
rc=0
held_login rogue || rc=$?
expect 3 "$rc" "rogue's copy of generation $G3 is refused: a revoking rotation keeps no secret before it anywhere"
rc=0
run_client client6 --auth secret || rc=$?
expect 0 "$rc" "the others carry on: client6 (generation $G4) accepted by broker2, never restarted"
"${CTL[@]}" status --config "$CONFIG" | sed -n '/^containers:/,$p' | sed 's/^/         /' | sed '1s/^ */  [info] /'

# ------------------------------------------------------------------ logs
step "MQTT broker logs (no secrets, no passwords)"
for b in broker1 broker3 broker2; do
	sed "s/^/  $b | /" "$W/logs/$b.log" 2>/dev/null || true
done

step "result"
T1=$(date +%s%N)
if ((FAILED == 0)); then
	printf 'demo: every step behaved as described (%d.%01d s)\n' $(((T1 - T0) / 1000000000)) $(((T1 - T0) / 100000000 % 10))
else
	printf 'demo: %d step(s) did not behave as described\n' "$FAILED"
	exit 1
fi
