#!/bin/sh
# Redirect TCP ports to the tarpit with iptables and ip6tables (nat PREROUTING REDIRECT).
#
#   deploy/iptables-redirect.sh add    TARPIT_PORT PORT [PORT...]
#   deploy/iptables-redirect.sh remove TARPIT_PORT PORT [PORT...]
#
# The tarpit records each connection's original port (eBPF hook, SO_ORIGINAL_DST), so one
# listener serves every redirected port. Rules are tagged with a comment so `remove` deletes
# exactly what `add` created; `add` is idempotent.
set -eu
usage() { echo "usage: $0 add|remove TARPIT_PORT PORT [PORT...]" >&2; exit 2; }
[ $# -ge 3 ] || usage
action=$1; to=$2; shift 2
case $action in add|remove) ;; *) usage ;; esac
for port in "$@"; do
  for tool in iptables ip6tables; do
    rule="-p tcp --dport $port -m comment --comment tarpit -j REDIRECT --to-ports $to"
    if $tool -t nat -C PREROUTING $rule 2>/dev/null; then
      [ "$action" = remove ] && $tool -t nat -D PREROUTING $rule
    else
      [ "$action" = add ] && $tool -t nat -A PREROUTING $rule
    fi
  done
done
exit 0
