package token_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/region/token"
)

func TestError(t *testing.T) {
	t.Parallel()
	err := &token.Error{Reason: token.ReasonExpired, Msg: "expired at 2026-03-14T12:15:00Z"}
	if got, want := err.Error(), "token expired: expired at 2026-03-14T12:15:00Z"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestReasonOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want token.Reason
	}{
		{"nil", nil, ""},
		{"other error", io.EOF, ""},
		{"sentinel", token.ErrNoSigningKey, ""},
		{"token error", &token.Error{Reason: token.ReasonBadSignature}, token.ReasonBadSignature},
		{"wrapped", fmt.Errorf("authenticate: %w", &token.Error{Reason: token.ReasonWrongAudience}), token.ReasonWrongAudience},
		{"joined", errors.Join(io.EOF, &token.Error{Reason: token.ReasonMalformed}), token.ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := token.ReasonOf(tt.err); got != tt.want {
				t.Errorf("ReasonOf(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrorMessagesQuoteUntrustedInput(t *testing.T) {
	t.Parallel()
	f := newFixture()
	kid := "evil\nkid\x1b[31m" + string(make([]byte, 200))
	_, err := f.ring.Verify(signEd(t, f.signA, kid, "at+jwt", mustJSON(t, claimsMap())), opts())
	if token.ReasonOf(err) != token.ReasonUnknownKey {
		t.Fatalf("Verify error = %v, want unknown_key", err)
	}
	msg := err.Error()
	for _, c := range []string{"\n", "\x1b", "\x00"} {
		if strings.Contains(msg, c) {
			t.Errorf("error %q contains raw control character %q", msg, c)
		}
	}
	if len(msg) > 200 {
		t.Errorf("error is %d bytes long, want untrusted input cut short", len(msg))
	}
}
