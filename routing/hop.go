package routing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"strconv"
	"strings"
	"time"
)

// A forwarded request carries a hop header naming the node that forwarded it. Its
// presence alone forbids a second forward (loops are impossible by construction).
// When the cluster shares a hop key, the header also carries the original caller's IP,
// signed, so the home node evaluates conditions on the real client address; an
// unsigned or badly signed header is still obeyed as "do not forward", but its IP is
// ignored.
//
//	Keyplane-Hop: us-east/us-east-1; ip=203.0.113.7; ts=1790000000; sig=<base64url HMAC-SHA256>
type hop struct {
	From string // region/node
	IP   string
	TS   int64
	Sig  string
}

// hopSkew is how far a signed hop's timestamp may be from this node's clock.
const hopSkew = time.Minute

func (h hop) payload(tenant string) []byte {
	return []byte("keyplane-hop-v1|" + h.From + "|" + tenant + "|" + h.IP + "|" + strconv.FormatInt(h.TS, 10))
}

func signHop(key []byte, from, tenant, ip string, now time.Time) string {
	if net.ParseIP(ip) == nil {
		ip = ""
	}
	out := from
	if ip != "" {
		out += "; ip=" + ip
	}
	if len(key) == 0 {
		// Unsigned: only a peer that authenticated this node's connection (mutual
		// TLS) takes it.
		return out
	}
	h := hop{From: from, IP: ip, TS: now.Unix()}
	mac := hmac.New(sha256.New, key)
	mac.Write(h.payload(tenant))
	return out + "; ts=" + strconv.FormatInt(h.TS, 10) + "; sig=" + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func parseHop(v string) hop {
	parts := strings.Split(v, ";")
	h := hop{From: strings.TrimSpace(parts[0])}
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch k {
		case "ip":
			h.IP = val
		case "ts":
			h.TS, _ = strconv.ParseInt(val, 10, 64)
		case "sig":
			h.Sig = val
		}
	}
	return h
}

// verifyHop parses a hop header and reports whether it is signed with key for tenant
// and fresh.
func verifyHop(key []byte, v, tenant string, now time.Time) (hop, bool) {
	h := parseHop(v)
	if len(key) == 0 || h.Sig == "" {
		return h, false
	}
	if d := now.Sub(time.Unix(h.TS, 0)); d > hopSkew || d < -hopSkew {
		return h, false
	}
	got, err := base64.RawURLEncoding.DecodeString(h.Sig)
	if err != nil {
		return h, false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(h.payload(tenant))
	return h, hmac.Equal(got, mac.Sum(nil))
}

// trustedIP returns the signed client IP of a hop header, or "" when the signature is
// missing, wrong or stale, or the hop carries no IP.
func trustedIP(key []byte, v, tenant string, now time.Time) string {
	h, ok := verifyHop(key, v, tenant, now)
	if !ok || net.ParseIP(h.IP) == nil {
		return ""
	}
	return h.IP
}

// hopFrom is the forwarding node a hop header names ("region/node") when it can be
// trusted: over an authenticated node-to-node connection (the router has checked it
// against the peer's certificate) or signed; "" otherwise.
func hopFrom(key []byte, v, tenant string, authenticated bool, now time.Time) string {
	if authenticated {
		return parseHop(v).From
	}
	if h, ok := verifyHop(key, v, tenant, now); ok {
		return h.From
	}
	return ""
}

// hopIP is the client IP a hop header carries, when it can be trusted: over an
// authenticated node-to-node connection, signed when the cluster has a hop key (else
// as sent: the connection vouches for the sender); over any other connection only
// when signed. "" when unknown.
func hopIP(key []byte, v, tenant string, authenticated bool, now time.Time) string {
	if !authenticated || len(key) > 0 {
		return trustedIP(key, v, tenant, now)
	}
	ip := parseHop(v).IP
	if net.ParseIP(ip) == nil {
		return ""
	}
	return ip
}

// HopKey derives the hop-signing key from a secret every node of the cluster shares
// (the operator secret), so no extra secret has to be distributed.
func HopKey(clusterSecret string) []byte {
	if clusterSecret == "" {
		return nil
	}
	mac := hmac.New(sha256.New, []byte(clusterSecret))
	mac.Write([]byte("keyplane routing hop key v1"))
	return mac.Sum(nil)
}
