package peers

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRelationship(t *testing.T) {
	t.Parallel()
	for _, tu := range (&Shape{Identities: 1, Groups: 1, Resources: 1, Members: [][]int{{0}}, Grants: [][]int{{0}}}).Tuples() {
		rel, err := relationship(tu)
		if err != nil {
			t.Fatal(err)
		}
		got := Tuple{Subject: rel.Subject.Object.ObjectType + ":" + rel.Subject.Object.ObjectId, Relation: rel.Relation,
			Object: rel.Resource.ObjectType + ":" + rel.Resource.ObjectId}
		if rel.Subject.OptionalRelation != "" {
			got.Subject += "#" + rel.Subject.OptionalRelation
		}
		if got != tu {
			t.Errorf("relationship(%v) reads back as %v", tu, got)
		}
	}
	if _, err := relationship(Tuple{Subject: "user", Relation: "member", Object: "group:1"}); err == nil {
		t.Error("a subject without a type:id was accepted")
	}
}

func TestSamplePairs(t *testing.T) {
	t.Parallel()
	s := &Shape{Identities: 50, Groups: 10, Resources: 50, Members: make([][]int, 50), Grants: make([][]int, 50)}
	for i := range 50 {
		s.Members[i] = []int{i % 10}
		s.Grants[i] = []int{(i * 3) % 10}
	}
	pairs := samplePairs(s, 200)
	if len(pairs) != 200 {
		t.Fatalf("%d pairs, want 200", len(pairs))
	}
	for k, p := range pairs[100:] {
		if !s.Allowed(p[0], p[1]) {
			t.Errorf("pair %d of the second half %v is not allowed", 100+k, p)
		}
	}
	denied := 0
	for _, p := range pairs[:100] {
		if !s.Allowed(p[0], p[1]) {
			denied++
		}
	}
	if denied == 0 {
		t.Error("the uniform half has no denied pair")
	}
	if again := samplePairs(s, 200); again[7] != pairs[7] || again[150] != pairs[150] {
		t.Error("the sample is not the same from run to run")
	}
}

func TestBinaryCachedAndFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "openfga-"+OpenFGAVersion)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".json", []byte(`{"seconds": 321}`), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := binary(context.Background(), dir, OpenFGA, io.Discard)
	if err != nil || !b.Cached || b.Path != path || b.Seconds != 321 || b.Version != OpenFGAVersion {
		t.Fatalf("cached binary: %+v, %v", b, err)
	}
	// A bin-dir that cannot be created stops the build with the step and the version.
	_, err = binary(context.Background(), "/dev/null/peers", SpiceDB, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "build spicedb "+SpiceDBVersion+": bin-dir") {
		t.Fatalf("uncreatable bin-dir: %v", err)
	}
	if _, err := binary(context.Background(), dir, Keyplane, io.Discard); err == nil {
		t.Fatal("built a binary for keyplane, which is not a peer")
	}
}
