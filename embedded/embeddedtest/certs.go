package embeddedtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Certs is a throwaway PKI for TLS tests: a CA, a server certificate for
// 127.0.0.1, ::1 and localhost, and a client certificate, all written as PEM
// files in a temporary directory.
type Certs struct {
	Dir                       string
	CAFile                    string
	ServerCert, ServerKey     string
	ClientCert, ClientKey     string
	CA                        *x509.Certificate
	Pool                      *x509.CertPool // holds CA
	ServerPair, ClientPair    tls.Certificate
	OtherCAFile               string // a CA that signed nothing here
	OtherPool                 *x509.CertPool
	OtherClientCert, OtherKey string // a client certificate from the other CA
}

// NewCerts generates the PKI in t.TempDir().
func NewCerts(t testing.TB) *Certs {
	t.Helper()
	dir := t.TempDir()
	c := &Certs{Dir: dir}
	caKey, ca, caPEM := newCA(t, "hub test CA")
	c.CA = ca
	c.CAFile = write(t, dir, "ca.pem", caPEM)
	c.Pool = x509.NewCertPool()
	c.Pool.AddCert(ca)

	c.ServerCert, c.ServerKey, c.ServerPair = leaf(t, dir, "server", ca, caKey, x509.ExtKeyUsageServerAuth,
		[]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	c.ClientCert, c.ClientKey, c.ClientPair = leaf(t, dir, "client", ca, caKey, x509.ExtKeyUsageClientAuth, nil, nil)

	otherKey, other, otherPEM := newCA(t, "other CA")
	c.OtherCAFile = write(t, dir, "other-ca.pem", otherPEM)
	c.OtherPool = x509.NewCertPool()
	c.OtherPool.AddCert(other)
	c.OtherClientCert, c.OtherKey, _ = leaf(t, dir, "other-client", other, otherKey, x509.ExtKeyUsageClientAuth, nil, nil)
	return c
}

// ServerTLS is the server side: the server certificate, TLS 1.2 or later,
// and client certificates from the CA required when verifyClients is set.
func (c *Certs) ServerTLS(verifyClients bool) *tls.Config {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{c.ServerPair}}
	if verifyClients {
		tc.ClientCAs = c.Pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc
}

// serial is a random certificate serial number.
func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newCA(t testing.TB, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func leaf(t testing.TB, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage, dns []string, ips []net.IP) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	certFile = write(t, dir, name+".pem", certPEM)
	keyFile = write(t, dir, name+"-key.pem", keyPEM)
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pair
}

func write(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
