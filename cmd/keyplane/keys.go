package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/region/token"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

func runKeys(ctx context.Context, args []string, stdout io.Writer) error {
	known := map[string]bool{"rotate": true, "new-kek": true, "reseal": true, "new-gossip-key": true, "new-ca": true, "node-cert": true}
	if len(args) == 0 || !known[args[0]] {
		fmt.Fprintln(stdout, "Usage: keyplane keys rotate [flags]     publish a new signing key for a region")
		fmt.Fprintln(stdout, "       keyplane keys new-kek            print a new key-encryption key")
		fmt.Fprintln(stdout, "       keyplane keys reseal [flags]     reseal every secret under the KEK's first key (KEK rotation)")
		fmt.Fprintln(stdout, "       keyplane keys new-gossip-key     print a new gossip key")
		fmt.Fprintln(stdout, "       keyplane keys new-ca [flags]     write a new cluster CA (node-to-node mutual TLS)")
		fmt.Fprintln(stdout, "       keyplane keys node-cert [flags]  issue a node certificate from the cluster CA")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return usageErr("want a subcommand: rotate, new-kek, reseal, new-gossip-key, new-ca or node-cert")
	}
	switch args[0] {
	case "reseal":
		return runReseal(ctx, args[1:], stdout)
	case "new-ca":
		return runNewCA(args[1:], stdout)
	case "node-cert":
		return runNodeCert(args[1:], stdout)
	}
	if args[0] == "new-gossip-key" {
		c := newCommand(stdout, "keys new-gossip-key", "Print a new random gossip key (base64 of 32 bytes). Every node of a cluster needs it: KEYPLANE_GOSSIP_KEYS or --gossip-key-file. docs/security.md says how to rotate it.", "")
		if err := c.parse(args[1:]); err != nil {
			return parseErr(err)
		}
		fmt.Fprintln(stdout, routing.NewGossipKey())
		return nil
	}
	if args[0] == "new-kek" {
		c := newCommand(stdout, "keys new-kek", "Print a new random key-encryption key (base64 of 32 bytes). Store it in a secret manager; every node needs the same one. docs/security.md says how to rotate it.", "")
		if err := c.parse(args[1:]); err != nil {
			return parseErr(err)
		}
		k, err := kek.Generate()
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, k)
		return nil
	}
	c := newCommand(stdout, "keys rotate", "Publish a new token-signing key for a region. It is in JWKS at once and starts signing after --publish-delay; the region's current key then retires and stays published until every token it signed has expired.", `
Example:
  KEYPLANE_KEK=... keyplane keys rotate --db-file db-url --region us-east --publish-delay 10m`)
	fs := c.flags
	dbf := addDBFlags(c)
	regionName := fs.String("region", "", "region whose signing key to rotate (required)")
	kekFile := fs.String("kek-file", "", "file holding the key-encryption key (or KEYPLANE_KEK)")
	delay := fs.Duration("publish-delay", 10*time.Minute, "how long the new key is published before it signs (longer than any JWKS cache)")
	algName := fs.String("alg", "EdDSA", "which of the region's keys to rotate: EdDSA, or RS256 (used by tenants whose signing algorithm is RS256)")
	if err := c.parse(args[1:]); err != nil {
		return parseErr(err)
	}
	alg, err := token.ParseAlgorithm(*algName)
	if err != nil {
		return usageErr("--alg: %v", err)
	}
	if *regionName == "" {
		return usageErr("--region is required")
	}
	db, err := dbf.resolve(c)
	if err != nil {
		return err
	}
	if *delay < 0 {
		return usageErr("--publish-delay must not be negative")
	}
	k, err := loadKEK(*kekFile)
	if err != nil {
		return err
	}
	if k == nil {
		return usageErr("a key-encryption key is required: --kek-file or KEYPLANE_KEK")
	}
	store, closeDB, err := openStore(ctx, db, 2, schema.Config{Region: *regionName, Node: "keys-rotate"})
	if err != nil {
		return err
	}
	defer closeDB()
	if err := store.CheckRegion(ctx, *regionName); err != nil {
		if errors.Is(err, schema.ErrNotFound) {
			return usageErr("%v", err)
		}
		return err
	}
	kid, err := region.AddSigningKeyAlg(ctx, store, k, *regionName, alg, *delay, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "published %s signing key %s for region %s; it signs from %s\n", alg, kid, *regionName, time.Now().Add(*delay).UTC().Format(time.RFC3339))
	return nil
}

func runNewCA(args []string, stdout io.Writer) error {
	c := newCommand(stdout, "keys new-ca", "Write a new cluster CA for node-to-node mutual TLS: an ECDSA P-256 key (--key, mode 0600) and its self-signed certificate (--cert). Nodes trust it with serve --peer-ca; keys node-cert issues their certificates from it. Keep the key off the nodes.", `
Example:
  keyplane keys new-ca --cert ca.crt --key ca.key
  keyplane keys node-cert --ca-cert ca.crt --ca-key ca.key --region us-east --node-id us-east-1 \
      --host 10.0.0.5,node1.internal --cert us-east-1.crt --key us-east-1.key`)
	fs := c.flags
	certFile := fs.String("cert", "ca.crt", "file to write the CA certificate to (PEM; must not exist)")
	keyFile := fs.String("key", "ca.key", "file to write the CA private key to (PEM, mode 0600; must not exist)")
	name := fs.String("name", "keyplane cluster CA", "the CA certificate's common name")
	validity := fs.Duration("validity", 5*365*24*time.Hour, "how long the CA is valid; node certificates never outlive it")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if *validity <= 0 {
		return usageErr("--validity must be positive")
	}
	cert, key, err := routing.NewCA(*name, routing.CertOptions{Validity: *validity})
	if err != nil {
		return err
	}
	if err := writeNew(*keyFile, key, 0o600); err != nil {
		return err
	}
	if err := writeNew(*certFile, cert, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote cluster CA certificate %s and key %s (valid until %s)\n", *certFile, *keyFile,
		time.Now().Add(*validity).UTC().Format(time.RFC3339))
	return nil
}

func runNodeCert(args []string, stdout io.Writer) error {
	c := newCommand(stdout, "keys node-cert", "Issue a node certificate from the cluster CA: a new ECDSA P-256 key (--key, mode 0600) and a certificate (--cert) naming the node as keyplane://<region>/<node-id> and the hosts it serves, for both server and client authentication. A node forwards only to peers whose certificate names the region and node id they gossip. Give them to serve as --peer-cert and --peer-key.", `
Rotate before --validity runs out: issue a new certificate, then replace the node's
files (key first, then certificate); the node takes them at its next handshake.

Example:
  keyplane keys node-cert --ca-cert ca.crt --ca-key ca.key --region us-east --node-id us-east-1 \
      --host 10.0.0.5 --cert us-east-1.crt --key us-east-1.key`)
	fs := c.flags
	caCert := fs.String("ca-cert", "ca.crt", "the cluster CA certificate (PEM)")
	caKey := fs.String("ca-key", "ca.key", "the cluster CA private key (PEM)")
	regionName := fs.String("region", "", "the node's region (required)")
	nodeID := fs.String("node-id", "", "the node's id, as serve --node-id (required)")
	hosts := fs.String("host", "", "comma-separated DNS names and IP addresses the node serves at")
	certFile := fs.String("cert", "", "file to write the certificate to (PEM; default <node-id>.crt; must not exist)")
	keyFile := fs.String("key", "", "file to write the private key to (PEM, mode 0600; default <node-id>.key; must not exist)")
	validity := fs.Duration("validity", 30*24*time.Hour, "how long the certificate is valid (at most the CA's remaining validity)")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if *regionName == "" || *nodeID == "" {
		return usageErr("--region and --node-id are required")
	}
	if *validity <= 0 {
		return usageErr("--validity must be positive")
	}
	if *certFile == "" {
		*certFile = *nodeID + ".crt"
	}
	if *keyFile == "" {
		*keyFile = *nodeID + ".key"
	}
	caCertPEM, err := os.ReadFile(*caCert)
	if err != nil {
		return fmt.Errorf("--ca-cert: %w", err)
	}
	caKeyPEM, err := os.ReadFile(*caKey)
	if err != nil {
		return fmt.Errorf("--ca-key: %w", err)
	}
	id := routing.Identity{Region: *regionName, NodeID: *nodeID}
	cert, key, err := routing.IssueNodeCert(caCertPEM, caKeyPEM, id, routing.CertOptions{Validity: *validity, Hosts: splitList(*hosts)})
	if err != nil {
		return usageErr("%v", err)
	}
	if err := writeNew(*keyFile, key, 0o600); err != nil {
		return err
	}
	if err := writeNew(*certFile, cert, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote certificate %s and key %s for %s\n", *certFile, *keyFile, id.URI())
	return nil
}

// writeNew writes b to a file that must not exist yet, with mode perm.
func writeNew(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
