#!/usr/bin/env bash
# Issue 6's figure: fan-out throughput with the audit trail on vs off.
# Each variant runs in its own process, off and on alternately, ROUNDS
# times; prints every pair and the medians. Absolute numbers on a shared
# 2-core VM move by up to 40 % between runs (the same binary lands at
# ~24 or ~34 cpu-µs per event for minutes at a time), so compare the
# medians and the pairs whose two runs landed alike, not one pair.
#
#   scripts/bench-audit.sh [ROUNDS] [FANOUT_EVENTS] [WEBHOOK_EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-12}
fanout_n=${2:-100000}
webhook_n=${3:-20000}
bin=$(mktemp -d)/audit.test
go test -c -o "$bin" ./subscribers/audit
cd subscribers/audit

run() { # pattern events -> "deliveries/s cpu-µs/event"
	"$bin" -test.run '^$' -test.bench "$1" -test.benchtime "$2x" | awk '/^Benchmark/ {print $7, $5}'
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

bench() { # name events
	local name=$1 n=$2 offs=() ons=() ratios=()
	echo "== $name, $n events per run, $rounds rounds (deliveries/s, cpu-µs/event)"
	for i in $(seq "$rounds"); do
		read -r off offcpu < <(run "$name/^audit=off\$" "$n")
		read -r on oncpu < <(run "$name/^audit=on\$/^wait_stored=true\$" "$n")
		ratio=$(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", a/b}')
		printf 'round %2d  off %8.0f (%6.2f)  on %8.0f (%6.2f)  ratio %s\n' "$i" "$off" "$offcpu" "$on" "$oncpu" "$ratio"
		offs+=("$off") ons+=("$on") ratios+=("$ratio")
	done
	moff=$(printf '%s\n' "${offs[@]}" | median)
	mon=$(printf '%s\n' "${ons[@]}" | median)
	mratio=$(printf '%s\n' "${ratios[@]}" | median)
	awk -v a="$mon" -v b="$moff" -v r="$mratio" 'BEGIN {printf "median off %.0f, on %.0f: %.3f; median of the pair ratios %.3f\n", b, a, a/b, r}'
}

bench Fanout4 "$fanout_n"
bench Webhook4 "$webhook_n"
