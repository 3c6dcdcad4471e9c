#!/bin/sh
# Run a command in a network namespace whose only interface is loopback.
# Root (CI, these machines): a plain new net namespace. Otherwise: a user namespace too.
set -eu
if unshare -n true 2>/dev/null; then
  exec unshare -n sh -c 'ip link set lo up && exec "$@"' isolated "$@"
elif unshare -rn true 2>/dev/null; then
  exec unshare -rn sh -c 'ip link set lo up && exec "$@"' isolated "$@"
fi
echo "tests/isolated.sh: cannot create a loopback-only network namespace (need unshare)." >&2
echo "The tests send media only to 127.0.0.1, and a browser outside such a namespace would not." >&2
exit 1
