#!/usr/bin/env bash
# make_certs.sh DIR CA_NAME: a throwaway CA (DIR/ca.pem, DIR/ca.key) and a server certificate it
# signed for localhost and 127.0.0.1 (DIR/server.pem, DIR/server.key), valid two days, for the
# end-to-end tests of TLS. openssl's output goes to DIR/openssl.log; exit status 1 when it fails.
set -uo pipefail
dir=$1
ca_name=$2
cat >"$dir/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
EOF
newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
{
  openssl req -x509 "${newkey[@]}" -days 2 -subj "/CN=$ca_name" -config "$dir/openssl.cnf" \
    -extensions ca_ext -keyout "$dir/ca.key" -out "$dir/ca.pem" &&
    openssl req -new "${newkey[@]}" -subj /CN=localhost -config "$dir/openssl.cnf" \
      -keyout "$dir/server.key" -out "$dir/server.csr" &&
    openssl x509 -req -days 2 -set_serial 2 -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -extfile "$dir/openssl.cnf" -extensions server_ext -out "$dir/server.pem"
} >"$dir/openssl.log" 2>&1
