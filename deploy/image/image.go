// Package image builds keyplane's OCI image without a container daemon or a registry:
// one layer holding the static binary, CA certificates and a non-root user, on an
// empty base (no shell, no package manager), written as an OCI image layout tarball
// (`make image`). Runtimes load it with `podman load`, `skopeo copy
// oci-archive:…`, `crane push`, or `ctr image import`.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's user: the conventional "nonroot" of distroless images.
const (
	UID = 65532
	GID = 65532
)

// BinaryPath is where the image holds keyplane; it is the entrypoint.
const BinaryPath = "/keyplane"

// DefaultCACerts is Debian's CA bundle (package ca-certificates), which Go's
// crypto/x509 also looks for at this path on Linux.
const DefaultCACerts = "/etc/ssl/certs/ca-certificates.crt"

// Options describe an image.
type Options struct {
	Binary   string // a static linux keyplane binary (BuildBinary makes one)
	CACerts  string // PEM bundle; DefaultCACerts when empty
	Version  string // org.opencontainers.image.version
	Revision string // org.opencontainers.image.revision (a commit)
	Arch     string // GOARCH of the binary; runtime.GOARCH when empty
	// Created is the image's creation time and every file's mtime: fixed (the zero
	// value means the Unix epoch), so the same inputs give the same digest.
	Created time.Time
}

// BuildBinary builds a static keyplane binary (CGO off, trimmed paths, no symbol
// table) for linux/arch from the module at moduleDir into dir and returns its path.
func BuildBinary(ctx context.Context, moduleDir, dir, arch, version string) (string, error) {
	if arch == "" {
		arch = runtime.GOARCH
	}
	out := filepath.Join(dir, "keyplane")
	ldflags := "-s -w"
	if version != "" {
		ldflags += " -X main.Version=" + version
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "./cmd/keyplane")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/keyplane: %w\n%s", err, b)
	}
	return out, nil
}

// Build assembles the image.
func Build(o Options) (v1.Image, error) {
	if o.Binary == "" {
		return nil, errors.New("image: the binary is required")
	}
	if o.CACerts == "" {
		o.CACerts = DefaultCACerts
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	if o.Created.IsZero() {
		o.Created = time.Unix(0, 0)
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("image: read the binary: %w", err)
	}
	certs, err := os.ReadFile(o.CACerts)
	if err != nil {
		return nil, fmt.Errorf("image: read the CA certificates (on Debian: apt-get install ca-certificates): %w", err)
	}
	if !bytes.Contains(certs, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("image: %s holds no PEM certificate", o.CACerts)
	}
	layerTar, err := rootFS(o.Created, bin, certs)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: o.Created}, CreatedBy: "keyplane deploy/image", Comment: "static keyplane binary, CA certificates, nonroot user"}})
	if err != nil {
		return nil, fmt.Errorf("image: append the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = o.Arch, "linux"
	cf.Created = v1.Time{Time: o.Created}
	labels := map[string]string{
		"org.opencontainers.image.title":       "keyplane",
		"org.opencontainers.image.description": "multi-region, geo-partitioned IAM data plane",
		"org.opencontainers.image.source":      "https://github.com/keyplane/keyplane",
	}
	if o.Version != "" {
		labels["org.opencontainers.image.version"] = o.Version
	}
	if o.Revision != "" {
		labels["org.opencontainers.image.revision"] = o.Revision
	}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", UID, GID),
		Entrypoint: []string{BinaryPath},
		Cmd:        []string{"serve"},
		WorkingDir: "/",
		Env:        []string{"SSL_CERT_FILE=" + DefaultCACerts},
		Labels:     labels,
		// The ports the Kubernetes manifests give the listeners (serve has no default
		// for most of them): documentation for runtimes, nothing is opened by it.
		ExposedPorts: map[string]struct{}{
			"8080/tcp": {}, // API (serve --listen)
			"9090/tcp": {}, // operator: /metrics, /readyz (serve --operator-listen)
			"7946/tcp": {}, // gossip (serve --gossip-listen)
			"7946/udp": {},
			"8443/tcp": {}, // node-to-node mTLS (serve --peer-listen)
		},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	return img, nil
}

// rootFS is the layer's tar: the binary, the CA bundle, /etc/passwd and /etc/group
// naming the nonroot user, and an empty /tmp (sticky, world-writable; mount an
// emptyDir there when the root filesystem is read-only). Everything is owned by root
// and not writable by the user.
func rootFS(mtime time.Time, bin, certs []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(b)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", GID)
	steps := []func() error{
		func() error { return dir("etc", 0o755) },
		func() error { return dir("etc/ssl", 0o755) },
		func() error { return dir("etc/ssl/certs", 0o755) },
		func() error { return file(strings.TrimPrefix(DefaultCACerts, "/"), 0o644, certs) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		func() error { return dir("tmp", 0o1777) },
		func() error { return file(strings.TrimPrefix(BinaryPath, "/"), 0o755, bin) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, fmt.Errorf("image: root filesystem: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteLayoutTar writes img as an OCI image layout (index.json, oci-layout, blobs/),
// tagged ref (org.opencontainers.image.ref.name), into the tarball out.
func WriteLayoutTar(img v1.Image, ref, out string) error {
	dir, err := os.MkdirTemp("", "keyplane-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("image: layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		return fmt.Errorf("image: layout: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname = filepath.ToSlash(rel), time.Unix(0, 0), 0, 0, "", ""
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("image: write %s: %w", out, err)
	}
	return nil
}
