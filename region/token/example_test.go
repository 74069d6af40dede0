package token_test

import (
	"fmt"
	"time"

	"github.com/keyplane/keyplane/region/token"
)

func ExampleRing_Mint() {
	now := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	signer, pub, err := token.GenerateKey("eu-west", now)
	if err != nil {
		panic(err)
	}
	ring := token.NewRing([]token.PublicKey{pub}, &signer)

	raw, err := ring.Mint(token.Claims{
		Issuer:    "https://eu-west.keyplane.example",
		Subject:   "identity-123",
		Audience:  []string{"https://api.example"},
		IssuedAt:  now,
		ExpiresAt: now.Add(15 * time.Minute),
		ID:        "jti-1",
		Tenant:    "acme",
		SessionID: "sess-1",
		AMR:       []string{"pwd", "otp"},
		Region:    "eu-west",
	})
	if err != nil {
		panic(err)
	}

	opts := token.VerifyOptions{
		Issuer:   "https://eu-west.keyplane.example",
		Audience: "https://api.example",
		Now:      now.Add(time.Minute),
	}
	claims, err := ring.Verify(raw, opts)
	if err != nil {
		panic(err)
	}
	fmt.Println(claims.Subject, claims.Tenant, claims.AMR, claims.ExpiresAt.Format(time.RFC3339))

	opts.Now = now.Add(time.Hour)
	_, err = ring.Verify(raw, opts)
	fmt.Println(token.ReasonOf(err))
	// Output:
	// identity-123 acme [pwd otp] 2026-03-14T12:15:00Z
	// expired
}
