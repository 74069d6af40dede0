package routing_test

import (
	"bytes"
	"testing"

	"github.com/keyplane/keyplane/routing"
)

func TestHopKey(t *testing.T) {
	t.Parallel()
	if got := routing.HopKey(""); got != nil {
		t.Errorf("HopKey(\"\") = %x, want nil", got)
	}
	a, again, b := routing.HopKey("secret a"), routing.HopKey("secret a"), routing.HopKey("secret b")
	if len(a) != 32 {
		t.Errorf("len(HopKey) = %d, want 32", len(a))
	}
	if !bytes.Equal(a, again) {
		t.Errorf("HopKey is not deterministic: %x then %x", a, again)
	}
	if bytes.Equal(a, b) {
		t.Errorf("HopKey(%q) = HopKey(%q) = %x, want different keys", "secret a", "secret b", a)
	}
	if bytes.Equal(a, []byte("secret a")) {
		t.Errorf("HopKey returned the secret itself")
	}
}
