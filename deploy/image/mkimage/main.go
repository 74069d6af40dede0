// Command mkimage builds keyplane's OCI image into an OCI layout tarball (`make
// image`): it builds the static binary from this module, then the image (package
// deploy/image), without a container daemon or a registry.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/keyplane/keyplane/deploy/image"
)

func main() { os.Exit(mkimage()) }

func mkimage() int {
	out := flag.String("out", ".bin/keyplane-image.tar", "the OCI layout tarball to write")
	ref := flag.String("ref", "", "the image reference recorded in the layout (default keyplane:VERSION)")
	version := flag.String("version", "dev", "the version the binary reports and the image is labelled with")
	revision := flag.String("revision", "", "the commit, for the org.opencontainers.image.revision label")
	arch := flag.String("arch", "", "GOARCH of the image (default this machine's)")
	certs := flag.String("ca-certs", image.DefaultCACerts, "the CA certificate bundle (PEM) to put in the image")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `Usage: go run ./deploy/image/mkimage [flags]

Builds a static keyplane binary and an OCI image holding only it, CA certificates and
a nonroot user (%d:%d), and writes it as an OCI image layout tarball. Load it with
podman load -i FILE, skopeo copy oci-archive:FILE docker://REGISTRY/keyplane:TAG, or
ctr image import FILE.

`, image.UID, image.GID)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "mkimage: unexpected argument %q\n", flag.Arg(0))
		return 2
	}
	if *ref == "" {
		*ref = "keyplane:" + *version
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *out, *ref, image.Options{Version: *version, Revision: *revision, Arch: *arch, CACerts: *certs}); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, out, ref string, o image.Options) error {
	dir, err := os.MkdirTemp("", "keyplane-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	if o.Binary, err = image.BuildBinary(ctx, wd, dir, o.Arch, o.Version); err != nil {
		return err
	}
	img, err := image.Build(o)
	if err != nil {
		return err
	}
	if err := image.WriteLayoutTar(img, ref, out); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "wrote %s: %s (%s)\n", out, ref, d)
	return nil
}
