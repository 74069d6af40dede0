package region

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The read timeout bounds the request's arrival only: a call that goes on after
// reading its body for longer than the read timeout still answers, on HTTP/1.1 (where
// the server reads ahead on the connection meanwhile: a deadline left on that read
// would cancel the call) and on h2c.
func TestReadTimeoutSparesLongCalls(t *testing.T) {
	t.Parallel()
	const readTimeout = 100 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(4 * readTimeout): // work after the body: longer than the read timeout
		case <-r.Context().Done():
			http.Error(w, "cancelled: "+r.Context().Err().Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(b)
	})
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewUnstartedServer(h)
			srv.Config = newServer(Limits{ReadTimeout: readTimeout}.withDefaults(), h, slog.New(slog.DiscardHandler))
			srv.Start()
			defer srv.Close()
			c := srv.Client()
			if proto == "h2c" {
				p := new(http.Protocols)
				p.SetUnencryptedHTTP2(true)
				c = &http.Client{Transport: &http.Transport{Protocols: p}}
			}
			for range 2 { // the second call reuses the connection
				resp, err := c.Post(srv.URL, "text/plain", strings.NewReader("hello"))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(b) != "hello" {
					t.Fatalf("%s: %d %q, want 200 %q", resp.Proto, resp.StatusCode, b, "hello")
				}
			}
		})
	}
}

func TestLimitsDefaultsAndValidate(t *testing.T) {
	t.Parallel()
	if got := (Limits{}).withDefaults(); got != DefaultLimits() {
		t.Errorf("zero Limits with defaults = %+v, want %+v", got, DefaultLimits())
	}
	if got := (Limits{MaxConns: 3}).withDefaults().MaxConns; got != 3 {
		t.Errorf("MaxConns 3 with defaults = %d, want 3", got)
	}
	err := Limits{ReadTimeout: -1, MaxConns: -2}.Validate()
	if err == nil || !strings.Contains(err.Error(), "read timeout") || !strings.Contains(err.Error(), "max conns") {
		t.Errorf("Validate of negative limits = %v, want errors naming read timeout and max conns", err)
	}
	if err := DefaultLimits().Validate(); err != nil {
		t.Errorf("Validate(DefaultLimits()) = %v", err)
	}
}
