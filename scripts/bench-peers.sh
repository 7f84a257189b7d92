#!/usr/bin/env bash
# make bench-peers: the hub against raw NATS JetStream and RabbitMQ, same
# run, same events, same durability; then the hub's scale curves. Writes
# docs/peers.md and docs/img/peers-*.svg from the results.
#
# RabbitMQ (Debian's rabbitmq-server; installed with apt-get if missing) is
# started for the run on loopback only (AMQP, Erlang distribution and epmd
# all on 127.0.0.1), with its data and logs in a temporary directory, and
# stopped at the end.
#
# Knobs (environment): COUNT (events, sync: default; 50000), COUNT_ALWAYS
# (events, sync: always; 10000), SIZE (bytes; 128), LAT_RATE and
# LAT_RATE_ALWAYS (events/s of the latency phase; 1000 and 200), ROUNDS
# (each system this many times, interleaved; 3), BACKLOG (events of the
# backlog run; 1000000), BATCH_ALWAYS (sync: always intake of raw
# JetStream and the hub as JetStream atomic batches of this many events,
# 0 for one message at a time; 1000), BATCH_WORKERS (atomic batches open
# at once; 4), AMQP_PORT (5673), OUT (results directory; a temporary one),
# SKIP_SCALE=1, SKIP_PEERS=1.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-50000}
COUNT_ALWAYS=${COUNT_ALWAYS:-10000}
SIZE=${SIZE:-128}
LAT_RATE=${LAT_RATE:-1000}
LAT_RATE_ALWAYS=${LAT_RATE_ALWAYS:-200}
ROUNDS=${ROUNDS:-3}
BACKLOG=${BACKLOG:-1000000}
BATCH_ALWAYS=${BATCH_ALWAYS:-1000}
BATCH_WORKERS=${BATCH_WORKERS:-4}
AMQP_PORT=${AMQP_PORT:-5673}
GO=${GO:-go}
OUT=${OUT:-$(mktemp -d -t hub-peers-XXXXXX)}
mkdir -p "$OUT" docs/img
echo "results in $OUT"

$GO build -o bin/hub ./cmd/hub
$GO build -o bin/peers ./peers

RABBIT_DIR=""
RABBIT_PID=""
EPMD_STARTED=""
# Debian's rabbitmqctl wrapper switches to the rabbitmq user (another
# Erlang cookie): call the real one.
CTL=/usr/lib/rabbitmq/bin/rabbitmqctl
stop_rabbit() {
	if [ -n "$RABBIT_DIR" ]; then
		HOME="$RABBIT_DIR" $CTL -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || true
		# The server script waits for the Erlang VM: when it is gone, so is RabbitMQ.
		if [ -n "$RABBIT_PID" ]; then
			for _ in $(seq 1 150); do kill -0 "$RABBIT_PID" 2>/dev/null || break; sleep 0.2; done
		fi
		for pid in "$RABBIT_PID" "${BEAM_PID:-}"; do
			if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
				kill "$pid" 2>/dev/null || true
			fi
		done
		wait "$RABBIT_PID" 2>/dev/null || true
		rm -rf "$RABBIT_DIR"
		RABBIT_DIR=""
	fi
	if [ -n "$EPMD_STARTED" ]; then
		epmd -kill >/dev/null 2>&1 || true
		EPMD_STARTED=""
	fi
}
trap stop_rabbit EXIT

start_rabbit() {
	if ! command -v rabbitmq-server >/dev/null; then
		echo "installing rabbitmq-server"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
	fi
	RABBIT_DIR=$(mktemp -d -t hub-rabbit-XXXXXX)
	echo '[].' >"$RABBIT_DIR/enabled_plugins"
	export RABBITMQ_NODENAME=hubbench@localhost
	export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_NODE_PORT=$AMQP_PORT
	export RABBITMQ_DIST_PORT=$((AMQP_PORT + 20000))
	export RABBITMQ_MNESIA_BASE=$RABBIT_DIR/mnesia
	export RABBITMQ_LOG_BASE=$RABBIT_DIR/log
	export RABBITMQ_PID_FILE=$RABBIT_DIR/rabbit.pid
	export RABBITMQ_ENABLED_PLUGINS_FILE=$RABBIT_DIR/enabled_plugins
	export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
	export ERL_EPMD_ADDRESS=127.0.0.1
	# The Erlang port mapper, on loopback too, unless one already runs.
	if ! epmd -names >/dev/null 2>&1; then
		epmd -address 127.0.0.1 -daemon
		EPMD_STARTED=1
	fi
	# Run the server directly (not Debian's su wrapper), with the Erlang
	# cookie in the temporary HOME.
	HOME="$RABBIT_DIR" /usr/lib/rabbitmq/bin/rabbitmq-server >"$RABBIT_DIR/server.out" 2>&1 &
	RABBIT_PID=$!
	# await_startup fails at once while the node is not yet registered.
	local up=""
	for _ in $(seq 1 90); do
		if HOME="$RABBIT_DIR" timeout 30 $CTL -n "$RABBITMQ_NODENAME" await_startup >/dev/null 2>&1; then
			up=1
			break
		fi
		kill -0 "$RABBIT_PID" 2>/dev/null || break
		sleep 1
	done
	if [ -z "$up" ]; then
		echo "rabbitmq did not start:"; tail -20 "$RABBIT_DIR/server.out"; exit 1
	fi
	BEAM_PID=$(HOME="$RABBIT_DIR" $CTL -n "$RABBITMQ_NODENAME" eval 'os:getpid().' | tr -dc '0-9')
	echo "rabbitmq $(HOME="$RABBIT_DIR" $CTL -n "$RABBITMQ_NODENAME" version 2>/dev/null) on 127.0.0.1:$AMQP_PORT (pid $BEAM_PID)"
}

if [ -z "${SKIP_PEERS:-}" ]; then
	start_rabbit
	AMQP="amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
	for mode in default always; do
		n=$COUNT rate=$LAT_RATE
		[ "$mode" = always ] && n=$COUNT_ALWAYS rate=$LAT_RATE_ALWAYS
		for round in $(seq 1 "$ROUNDS"); do
			for sys in jetstream rabbitmq hub hub-webhook; do
				# Durable intake: JetStream atomic batches (4 fsyncs per
				# batch, not one per event); RabbitMQ publishes the same way
				# in both modes.
				batch=0
				[ "$mode" = always ] && [ "$sys" != rabbitmq ] && batch=$BATCH_ALWAYS
				./bin/peers run -system "$sys" -sync "$mode" -count "$n" -size "$SIZE" -latency-rate "$rate" \
					-batch "$batch" -batch-workers "$BATCH_WORKERS" \
					-amqp "$AMQP" -rabbit-pid "$BEAM_PID" -out "$OUT/peers-$sys-$mode-r$round.json"
			done
		done
	done
	stop_rabbit
fi

if [ -z "${SKIP_SCALE:-}" ]; then
	# Subscriptions: about 20-60k deliveries a point.
	for pt in 1:20000 10:4000 100:600 1000:60; do
		subs=${pt%%:*} n=${pt##*:}
		echo "scale: $subs webhook subscriptions, $n events"
		./bin/hub bench -inprocess -no-progress -webhooks "$subs" -count "$n" -size 128 -json >"$OUT/scale-subs-$subs.json"
	done
	# Event sizes, one webhook subscription.
	for size in 128 1024 16384; do
		echo "scale: $size-byte events"
		./bin/hub bench -inprocess -no-progress -webhooks 1 -count 20000 -size "$size" -json >"$OUT/scale-size-$size.json"
	done
	# HTTP intake: batches of 100 flat out, and single events at 1,000/s.
	./bin/hub bench -inprocess -no-progress -via http -batch 100 -workers 4 -webhooks 0 -count 100000 -json >"$OUT/http-batch.json"
	./bin/hub bench -inprocess -no-progress -via http -rate 1000 -webhooks 0 -duration 5s -json >"$OUT/http-single.json"
	# Webhook latency at 1,000 events/s, one subscription.
	./bin/hub bench -inprocess -no-progress -rate 1000 -webhooks 1 -duration 5s -json >"$OUT/webhook-1k.json"
	# Memory at a steady 5,000 events/s to one webhook subscription.
	./bin/hub bench -inprocess -no-progress -rate 5000 -webhooks 1 -duration 20s -json >"$OUT/steady-5k.json"
	# The backlog: the receiver is down while BACKLOG events are published,
	# stays down 30 s more, then comes back; the run times the drain.
	if [ "$BACKLOG" -gt 0 ]; then
		echo "backlog: $BACKLOG events"
		./bin/hub bench -inprocess -no-progress -backlog -hold 30s -webhooks 1 -count "$BACKLOG" -drain 15m -json >"$OUT/backlog.json" || true
	fi
fi

./bin/peers render -in "$OUT" -md docs/peers.md -img docs/img \
	-command "make bench-peers COUNT=$COUNT COUNT_ALWAYS=$COUNT_ALWAYS SIZE=$SIZE LAT_RATE=$LAT_RATE LAT_RATE_ALWAYS=$LAT_RATE_ALWAYS ROUNDS=$ROUNDS BACKLOG=$BACKLOG BATCH_ALWAYS=$BATCH_ALWAYS BATCH_WORKERS=$BATCH_WORKERS"
echo "wrote docs/peers.md and docs/img/peers-*.svg"
