#!/usr/bin/env bash
# The demo: a 2-host lab, a VM from the test guest, and the client reaching it.
set -euo pipefail
BIN=${1:?usage: demo.sh GODWIT_BIN GUEST_DIR}
GUEST=${2:?usage: demo.sh GODWIT_BIN GUEST_DIR}
LAB=${GODWIT_DEMO_LAB:-demo}
export GODWIT_GUEST_DIR=$GUEST

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if "$BIN" lab list -o json | grep -q "\"Name\": \"$LAB\""; then
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

say "waiting for the guest at $ip to answer HTTP from the client namespace"
for i in $(seq 1 120); do
  if "$BIN" lab exec --name "$LAB" client -- busybox wget -q -T 1 -O - "http://$ip/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.25
done
t2=$(date +%s.%N)
"$BIN" lab exec --name "$LAB" client -- busybox wget -q -T 2 -O - "http://$ip/stats"
echo
say "TCP echo on port 7 from the client"
echo "hello over TCP" | "$BIN" lab exec --name "$LAB" client -- busybox nc -w 2 "$ip" 7

awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "\nlab up: %.1f s; vm create to HTTP answer: %.1f s\n", b-a, c-b }'
cat <<EOT

The lab stays up so you can explore it:
  $BIN vm list | $BIN host show host-1 | $BIN vm console web-1
  $BIN lab exec --name $LAB client -- busybox wget -qO- http://$ip/stats
Remove it with: $BIN lab down --name $LAB
EOT
