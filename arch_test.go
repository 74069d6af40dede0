package keyplane_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The package table of docs/architecture.md is the map of the module: one row per
// package, with what it owns and which keyplane packages its code may import. This
// file checks the table against the code as `go list` sees it, so the map cannot
// drift (docs/decisions/0006-package-map.md); depguard in .golangci.yml enforces the
// same edges while editing.
//
// Notation, in the "package" and "may import" columns alike: paths are relative to
// the module; `a/b` means exactly that package; `a/b/...` means a/b and every package
// below it; "—" (may import only) means no keyplane package. Nothing is implied, not
// even a package's own subpackages. Only package code (go list's Imports) is checked:
// _test.go files may import more. Directories holding only tests (the repository root,
// which holds this file) are no package of the map and need no row.

const (
	modulePath = "github.com/keyplane/keyplane"
	tableDoc   = "docs/architecture.md"
	tableHead  = "| package | owns | may import |"
	noImports  = "—"
)

// A tableRow is one row of the package table.
type tableRow struct {
	name  string   // a package path or a pattern ending in /..., relative to the module
	line  int      // line number in tableDoc
	allow []string // paths and patterns the package may import, relative to the module
}

// listedPackage holds the fields of `go list -json` the test reads.
type listedPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
}

func TestPackageTable(t *testing.T) {
	t.Parallel()

	f, err := os.Open(tableDoc)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := parseTable(f)
	_ = f.Close()
	if err != nil {
		t.Fatalf("%s: %v", tableDoc, err)
	}
	pkgs := goList(t)

	t.Run("rows", func(t *testing.T) {
		t.Parallel()
		for _, p := range pkgs {
			if rowFor(rows, p.rel()) == nil {
				t.Errorf("%s: package %s has no row in the package table: add the row \"| `%s` | what it owns | what it may import |\" (and say why the package exists in docs/decisions/0006-package-map.md)",
					tableDoc, p.rel(), p.rel())
			}
		}
		for _, r := range rows {
			if !matchesAny(pkgs, r.name) {
				t.Errorf("%s:%d: row %s names no package of `go list ./...`: fix the name or delete the row", tableDoc, r.line, r.name)
			}
			for _, a := range r.allow {
				if !matchesAny(pkgs, a) {
					t.Errorf("%s:%d: row %s may import %s, which names no package of `go list ./...`: fix or remove that entry", tableDoc, r.line, r.name, a)
				}
			}
		}
	})

	t.Run("imports", func(t *testing.T) {
		t.Parallel()
		for _, p := range pkgs {
			r := rowFor(rows, p.rel())
			if r == nil {
				continue // reported by rows
			}
			for _, imp := range p.Imports {
				rel, ok := relative(imp)
				if !ok || r.allows(rel) {
					continue
				}
				t.Errorf("package %s imports %s (%s), which its row %s (%s:%d) does not allow: remove the import, or add `%s` to that row's may import column, to depguard in .golangci.yml and, with the reason, to docs/decisions/0006-package-map.md",
					p.rel(), rel, strings.Join(importSites(t, p, imp), ", "), r.name, tableDoc, r.line, rel)
			}
		}
	})
}

func TestTableNotation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		pattern string
		path    string
		want    bool
	}{
		{"exact", "region/kek", "region/kek", true},
		{"exact excludes subpackage", "deploy", "deploy/seed", false},
		{"exact excludes parent", "deploy/seed", "deploy", false},
		{"dots include the package", "region/gen/...", "region/gen", true},
		{"dots include subpackages", "region/gen/...", "region/gen/keyplane/v1/keyplanev1connect", true},
		{"dots respect path elements", "region/gen/...", "region/generator", false},
		{"dots exclude siblings", "chaos/...", "bench/plot", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := matches(tt.pattern, tt.path); got != tt.want {
				t.Errorf("matches(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
			}
		})
	}
}

func TestParseTable(t *testing.T) {
	t.Parallel()
	const good = "# doc\n\n" + tableHead + "\n|---|---|---|\n" +
		"| `region` | the node | `schema`, `region/gen/...` |\n" +
		"| `schema` | SQL | — |\n\nprose\n"
	rows, err := parseTable(strings.NewReader(good))
	if err != nil {
		t.Fatalf("parseTable(good) = %v", err)
	}
	want := []tableRow{
		{name: "region", line: 5, allow: []string{"schema", "region/gen/..."}},
		{name: "schema", line: 6},
	}
	if !slices.EqualFunc(rows, want, func(a, b tableRow) bool {
		return a.name == b.name && a.line == b.line && slices.Equal(a.allow, b.allow)
	}) {
		t.Errorf("parseTable(good) = %+v, want %+v", rows, want)
	}

	bad := []struct {
		name, doc, want string
	}{
		{"no table", "# doc\n", "no package table"},
		{"two tables", tableHead + "\n|---|---|---|\n| `a` | x | — |\n\n" + tableHead + "\n", "second package table"},
		{"unquoted package", tableHead + "\n|---|---|---|\n| a | x | — |\n", "line 3"},
		{"unquoted import", tableHead + "\n|---|---|---|\n| `a` | x | b |\n", "line 3"},
		{"empty may import", tableHead + "\n|---|---|---|\n| `a` | x |  |\n", "line 3"},
		{"absolute path", tableHead + "\n|---|---|---|\n| `a` | x | `" + modulePath + "/b` |\n", "relative"},
		{"two cells", tableHead + "\n|---|---|---|\n| `a` | x |\n", "2 cells, want 3"},
		{"repeated row", tableHead + "\n|---|---|---|\n| `a` | x | — |\n| `a` | y | — |\n", "repeats line 3"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseTable(strings.NewReader(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseTable = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// parseTable reads the one package table of a Markdown document.
func parseTable(r io.Reader) ([]tableRow, error) {
	var (
		rows    []tableRow
		seen    = map[string]int{}
		found   bool
		inTable bool
		line    int
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == tableHead {
			if found {
				return nil, fmt.Errorf("line %d: a second package table; keep one", line)
			}
			found, inTable = true, true
			continue
		}
		if !inTable {
			continue
		}
		if !strings.HasPrefix(text, "|") {
			inTable = false
			continue
		}
		if strings.Trim(text, "|- ") == "" {
			continue // the separator under the header
		}
		row, err := parseRow(text)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if prev, ok := seen[row.name]; ok {
			return nil, fmt.Errorf("line %d: row %s repeats line %d; merge them", line, row.name, prev)
		}
		seen[row.name] = line
		row.line = line
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("no package table (a header line %q)", tableHead)
	}
	return rows, nil
}

// parseRow parses "| `pkg` | owns | `a`, `b/...` |" or "| `pkg` | owns | — |".
func parseRow(text string) (tableRow, error) {
	cells := strings.Split(strings.TrimSuffix(strings.TrimPrefix(text, "|"), "|"), "|")
	if len(cells) != 3 {
		return tableRow{}, fmt.Errorf("%d cells, want 3 (package | owns | may import): %s", len(cells), text)
	}
	name, err := parsePath(cells[0])
	if err != nil {
		return tableRow{}, fmt.Errorf("package cell: %w", err)
	}
	row := tableRow{name: name}
	allow := strings.TrimSpace(cells[2])
	if allow == noImports {
		return row, nil
	}
	for entry := range strings.SplitSeq(allow, ",") {
		p, err := parsePath(entry)
		if err != nil {
			return tableRow{}, fmt.Errorf("row %s, may import cell (write %s or a comma-separated list of `path` entries): %w", name, noImports, err)
		}
		row.allow = append(row.allow, p)
	}
	return row, nil
}

// parsePath parses one backquoted module-relative path such as `region/gen/...`.
func parsePath(cell string) (string, error) {
	s := strings.TrimSpace(cell)
	p, ok := strings.CutPrefix(s, "`")
	if ok {
		p, ok = strings.CutSuffix(p, "`")
	}
	if !ok || p == "" || strings.ContainsAny(p, "` ") {
		return "", fmt.Errorf("%q is not one backquoted package path", s)
	}
	if p == modulePath || strings.HasPrefix(p, modulePath+"/") || strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%q: write paths relative to %s", p, modulePath)
	}
	return p, nil
}

// goList runs `go list -json` on the module's packages, skipping directories that hold
// only tests.
func goList(t *testing.T) []listedPackage {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", "list", "-deps=false", "-json", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps=false -json ./...: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		if len(p.GoFiles)+len(p.CgoFiles) == 0 {
			continue
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list -deps=false -json ./... listed no package")
	}
	return pkgs
}

// rel is the package's path relative to the module.
func (p listedPackage) rel() string {
	rel, _ := relative(p.ImportPath)
	return rel
}

// relative strips the module path; ok is false for packages outside the module.
func relative(importPath string) (rel string, ok bool) {
	if importPath == modulePath {
		return ".", true
	}
	return strings.CutPrefix(importPath, modulePath+"/")
}

// matches reports whether a table path or pattern names pkg.
func matches(pattern, pkg string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

func matchesAny(pkgs []listedPackage, pattern string) bool {
	return slices.ContainsFunc(pkgs, func(p listedPackage) bool { return matches(pattern, p.rel()) })
}

// rowFor returns the row of pkg: its exact row, else the longest pattern that matches.
func rowFor(rows []tableRow, pkg string) *tableRow {
	var best *tableRow
	for i := range rows {
		r := &rows[i]
		switch {
		case r.name == pkg:
			return r
		case matches(r.name, pkg) && (best == nil || len(r.name) > len(best.name)):
			best = r
		}
	}
	return best
}

func (r *tableRow) allows(pkg string) bool {
	return slices.ContainsFunc(r.allow, func(a string) bool { return matches(a, pkg) })
}

// importSites names the file:line positions where p imports imp, relative to the
// repository root, or the package's path when no file can be read.
func importSites(t *testing.T, p listedPackage, imp string) []string {
	t.Helper()
	root, err := os.Getwd()
	if err != nil {
		return []string{p.rel()}
	}
	var sites []string
	fset := token.NewFileSet()
	for _, name := range slices.Concat(p.GoFiles, p.CgoFiles) {
		f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.ImportsOnly)
		if err != nil {
			continue
		}
		for _, spec := range f.Imports {
			if path, err := strconv.Unquote(spec.Path.Value); err != nil || path != imp {
				continue
			}
			pos := fset.Position(spec.Pos())
			file, err := filepath.Rel(root, pos.Filename)
			if err != nil {
				file = pos.Filename
			}
			sites = append(sites, fmt.Sprintf("%s:%d", filepath.ToSlash(file), pos.Line))
		}
	}
	if len(sites) == 0 {
		return []string{p.rel()}
	}
	return sites
}
