#!/bin/sh
# Redirect TCP ports to the tarpit with nftables (an `inet tarpit` table, IPv4 and IPv6).
#
#   deploy/nft-redirect.sh add    TARPIT_PORT PORT [PORT...]
#   deploy/nft-redirect.sh remove
#
# `add` replaces the table's rules with the given ports; `remove` deletes the table, which
# holds nothing else.
set -eu
usage() { echo "usage: $0 add TARPIT_PORT PORT [PORT...] | $0 remove" >&2; exit 2; }
[ $# -ge 1 ] || usage
case $1 in
  add)
    [ $# -ge 3 ] || usage
    to=$2; shift 2
    ports=$(echo "$@" | tr ' ' ',')
    nft -f - <<NFT
table inet tarpit
delete table inet tarpit
table inet tarpit {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    tcp dport { $ports } redirect to :$to
  }
}
NFT
    ;;
  remove)
    nft delete table inet tarpit 2>/dev/null || true
    ;;
  *) usage ;;
esac
