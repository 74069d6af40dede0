package routing

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// Identity is what a node certificate names: the node's region and node id, as the
// URI SAN keyplane://<region>/<node-id>. A forwarder sends a request only to a peer
// whose certificate names exactly the region and node id that peer gossips.
type Identity struct {
	Region, NodeID string
}

func (id Identity) String() string { return id.Region + "/" + id.NodeID }

// URI is the identity as a certificate names it.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: identityScheme, Host: id.Region, Path: "/" + id.NodeID}
}

const identityScheme = "keyplane"

// valid reports whether the identity can be written into (and read back from) a URI:
// a region that is a host name label sequence, a node id without slashes.
func (id Identity) valid() bool {
	ok := func(s string) bool {
		if s == "" || len(s) > 128 {
			return false
		}
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				return false
			}
		}
		return true
	}
	return ok(id.Region) && ok(id.NodeID)
}

// identityOf returns the one keyplane:// identity a certificate names; a certificate
// naming none, or more than one, names no node.
func identityOf(c *x509.Certificate) (Identity, bool) {
	var out Identity
	n := 0
	for _, u := range c.URIs {
		if u.Scheme != identityScheme {
			continue
		}
		n++
		id := Identity{Region: u.Host, NodeID: strings.TrimPrefix(u.Path, "/")}
		if !id.valid() || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return Identity{}, false
		}
		out = id
	}
	return out, n == 1
}

// CertOptions are what NewCA and IssueNodeCert put into a certificate.
type CertOptions struct {
	// Validity is how long the certificate is valid from now (minus a minute of clock
	// skew at the start).
	Validity time.Duration
	// Hosts are the DNS names and IP addresses a node serves (node certificates only).
	Hosts []string
}

// NewCA creates a cluster CA: an ECDSA P-256 key and a self-signed certificate that
// may sign node certificates only (path length 0). It returns both PEM-encoded; the
// key is PKCS #8 and must stay secret (write it 0600).
func NewCA(name string, opts CertOptions) (certPEM, keyPEM []byte, err error) {
	if opts.Validity <= 0 {
		return nil, nil, errors.New("CA validity must be positive")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"keyplane"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	return signPEM(tmpl, tmpl, key, key, "create CA certificate")
}

// IssueNodeCert issues a node certificate from the CA (PEM certificate and key, as
// NewCA returns them): a new ECDSA P-256 key, the identity as a keyplane:// URI SAN,
// opts.Hosts as DNS and IP SANs, and both the server and the client authentication
// extended key usages (a node both serves and forwards).
func IssueNodeCert(caCertPEM, caKeyPEM []byte, id Identity, opts CertOptions) (certPEM, keyPEM []byte, err error) {
	if !id.valid() {
		return nil, nil, fmt.Errorf("region %q and node id %q: want letters, digits, '-', '_' or '.'", id.Region, id.NodeID)
	}
	if opts.Validity <= 0 {
		return nil, nil, errors.New("certificate validity must be positive")
	}
	ca, caKey, err := parseCA(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: id.String(), Organization: []string{"keyplane"}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(opts.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
		SubjectKeyId: keyID(&key.PublicKey),
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	for _, h := range opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return signPEM(tmpl, ca, key, caKey, "issue node certificate")
}

// signPEM signs tmpl (for key's public half) with signer as parent, and returns the
// certificate and key as PEM.
func signPEM(tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, signer any, what string) (certPEM, keyPEM []byte, err error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

func parseCA(certPEM, keyPEM []byte) (*x509.Certificate, any, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, nil, errors.New("CA certificate: no PEM CERTIFICATE block")
	}
	ca, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !ca.IsCA {
		return nil, nil, errors.New("CA certificate: not a CA")
	}
	k, _ := pem.Decode(keyPEM)
	if k == nil {
		return nil, nil, errors.New("CA key: no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(k.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("CA key: not a signing key")
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, errors.New("CA key: does not match the CA certificate")
	}
	return ca, signer, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return sum[:20]
}
