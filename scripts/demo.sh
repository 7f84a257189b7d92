#!/usr/bin/env bash
# make demo: mailpit (a real SMTP server with a web UI), the hub with
# configs/demo.yaml, the example webhook receiver (verifies signatures),
# the example dashboard responders; then a few sample events. Ctrl-C stops
# everything. DEMO_ONESHOT=1 stops after checking the results (for CI).
set -euo pipefail
cd "$(dirname "$0")/.."

export WEBHOOK_SECRET="${WEBHOOK_SECRET:-whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}"
MAILPIT_UI=127.0.0.1:8025
LOGS=data/demo
rm -rf "$LOGS" && mkdir -p "$LOGS"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "stopping..."
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_for() { # name url
  for _ in $(seq 1 600); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "$1 did not come up; see $LOGS/" >&2; exit 1
}

echo "building..."
go build -o bin/hub ./cmd/hub
go build -o bin/receiver ./examples/receiver
go build -o bin/dashboard ./examples/dashboard
GOBIN="$PWD/bin" go install github.com/axllent/mailpit@v1.33.1

./bin/mailpit --listen "$MAILPIT_UI" --smtp 127.0.0.1:1025 >"$LOGS/mailpit.log" 2>&1 & pids+=($!)
./bin/receiver -listen 127.0.0.1:9000 >"$LOGS/receiver.log" 2>&1 & pids+=($!)
wait_for mailpit "http://$MAILPIT_UI/api/v1/messages"
./bin/hub serve -config configs/demo.yaml >"$LOGS/hub.log" 2>&1 & pids+=($!)
wait_for hub http://127.0.0.1:8080/readyz
./bin/dashboard -server nats://127.0.0.1:4222 -delay 50ms >"$LOGS/dashboard.log" 2>&1 & pids+=($!)

echo "publishing sample events..."
for i in 1 2 3; do
  ./bin/hub publish -type order.created -id "demo-order-$i" \
    -data "{\"id\":\"A-10$i\",\"total\":$((i * 25)).50,\"customer\":{\"name\":\"Ada $i\",\"email\":\"ada$i@example.com\",\"phone\":\"+1555000000$i\"}}"
done
./bin/hub publish -type order.shipped -id demo-ship-1 \
  -data '{"id":"A-101","customer":{"name":"Ada 1","email":"ada1@example.com","phone":"+15550000001"}}'
curl -fsS -X POST http://127.0.0.1:8080/v1/events -H 'Content-Type: application/json' \
  -d '{"type":"user.signed_up","id":"demo-user-1","data":{"user":"ada"}}' >/dev/null

# Wait for the results a new user should see.
for _ in $(seq 1 150); do
  mails=$(curl -fsS "http://$MAILPIT_UI/api/v1/messages" | grep -o '"total":[0-9]*' | head -1 | cut -d: -f2 || true)
  hooks=$(grep -c "verified webhook" "$LOGS/receiver.log" || true)
  [ "${mails:-0}" -ge 3 ] && [ "${hooks:-0}" -ge 4 ] && break
  sleep 0.2
done
gather=$(curl -fsS "http://127.0.0.1:8080/v1/gather/dashboard?user_id=42" || echo "gather failed")

cat <<MSG

  hub demo is running
  -------------------
  emails (mailpit UI)     http://$MAILPIT_UI        ($mails received; API: /api/v1/messages)
  webhooks + SMS          $LOGS/receiver.log        ($hooks verified webhooks)
  hub log                 $LOGS/hub.log
  gather                  curl 'http://127.0.0.1:8080/v1/gather/dashboard?user_id=42'
  dead letters            ./bin/hub dlq list
  publish more            ./bin/hub publish -type order.created -data '{"id":"X","total":1,"customer":{"name":"You","email":"you@example.com","phone":"+15550001111"}}'

  gather answer: ${gather:0:160}...

MSG
tail -n 4 "$LOGS/receiver.log"

if [ "${DEMO_ONESHOT:-0}" = 1 ]; then
  [ "${mails:-0}" -ge 3 ] && [ "${hooks:-0}" -ge 4 ] && [[ "$gather" == *'"user"'* ]] || { echo "demo check FAILED" >&2; exit 1; }
  echo "demo check passed"
  exit 0
fi
echo "Ctrl-C stops everything."
wait
