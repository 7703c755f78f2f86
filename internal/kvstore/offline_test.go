package kvstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReadOnlyOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")

	// A missing store is an error, not a new empty file.
	if _, err := Open(path, Options{ReadOnly: true}); err == nil {
		t.Fatal("read-only Open of a missing file succeeded")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read-only Open created the file: %v", err)
	}

	w := openDB(t, path)
	mustApply(t, w, put("b", "k", "v"))

	// The writer's exclusive lock keeps a reader out.
	if _, err := Open(path, Options{ReadOnly: true, Timeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("read-only Open of a locked store: %v, want ErrLocked", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	r, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if v, err := r.Get("b", []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if err := r.Apply(txn(put("b", "k2", "v2"))); err == nil {
		t.Fatal("Apply on a read-only store succeeded")
	}
	if err := r.Check(); err != nil {
		t.Fatalf("Check of a sound store: %v", err)
	}
	// A reader's shared lock keeps a writer out too.
	if _, err := Open(path, Options{Timeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open while a reader holds the store: %v, want ErrLocked", err)
	}
}

func TestCompact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	d := openDB(t, path)
	big := strings.Repeat("x", 4096)
	for i := range 500 {
		mustApply(t, d, put("data", fmt.Sprintf("k%04d", i), big))
	}
	// Leave a few keys: the freed pages stay in the file until compaction.
	mustApply(t, d, eraseRange("data", "k0010", ""))
	mustApply(t, d, put("meta", "fsid", "f"))
	want := dump(t, d)

	// A store in use is refused and left alone.
	if _, _, err := Compact(path, Options{Timeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("Compact of a locked store: %v, want ErrLocked", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	before, after, err := Compact(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if after >= before {
		t.Fatalf("sizes before %d after %d: no space reclaimed", before, after)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != after {
		t.Fatalf("stat after compact: %v, %v (reported %d)", fi, err, after)
	}
	// No temporary file is left behind.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("directory after compact: %v", entries)
	}
	d = openDB(t, path)
	defer d.Close()
	if got := dump(t, d); !slices.Equal(got, want) {
		t.Fatalf("contents changed by compact:\n got %v\nwant %v", got, want)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestCompactMissingOrCorrupt(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Compact(filepath.Join(dir, "none.db"), Options{}); err == nil {
		t.Fatal("Compact of a missing file succeeded")
	}
	bad := filepath.Join(dir, "bad.db")
	if err := os.WriteFile(bad, []byte(strings.Repeat("garbage!", 1024)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Compact(bad, Options{}); err == nil {
		t.Fatal("Compact of a garbage file succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("leftovers after a failed compact: %v", entries)
	}
}
