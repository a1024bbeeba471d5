#!/usr/bin/env bash
# The demo: a 2-host lab, a VM from the test guest, and the client reaching it.
set -euo pipefail
BIN=${1:?usage: demo.sh GODWIT_BIN GUEST_DIR}
GUEST=${2:?usage: demo.sh GODWIT_BIN GUEST_DIR}
LAB=${GODWIT_DEMO_LAB:-demo}
export GODWIT_GUEST_DIR=$GUEST

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if "$BIN" lab list -o json | grep -q "\"name\": \"$LAB\""; then
  say "removing the previous demo lab"
  "$BIN" lab down --name "$LAB"
fi

say "bringing up lab '$LAB' with 2 hosts"
t0=$(date +%s.%N)
"$BIN" lab up --name "$LAB" --hosts 2
"$BIN" host list

say "creating VM web-1 on host-1 from the test guest image"
t1=$(date +%s.%N)
"$BIN" vm create web-1 --host host-1 --memory 512
ip=$("$BIN" vm show web-1 -o json | sed -n 's/.*"ip": "\([0-9.]*\)".*/\1/p' | head -n1)
"$BIN" vm list

say "the client namespace reaches the guest at $ip: HTTP, TCP echo and UDP echo on port 7"
"$BIN" lab exec --name "$LAB" client -- "$BIN" probe http --wait 90s "http://$ip/stats"
t2=$(date +%s.%N)
echo
"$BIN" lab exec --name "$LAB" client -- "$BIN" probe tcp "$ip:7"
"$BIN" lab exec --name "$LAB" client -- "$BIN" probe udp "$ip:7" --count 20

say "a client in the client namespace streams HTTP requests to the VM while it moves"
stream_out=$(mktemp)
"$BIN" lab exec --name "$LAB" client -- "$BIN" probe http-stream "http://$ip/healthz" --interval 20ms >"$stream_out" 2>&1 &
stream=$!
sleep 1

for to in host-2 host-1; do
  say "live-migrating web-1 to $to"
  "$BIN" vm migrate web-1 --to "$to" -o json | tee /tmp/godwit-demo-migration.json | \
    awk -F'[:,]' '/"total_ms"/{t=$2} /"downtime_ms"/{d=$2} /"bytes"/{b=$2} /"passes"/{p=$2} /"source"/{s=$2} /"destination"/{x=$2}
      END { gsub(/[ "]/, "", s); gsub(/[ "]/, "", x); printf "%s -> %s: total %.0f ms, downtime %.1f ms (QEMU), %.1f MiB sent, %d passes\n", s, x, t, d, b/1048576, p }'
  "$BIN" vm list
done

sleep 1
kill -INT "$stream"
wait "$stream" || true
say "the client's view"
cat "$stream_out"
rm -f "$stream_out"

awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "\nlab up: %.1f s; vm create to the guest answering HTTP: %.1f s\n", b-a, c-b }'
cat <<EOT

The lab stays up so you can explore it:
  $BIN vm list; $BIN host show host-1; $BIN vm console web-1
  $BIN lab exec client -- $BIN probe http http://$ip/stats
Remove it with: $BIN lab down --name $LAB
EOT
