package kvstore

import (
	"errors"
	"fmt"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DefaultLockTimeout is how long Open waits for the file lock when Options.Timeout is zero.
const DefaultLockTimeout = time.Second

// Options configures Open. There is deliberately no way to turn fsync off (design.md 4.6):
// a crash could then tear the store.
type Options struct {
	// Timeout bounds the wait for the file lock held by another process; 0 means
	// DefaultLockTimeout. Waiting forever is not offered: a second monitor on the same store
	// must fail fast with a clear error.
	Timeout time.Duration
	// ReadOnly opens the file read-only under a shared lock (the offline check and
	// extract-monmap): it still fails with ErrLocked while a monitord holds the store, and it
	// never creates the file. Writes return an error.
	ReadOnly bool
}

// DB is the bbolt-backed Store. It is safe for concurrent use.
type DB struct {
	path string
	db   *bolt.DB
}

// Open opens (creating if needed) the store at path.
func Open(path string, opts Options) (_ *DB, err error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	// bbolt reads the meta pages of a foreign file; never let a bad file crash the daemon.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: open %s: %v", ErrCorrupt, path, r)
		}
	}()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, NoSync: false, ReadOnly: opts.ReadOnly})
	switch {
	case err == nil:
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: store %s is locked by another process", ErrLocked, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrInvalidMapping):
		return nil, fmt.Errorf("%w: open %s: %v", ErrCorrupt, path, err)
	default:
		// bbolt reports some malformed files (too small, bad page size) with plain errors.
		return nil, fmt.Errorf("kvstore: open %s: %w", path, err)
	}
	if bdb.NoSync {
		_ = bdb.Close()
		return nil, fmt.Errorf("kvstore: open %s: NoSync set", path)
	}
	return &DB{path: path, db: bdb}, nil
}

// Path returns the file the store lives in.
func (d *DB) Path() string { return d.path }

// guard turns a bbolt panic (a corrupt page met while reading) into ErrCorrupt.
func (d *DB) guard(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %s: %v", ErrCorrupt, d.path, r)
	}
}

func (d *DB) wrap(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Get implements Store.
func (d *DB) Get(bucket string, key []byte) (val []byte, err error) {
	if err := checkBucket(bucket); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	defer d.guard(&err)
	err = d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		// A nested bucket (only in a foreign file) also reads as nil: not a value.
		if v := b.Get(key); v != nil {
			val = cloneBytes(v)
		}
		return nil
	})
	return val, d.wrap(err)
}

// Apply implements Store: one bbolt Update, so the ops commit together with one fsync.
func (d *DB) Apply(t *minimonv1.Transaction) (err error) {
	if err := ValidateTransaction(t); err != nil {
		return err
	}
	if len(t.GetOps()) == 0 {
		return nil
	}
	defer d.guard(&err)
	return d.wrap(d.db.Update(func(tx *bolt.Tx) error {
		touched := map[string]bool{}
		for i, op := range t.GetOps() {
			if err := applyOp(tx, op, touched); err != nil {
				return fmt.Errorf("kvstore: op %d (%v): %w", i, op.GetKind(), err)
			}
		}
		return dropEmpty(tx, touched)
	}))
}

func applyOp(tx *bolt.Tx, op *minimonv1.StoreOp, touched map[string]bool) error {
	name := []byte(op.GetBucket())
	switch op.GetKind() {
	case minimonv1.StoreOp_PUT:
		b, err := tx.CreateBucketIfNotExists(name)
		if err != nil {
			return err
		}
		// A nil value would read back as nil inside this transaction, which the cursors below
		// take for a nested bucket: an empty value must stay a value.
		v := op.GetValue()
		if v == nil {
			v = []byte{}
		}
		return b.Put(op.GetKey(), v)
	case minimonv1.StoreOp_ERASE:
		b := tx.Bucket(name)
		if b == nil {
			return nil
		}
		touched[op.GetBucket()] = true
		if v := b.Get(op.GetKey()); v == nil {
			return nil // absent (or a nested bucket of a foreign file): nothing to erase
		}
		return b.Delete(op.GetKey())
	case minimonv1.StoreOp_ERASE_RANGE:
		b := tx.Bucket(name)
		if b == nil {
			return nil
		}
		touched[op.GetBucket()] = true
		// Collect first: deleting under a live cursor skips keys in bbolt.
		var keys [][]byte
		c := b.Cursor()
		for k, v := c.Seek(op.GetKey()); k != nil && inRange(k, op.GetEnd()); k, v = c.Next() {
			if v != nil {
				keys = append(keys, cloneBytes(k))
			}
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("unknown op kind %d", int32(op.GetKind()))
	}
}

// dropEmpty removes buckets the transaction left empty (a bucket exists while it holds keys).
func dropEmpty(tx *bolt.Tx, touched map[string]bool) error {
	for name := range touched {
		b := tx.Bucket([]byte(name))
		if b == nil {
			continue
		}
		if k, _ := b.Cursor().First(); k == nil {
			if err := tx.DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// ForEach implements Store.
func (d *DB) ForEach(bucket string, start []byte, fn func(k, v []byte) error) (err error) {
	if err := checkBucket(bucket); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	defer d.guard(&err)
	return d.wrap(d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(start); k != nil; k, v = c.Next() {
			if v == nil {
				continue
			}
			if err := fn(cloneBytes(k), cloneBytes(v)); err != nil {
				return err
			}
		}
		return nil
	}))
}

// Export implements Store.
func (d *DB) Export(bucket string, key []byte, maxBytes, maxKeys int) (c *minimonv1.ExportChunk, err error) {
	defer d.guard(&err)
	ch := newChunker(maxBytes, maxKeys)
	err = d.db.View(func(tx *bolt.Tx) error {
		root := tx.Cursor()
		for name, _ := root.Seek([]byte(bucket)); name != nil; name, _ = root.Next() {
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			bc := b.Cursor()
			var k, v []byte
			if string(name) == bucket {
				k, v = bc.Seek(key)
			} else {
				k, v = bc.First()
			}
			for ; k != nil; k, v = bc.Next() {
				if v == nil {
					continue
				}
				if !ch.add(string(name), k, v) {
					c = ch.c
					return nil
				}
			}
		}
		c = ch.finish()
		return nil
	})
	if err != nil {
		return nil, d.wrap(err)
	}
	return c, nil
}

// Import implements Store: the chunk's pairs are written in one bbolt Update.
func (d *DB) Import(c *minimonv1.ExportChunk) (err error) {
	if err := ValidateChunk(c); err != nil {
		return err
	}
	if len(c.GetPairs()) == 0 {
		return nil
	}
	defer d.guard(&err)
	return d.wrap(d.db.Update(func(tx *bolt.Tx) error {
		for _, p := range c.GetPairs() {
			b, err := tx.CreateBucketIfNotExists([]byte(p.GetBucket()))
			if err != nil {
				return err
			}
			if err := b.Put(p.GetKey(), p.GetValue()); err != nil {
				return err
			}
		}
		return nil
	}))
}

// Sizes implements Store.
func (d *DB) Sizes() (sizes map[string]int64, err error) {
	defer d.guard(&err)
	sizes = map[string]int64{}
	err = d.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			var n int64
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if v != nil {
					n += int64(len(k) + len(v))
				}
			}
			sizes[string(name)] = n
			return nil
		})
	})
	if err != nil {
		return nil, d.wrap(err)
	}
	return sizes, nil
}

// Close implements Store. Closing twice is fine.
func (d *DB) Close() error {
	return d.db.Close()
}
