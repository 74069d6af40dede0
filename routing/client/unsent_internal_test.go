package client

import (
	"context"
	"errors"
	"net"
	"testing"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// TestUnsentSurvivesConnect checks that the mark the HTTP client puts on a refused
// connection reaches the caller through connect's error wrapping, with and without
// the failover interceptor.
func TestUnsentSurvivesConnect(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Endpoints: []Endpoint{{Region: "eu-west", URL: url}}, ProbeInterval: -1, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tests := []struct {
		name string
		opts []connect.ClientOption
	}{
		{name: "HTTP client alone"},
		{name: "with the interceptor", opts: c.Options()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := keyplanev1connect.NewAuthServiceClient(c.HTTPClient(), BaseURL, tt.opts...)
			_, err := auth.ExchangeAPIKey(context.Background(), connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "t"}))
			if got := connect.CodeOf(err); got != connect.CodeUnavailable {
				t.Errorf("code %v, want %v (error %v)", got, connect.CodeUnavailable, err)
			}
			var ce *connect.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *connect.Error", err, err)
			}
			if !isUnsent(err) {
				t.Errorf("error %v lost the unsent mark", err)
			}
		})
	}
}
