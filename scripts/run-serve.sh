#!/bin/bash
# run-serve.sh - `make run`: serve the current folder over HTTPS on https://localhost:8443 with
# a throwaway self-signed certificate kept in a cache folder.
set -eu
here=$(pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tlsk
port=${TLSK_PORT:-8443}
mkdir -p "$cache"
if [ ! -s "$cache/localhost-cert.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
		-keyout "$cache/localhost-key.pem" -out "$cache/localhost-cert.pem" 2>/dev/null
fi
first=$(cd "${TLSK_ROOT_DIR:-$here}" && find . -maxdepth 1 -type f ! -name '.*' | head -n 1 | sed 's|^\./||')
echo "the folder's listing is at https://localhost:$port/ ; fetch a file with:"
echo "  curl --cacert $cache/localhost-cert.pem https://localhost:$port/${first:-}"
exec "$top/build/tools/tlsk-serve" --cert "$cache/localhost-cert.pem" \
	--key "$cache/localhost-key.pem" --root "${TLSK_ROOT_DIR:-$here}" --listen "127.0.0.1:$port" --list
