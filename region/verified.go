package region

import (
	"slices"
	"sync"
	"time"

	"github.com/keyplane/keyplane/region/token"
)

// verified remembers tokens whose signature, format and issuer checked out, so a token
// validated again (the common case: a client presents the same token until it
// expires) skips the signature verification. It holds no revocation state: every
// validation still reads the session and identity at the home region, and expiry is
// checked again on every hit. Bounded: when full it is emptied. Safe for concurrent use.
type verified struct {
	mu  sync.Mutex
	m   map[string]token.Claims
	max int
}

func newVerified(max int) *verified { return &verified{m: make(map[string]token.Claims), max: max} }

func (v *verified) get(raw string) (token.Claims, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.m[raw]
	return c, ok
}

func (v *verified) put(raw string, c token.Claims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.m) >= v.max {
		clear(v.m)
	}
	v.m[raw] = c
}

// recheck applies what Verify checks that can change with time or the caller's
// options: expiry and audience.
func recheck(c token.Claims, audience string, now time.Time) token.Reason {
	if !now.Before(c.ExpiresAt.Add(token.DefaultLeeway)) {
		return token.ReasonExpired
	}
	if audience != "" && !slices.Contains(c.Audience, audience) {
		return token.ReasonWrongAudience
	}
	return ""
}
