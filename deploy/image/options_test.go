package image_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/deploy/image"
)

func TestImageRefusesBadInput(t *testing.T) {
	t.Parallel()
	if _, err := image.Build(image.Options{}); err == nil || !strings.Contains(err.Error(), "binary") {
		t.Errorf("no binary: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "keyplane")
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "certs")
	if err := os.WriteFile(notPEM, []byte("nothing"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := image.Build(image.Options{Binary: bin, CACerts: notPEM}); err == nil || !strings.Contains(err.Error(), "no PEM") {
		t.Errorf("a CA bundle without certificates: %v", err)
	}
	if _, err := image.Build(image.Options{Binary: bin, CACerts: filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "ca-certificates") {
		t.Errorf("a missing CA bundle: %v", err)
	}
}
