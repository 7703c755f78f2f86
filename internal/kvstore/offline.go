package kvstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// compactTxMaxSize bounds one write transaction of Compact (bytes of keys and values), so a
// large store is copied without holding it all in one transaction's dirty pages.
const compactTxMaxSize = 64 << 20

// Check runs bbolt's consistency check (page references, freelist, ordering) over the whole
// file and returns the first problem it reports, as ErrCorrupt.
func (d *DB) Check() (err error) {
	defer d.guard(&err)
	return d.wrap(d.db.View(func(tx *bolt.Tx) error {
		var first error
		for cerr := range tx.Check() {
			// Drain the channel: Check's goroutine blocks until every error is read.
			if first == nil {
				first = cerr
			}
		}
		if first != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, d.path, first)
		}
		return nil
	}))
}

// Compact rewrites the store file at path by copying every bucket into a fresh file in the same
// directory (bbolt never shrinks a file in place), fsyncs it and renames it over the original,
// so a crash leaves either the old file or the new one, never a mix. It takes the store's
// exclusive lock first: a store a monitord holds fails with ErrLocked. It returns the file
// sizes before and after.
func Compact(path string, opts Options) (before, after int64, err error) {
	if opts.ReadOnly {
		return 0, 0, fmt.Errorf("%w: compact needs a writable store", ErrInvalidArgument)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, fmt.Errorf("kvstore: compact: %w", err)
	}
	before = fi.Size()
	src, err := Open(path, opts)
	if err != nil {
		return 0, 0, err
	}
	// The lock on the old file is held until the new one is in place.
	defer func() { _ = src.Close() }()

	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".compact-*")
	if err != nil {
		return 0, 0, fmt.Errorf("kvstore: compact: %w", err)
	}
	tmpPath := tmp.Name()
	_ = tmp.Close()
	done := false
	defer func() {
		if !done {
			_ = os.Remove(tmpPath)
		}
	}()
	dst, err := bolt.Open(tmpPath, 0o600, &bolt.Options{Timeout: DefaultLockTimeout})
	if err != nil {
		return 0, 0, fmt.Errorf("kvstore: compact: open %s: %w", tmpPath, err)
	}
	if err := compactInto(dst, src); err != nil {
		_ = dst.Close()
		return 0, 0, err
	}
	// Every bbolt commit fsyncs the file; Sync covers a store with nothing to copy.
	if err := dst.Sync(); err != nil {
		_ = dst.Close()
		return 0, 0, fmt.Errorf("kvstore: compact: sync %s: %w", tmpPath, err)
	}
	if err := dst.Close(); err != nil {
		return 0, 0, fmt.Errorf("kvstore: compact: close %s: %w", tmpPath, err)
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return 0, 0, fmt.Errorf("kvstore: compact: %w", err)
	}
	done = true
	if err := syncDir(filepath.Dir(path)); err != nil {
		return 0, 0, fmt.Errorf("kvstore: compact: sync directory: %w", err)
	}
	if fi, err = os.Stat(path); err != nil {
		return 0, 0, fmt.Errorf("kvstore: compact: %w", err)
	}
	return before, fi.Size(), nil
}

// compactInto copies src into dst, turning a bbolt panic on a corrupt page into ErrCorrupt.
func compactInto(dst *bolt.DB, src *DB) (err error) {
	defer src.guard(&err)
	if err := bolt.Compact(dst, src.db, compactTxMaxSize); err != nil {
		return fmt.Errorf("kvstore: compact %s: %w", src.path, err)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, os.ErrInvalid) {
		return nil // some file systems cannot fsync a directory
	}
	return err
}
