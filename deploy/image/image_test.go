//go:build image

package image_test

import (
	"archive/tar"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/keyplane/keyplane/deploy/image"
)

// TestImage (run by `make image`: building the static binary takes a minute on a
// cold cache, so it is not part of make test) builds the image as `make image` does, reads the OCI layout tarball back
// with go-containerregistry, checks the config (nonroot, entrypoint) and the root
// filesystem (exactly the binary, CA certificates, passwd/group and /tmp: no shell),
// runs `keyplane version` from the unpacked filesystem, and builds again to the same
// digest.
func TestImage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	work := t.TempDir()
	bin, err := image.BuildBinary(ctx, "../..", work, "", "v9.9.9-test")
	if err != nil {
		t.Fatal(err)
	}
	o := image.Options{Binary: bin, Version: "v9.9.9-test", Revision: "abc123"}
	img, err := image.Build(o)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(work, "keyplane.tar")
	if err := image.WriteLayoutTar(img, "keyplane:v9.9.9-test", tarPath); err != nil {
		t.Fatal(err)
	}

	layoutDir := filepath.Join(work, "layout")
	untar(t, tarPath, layoutDir)
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatalf("not an OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "keyplane:v9.9.9-test" {
		t.Fatalf("index: %+v, %v; want one manifest named keyplane:v9.9.9-test", im, err)
	}
	got, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || !slices.Equal(cf.Config.Entrypoint, []string{"/keyplane"}) || cf.OS != "linux" ||
		cf.Config.Labels["org.opencontainers.image.revision"] != "abc123" {
		t.Errorf("config = %+v, want user 65532:65532, entrypoint /keyplane, linux, the revision label", cf.Config)
	}

	root := filepath.Join(work, "rootfs")
	var files []string
	rc := mutate.Extract(got)
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		files = append(files, name)
		if h.Uid != 0 || h.Mode&0o002 != 0 && name != "tmp" {
			t.Errorf("%s: uid %d mode %o; want root-owned, not world-writable", h.Name, h.Uid, h.Mode)
		}
		p := filepath.Join(root, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, os.FileMode(h.Mode)); err != nil {
				t.Fatal(err)
			}
		default:
			t.Errorf("%s: unexpected entry type %c", h.Name, h.Typeflag)
		}
	}
	_ = rc.Close()
	slices.Sort(files)
	want := []string{"etc", "etc/group", "etc/passwd", "etc/ssl", "etc/ssl/certs", "etc/ssl/certs/ca-certificates.crt", "keyplane", "tmp"}
	if !slices.Equal(files, want) {
		t.Errorf("root filesystem = %v, want exactly %v (no shell)", files, want)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(passwd), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd lacks the nonroot user:\n%s", passwd)
	}
	f, err := elf.Open(filepath.Join(root, "keyplane"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary needs a dynamic loader: it is not static")
		}
	}
	_ = f.Close()
	out, err := exec.CommandContext(ctx, filepath.Join(root, "keyplane"), "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "keyplane v9.9.9-test" {
		t.Errorf("keyplane version from the image: %q, %v", out, err)
	}

	again, err := image.Build(o)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("the same inputs gave digests %s and %s: the build is not reproducible", d1, d2)
	}
}

func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("tar entry %q escapes the directory", h.Name)
		}
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
