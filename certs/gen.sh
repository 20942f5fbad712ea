#!/usr/bin/env bash
# Generates the DEVELOPMENT/TEST certificates of Roost into this directory.
#
# NEVER use these certificates in production: their private keys are committed to a
# public repository, so anyone can impersonate the server or a client with them.
#
# Output (all keys are EC P-256, PKCS#8 PEM; all certificates are valid for 3650 days):
#   ca.pem, ca.key                           the dev CA (trusted by tests and examples)
#   server.pem, server.key                   server cert, CN localhost,
#                                            SAN DNS:localhost, IP:127.0.0.1, signed by ca
#   client.pem, client.key                   client cert, CN device-1 (clientAuth), signed by ca
#   other-ca.pem, other-ca.key               a second CA that Roost does NOT trust
#   untrusted-client.pem, untrusted-client.key
#                                            client cert, CN device-1 (clientAuth),
#                                            signed by other-ca (for negative tests)
#
# Usage: certs/gen.sh            (from anywhere; writes next to this script)
# Requires: openssl (1.1.1 or 3.x).
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DIR"

DAYS=3650
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# A fresh P-256 key in PKCS#8 PEM ("BEGIN PRIVATE KEY").
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# A random positive 128-bit serial number, in hex.
serial() {
    echo "0x$(openssl rand -hex 16 | sed 's/^./4/')"
}

# new_ca NAME CN: a self-signed CA certificate NAME.pem with key NAME.key.
new_ca() {
    local name="$1" cn="$2"
    new_key "$name.key"
    openssl req -new -sha256 -key "$name.key" -subj "/O=Roost development/CN=$cn" \
        -out "$WORK/$name.csr"
    cat >"$WORK/$name.ext" <<EOF
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    openssl x509 -req -sha256 -days "$DAYS" -in "$WORK/$name.csr" \
        -signkey "$name.key" -set_serial "$(serial)" \
        -extfile "$WORK/$name.ext" -out "$name.pem" 2>/dev/null
}

# new_leaf NAME CN CA EXTENSIONS: a certificate NAME.pem (key NAME.key) signed by CA.
new_leaf() {
    local name="$1" cn="$2" ca="$3" ext="$4"
    new_key "$name.key"
    openssl req -new -sha256 -key "$name.key" -subj "/O=Roost development/CN=$cn" \
        -out "$WORK/$name.csr"
    printf '%s\n' "$ext" >"$WORK/$name.ext"
    openssl x509 -req -sha256 -days "$DAYS" -in "$WORK/$name.csr" \
        -CA "$ca.pem" -CAkey "$ca.key" -set_serial "$(serial)" \
        -extfile "$WORK/$name.ext" -out "$name.pem" 2>/dev/null
}

LEAF_COMMON="basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid"

new_ca ca "Roost development CA"
new_ca other-ca "Untrusted development CA"

new_leaf server localhost ca "$LEAF_COMMON
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1"

new_leaf client device-1 ca "$LEAF_COMMON
extendedKeyUsage = clientAuth"

new_leaf untrusted-client device-1 other-ca "$LEAF_COMMON
extendedKeyUsage = clientAuth"

# Sanity checks: each leaf verifies against its own CA and not against the other one.
openssl verify -CAfile ca.pem -purpose sslserver server.pem >/dev/null
openssl verify -CAfile ca.pem -purpose sslclient client.pem >/dev/null
openssl verify -CAfile other-ca.pem -purpose sslclient untrusted-client.pem >/dev/null
if openssl verify -CAfile ca.pem untrusted-client.pem >/dev/null 2>&1; then
    echo "gen.sh: untrusted-client.pem unexpectedly verifies against ca.pem" >&2
    exit 1
fi

# Keys must be readable by the broker and the tests wherever the repository is checked out.
chmod 644 ./*.key

echo "Generated development certificates in $DIR (valid $DAYS days):"
for f in ca server client other-ca untrusted-client; do
    printf '  %-22s %s\n' "$f.pem" "$(openssl x509 -in "$f.pem" -noout -subject -enddate | tr '\n' ' ')"
done
