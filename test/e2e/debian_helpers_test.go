package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

// Helpers for the tests on the Debian rootfs (debian_test.go).

// debianNetBundle is a Debian bundle (an overlay on the cached rootfs)
// running args in the testbed's outer netns.
func debianNetBundle(t *testing.T, b *testbed, args ...string) *fixtures.DebianBundle {
	t.Helper()
	db := fixtures.NewDebianBundle(t, args...)
	spec, err := fixtures.ReadSpec(db.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range spec.Linux.Namespaces {
		if spec.Linux.Namespaces[i].Type == "network" {
			spec.Linux.Namespaces[i].Path = b.outer
		}
	}
	if err := fixtures.WriteSpec(db.Dir, spec); err != nil {
		t.Fatal(err)
	}
	return db
}

// serveTLS starts an HTTPS server in the upstream netns on port, with a
// fresh self-signed certificate for the upstream address, answering every
// request with body. It returns the certificate in PEM.
func (b *testbed) serveTLS(port int, body string) []byte {
	b.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "moat e2e upstream"},
		IPAddresses:           []net.IP{net.ParseIP(b.upstream)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true, // its own trust anchor for curl --cacert
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.t.Fatal(err)
	}
	l, err := listenIn("/run/netns/"+b.names[1], fmt.Sprintf("%s:%d", b.upstream, port))
	if err != nil {
		b.t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{
			Certificate: [][]byte{der}, PrivateKey: key,
		}}},
		// curl without the certificate aborts handshakes: not worth a line.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go srv.ServeTLS(l, "", "")
	b.t.Cleanup(func() { srv.Close() })
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// decision is the part of a decision log record the tests look at.
type decision struct {
	Action    string   `json:"action"`
	Engine    string   `json:"engine"`
	Binary    string   `json:"binary"`
	Ancestors []string `json:"ancestors"`
	Host      string   `json:"host"`
	Port      int      `json:"port"`
	Address   string   `json:"address"`
	Policy    string   `json:"policy"`
	Reason    string   `json:"reason"`
}

func (d decision) String() string {
	return fmt.Sprintf("%s/%s %s %s:%d addr=%s policy=%s ancestors=%v reason=%q",
		d.Engine, d.Action, d.Binary, d.Host, d.Port, d.Address, d.Policy, d.Ancestors, d.Reason)
}

// decisions reads every record of the container's decision log.
func decisions(t *testing.T, e *moatEnv, id string) []decision {
	t.Helper()
	out := e.mustMoat("denials", "--json", "--all", id)
	var recs []decision
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var d decision
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("decision record %q: %v", line, err)
		}
		recs = append(recs, d)
	}
	return recs
}

// findDecision returns the first record that match accepts.
func findDecision(recs []decision, match func(decision) bool) (decision, bool) {
	for _, d := range recs {
		if match(d) {
			return d, true
		}
	}
	return decision{}, false
}

// dumpDecisions formats records for a failure message.
func dumpDecisions(recs []decision) string {
	var sb strings.Builder
	for _, d := range recs {
		sb.WriteString("  " + d.String() + "\n")
	}
	return sb.String()
}
