package routing

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// PeerTLS is a node's side of node-to-node mutual TLS: its certificate and key and
// the cluster CA, read from files. Every handshake checks the files' modification
// times and sizes and re-reads them when they changed, so rotating a certificate or
// the CA is writing new files: new connections use them, established ones finish on
// the old ones. A half-written rotation (a certificate whose key has not been written
// yet), or a certificate naming another node, is not taken: the previous files stay
// in use until the set is consistent.
// Safe for concurrent use.
type PeerTLS struct {
	certFile, keyFile, caFile string

	mu    sync.Mutex
	stamp [3]fileStamp
	cur   *peerMaterial
	err   error // why the files on disk were last refused (nil when in use)
}

// peerMaterial is one consistent set of files, parsed. Immutable.
type peerMaterial struct {
	cert tls.Certificate
	id   Identity
	pool *x509.CertPool
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// LoadPeerTLS reads a node certificate, its key and the cluster CA (PEM files). The
// certificate must chain to the CA and name a node (keyplane://<region>/<node-id>).
func LoadPeerTLS(certFile, keyFile, caFile string) (*PeerTLS, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("peer TLS: a certificate, its key and the cluster CA are all required")
	}
	p := &PeerTLS{certFile: certFile, keyFile: keyFile, caFile: caFile}
	if _, err := p.material(); err != nil {
		return nil, err
	}
	return p, nil
}

// Identity is the node the current certificate names.
func (p *PeerTLS) Identity() Identity {
	m, _ := p.material()
	return m.id
}

// NotAfter is when the current certificate expires.
func (p *PeerTLS) NotAfter() time.Time {
	m, _ := p.material()
	return m.cert.Leaf.NotAfter
}

// material returns the files' current contents, re-reading them when they changed.
func (p *PeerTLS) material() (*peerMaterial, error) {
	var now [3]fileStamp
	for i, f := range []string{p.certFile, p.keyFile, p.caFile} {
		fi, err := os.Stat(f)
		if err != nil {
			now = [3]fileStamp{} // unreadable: keep what is loaded, retry next time
			break
		}
		now[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil && (now == p.stamp || now == [3]fileStamp{}) {
		return p.cur, nil
	}
	m, err := readPeerMaterial(p.certFile, p.keyFile, p.caFile)
	if err == nil && p.cur != nil && m.id != p.cur.id {
		err = fmt.Errorf("peer TLS: the new certificate %s names %s, not this node (%s)", p.certFile, m.id, p.cur.id)
	}
	if err != nil {
		p.err = err
		if p.cur != nil {
			return p.cur, nil // a rotation in progress, or a bad file: keep the last good set
		}
		return nil, err
	}
	p.cur, p.stamp, p.err = m, now, nil
	return m, nil
}

func readPeerMaterial(certFile, keyFile, caFile string) (*peerMaterial, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("peer TLS: certificate and key: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("peer TLS: cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("peer TLS: cluster CA %s: no PEM certificate", caFile)
	}
	leaf := cert.Leaf
	id, ok := identityOf(leaf)
	if !ok {
		return nil, fmt.Errorf("peer TLS: certificate %s names no node (want one keyplane://<region>/<node-id> URI SAN)", certFile)
	}
	if _, err := verifyChain(leaf, cert.Certificate[1:], pool, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, fmt.Errorf("peer TLS: certificate %s: %w", certFile, err)
	}
	return &peerMaterial{cert: cert, id: id, pool: pool}, nil
}

// verifyChain verifies leaf (with intermediates) against the CA pool for every usage
// given, and returns the identity it names.
func verifyChain(leaf *x509.Certificate, intermediates [][]byte, roots *x509.CertPool, usages ...x509.ExtKeyUsage) (Identity, error) {
	inter := x509.NewCertPool()
	for _, der := range intermediates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return Identity{}, err
		}
		inter.AddCert(c)
	}
	for _, u := range usages {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			return Identity{}, fmt.Errorf("not a certificate of the cluster CA: %w", err)
		}
	}
	id, ok := identityOf(leaf)
	if !ok {
		return Identity{}, errors.New("the certificate names no node")
	}
	return id, nil
}

// ServerConfig is the peer listener's TLS configuration: TLS 1.3 only, this node's
// current certificate, and a client certificate of the current cluster CA required
// (one that names a node).
func (p *PeerTLS) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m, err := p.material()
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{m.cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    m.pool,
				NextProtos:   []string{"h2", "http/1.1"},
				// No resumption: a resumed session would skip verifying the client's chain
				// against the CA as it is now (after a rotation removed the old one).
				SessionTicketsDisabled: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return errors.New("no client certificate")
					}
					if _, ok := identityOf(cs.PeerCertificates[0]); !ok {
						return errors.New("the client certificate names no node")
					}
					return nil
				},
			}, nil
		},
	}
}

// clientConfig is the TLS configuration for forwarding to the node want: TLS 1.3,
// this node's current certificate, and the peer's chain verified against the current
// cluster CA and its certificate required to name exactly want. (Host names are not
// checked: the identity is what a node is, whatever address gossip gave for it.)
func (p *PeerTLS) clientConfig(want Identity) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		// Verification is VerifyConnection's: chain to the cluster CA and the identity.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection below
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			m, err := p.material()
			if err != nil {
				return nil, err
			}
			return &m.cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			m, err := p.material()
			if err != nil {
				return err
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("peer presented no certificate")
			}
			var inter [][]byte
			for _, c := range cs.PeerCertificates[1:] {
				inter = append(inter, c.Raw)
			}
			got, err := verifyChain(cs.PeerCertificates[0], inter, m.pool, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return fmt.Errorf("peer %s: %w", want, err)
			}
			if got != want {
				return fmt.Errorf("peer gossips as %s but its certificate names %s", want, got)
			}
			return nil
		},
	}
}

// PeerIdentity returns the node a request's client certificate names, when it came
// over a TLS connection whose client certificate was verified (the peer listener).
func PeerIdentity(cs *tls.ConnectionState) (Identity, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return Identity{}, false
	}
	return identityOf(cs.PeerCertificates[0])
}

// ServingTLS is a certificate and key for a client-facing listener, read from files
// and re-read when they change (no client certificates). Safe for concurrent use.
type ServingTLS struct {
	certFile, keyFile string

	mu    sync.Mutex
	stamp [2]fileStamp
	cur   *tls.Certificate
}

// LoadServingTLS reads a certificate and its key (PEM files).
func LoadServingTLS(certFile, keyFile string) (*ServingTLS, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("TLS: both a certificate and its key are required")
	}
	s := &ServingTLS{certFile: certFile, keyFile: keyFile}
	if _, err := s.certificate(nil); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *ServingTLS) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	var now [2]fileStamp
	for i, f := range []string{s.certFile, s.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			now[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && now == s.stamp {
		return s.cur, nil
	}
	c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		if s.cur != nil {
			return s.cur, nil
		}
		return nil, fmt.Errorf("TLS: %w", err)
	}
	s.cur, s.stamp = &c, now
	return s.cur, nil
}

// ServerConfig is the client-facing listener's TLS configuration (TLS 1.2 or later,
// HTTP/2 and HTTP/1.1).
func (s *ServingTLS) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.certificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}
