// Package kvstore is the monitor's durable store: named buckets of ordered key/value pairs,
// changed only by atomic transactions (minimonv1.Transaction), backed by bbolt (DB) with an
// in-memory twin of identical semantics (Mem) for tests and the simulator.
//
// Semantics shared by both implementations:
//   - A bucket exists exactly while it holds at least one key: it is created by the first put and
//     removed when a transaction leaves it empty. Export and Sizes therefore see the same buckets
//     on both implementations, and a store copied by Export/Import equals the original.
//   - Apply validates every op before changing anything; one invalid op rejects the whole
//     transaction (ErrInvalidTransaction) and nothing changes. Ops apply in order.
//   - Values and keys handed out (Get, ForEach) are copies the caller may keep and modify.
//   - ForEach's fn must not call Apply or Import on the same store (it runs inside a read
//     transaction / read lock).
package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	bolt "go.etcd.io/bbolt"
)

// Sentinel errors.
var (
	ErrInvalidTransaction = errors.New("kvstore: invalid transaction")
	ErrInvalidChunk       = errors.New("kvstore: invalid export chunk")
	ErrInvalidArgument    = errors.New("kvstore: invalid argument")
	ErrLocked             = errors.New("kvstore: locked")
	ErrCorrupt            = errors.New("kvstore: store is corrupt or not a minimon store")
	ErrClosed             = errors.New("kvstore: store is closed")
)

// Size limits, the same as bbolt's so that Mem rejects exactly what DB rejects.
const (
	MaxKeySize   = bolt.MaxKeySize   // bucket names and keys
	MaxValueSize = bolt.MaxValueSize // values
)

// Store is an ordered, bucketed key/value store with atomic transactions.
type Store interface {
	// Get returns a copy of the value, or (nil, nil) when bucket or key is absent.
	Get(bucket string, key []byte) ([]byte, error)
	// Apply applies tx atomically: all ops or none.
	Apply(tx *minimonv1.Transaction) error
	// ForEach calls fn for every pair of bucket with key >= start, in key order; an error
	// from fn stops the walk and is returned.
	ForEach(bucket string, start []byte, fn func(k, v []byte) error) error
	// Export returns the pairs from (bucket, key) on, in (bucket, key) order across all
	// buckets, bounded by maxBytes and maxKeys (<= 0: unbounded) but always at least one pair
	// when any remain.
	Export(bucket string, key []byte, maxBytes, maxKeys int) (*minimonv1.ExportChunk, error)
	// Import writes the pairs of c atomically.
	Import(c *minimonv1.ExportChunk) error
	// Sizes returns the bytes of keys plus values per bucket.
	Sizes() (map[string]int64, error)
	Close() error
}

var (
	_ Store = (*DB)(nil)
	_ Store = (*Mem)(nil)
)

// PairSize is what one exported pair counts against Export's maxBytes.
func PairSize(bucket string, key, value []byte) int {
	return len(bucket) + len(key) + len(value)
}

func checkBucket(name string) error {
	if name == "" {
		return errors.New("empty bucket name")
	}
	if len(name) > MaxKeySize {
		return fmt.Errorf("bucket name of %d bytes exceeds %d", len(name), MaxKeySize)
	}
	return nil
}

func checkKey(key []byte) error {
	if len(key) == 0 {
		return errors.New("empty key")
	}
	if len(key) > MaxKeySize {
		return fmt.Errorf("key of %d bytes exceeds %d", len(key), MaxKeySize)
	}
	return nil
}

func checkPut(bucket string, key, value []byte) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("value of %d bytes exceeds %d", len(value), MaxValueSize)
	}
	return nil
}

// ValidateTransaction checks every op of tx without applying anything. Apply calls it first.
func ValidateTransaction(tx *minimonv1.Transaction) error {
	if tx == nil {
		return fmt.Errorf("%w: nil transaction", ErrInvalidTransaction)
	}
	for i, op := range tx.GetOps() {
		if err := validateOp(op); err != nil {
			return fmt.Errorf("%w: op %d (%v): %v", ErrInvalidTransaction, i, op.GetKind(), err)
		}
	}
	return nil
}

func validateOp(op *minimonv1.StoreOp) error {
	if op == nil {
		return errors.New("nil op")
	}
	switch op.GetKind() {
	case minimonv1.StoreOp_PUT:
		return checkPut(op.GetBucket(), op.GetKey(), op.GetValue())
	case minimonv1.StoreOp_ERASE:
		if err := checkBucket(op.GetBucket()); err != nil {
			return err
		}
		return checkKey(op.GetKey())
	case minimonv1.StoreOp_ERASE_RANGE:
		if err := checkBucket(op.GetBucket()); err != nil {
			return err
		}
		// An empty key starts at the bucket's beginning, an empty end runs to its end.
		if len(op.GetEnd()) > 0 && bytes.Compare(op.GetEnd(), op.GetKey()) < 0 {
			return fmt.Errorf("range end %x is before its start %x", op.GetEnd(), op.GetKey())
		}
		return nil
	default:
		return fmt.Errorf("unknown op kind %d", int32(op.GetKind()))
	}
}

// ValidateChunk checks every pair of c without applying anything. Import calls it first.
func ValidateChunk(c *minimonv1.ExportChunk) error {
	if c == nil {
		return fmt.Errorf("%w: nil chunk", ErrInvalidChunk)
	}
	for i, p := range c.GetPairs() {
		if p == nil {
			return fmt.Errorf("%w: pair %d is nil", ErrInvalidChunk, i)
		}
		if err := checkPut(p.GetBucket(), p.GetKey(), p.GetValue()); err != nil {
			return fmt.Errorf("%w: pair %d: %v", ErrInvalidChunk, i, err)
		}
	}
	return nil
}

// inRange reports whether k is inside [start, end), an empty end meaning unbounded.
func inRange(k, end []byte) bool {
	return len(end) == 0 || bytes.Compare(k, end) < 0
}

// cloneBytes returns a copy of b that is never nil, so a present empty value is told apart
// from an absent one.
func cloneBytes(b []byte) []byte {
	out := make([]byte, len(b))
	copy(out, b)
	return out
}

// chunker builds an ExportChunk within the bounds.
type chunker struct {
	c                 *minimonv1.ExportChunk
	bytes             int
	maxBytes, maxKeys int
}

func newChunker(maxBytes, maxKeys int) *chunker {
	return &chunker{c: &minimonv1.ExportChunk{}, maxBytes: maxBytes, maxKeys: maxKeys}
}

// add appends the pair, or returns false (and records where the next chunk starts) when the
// chunk is full. The first pair always fits so every chunk makes progress.
func (ch *chunker) add(bucket string, k, v []byte) bool {
	size := PairSize(bucket, k, v)
	if n := len(ch.c.Pairs); n > 0 {
		if (ch.maxKeys > 0 && n >= ch.maxKeys) || (ch.maxBytes > 0 && ch.bytes+size > ch.maxBytes) {
			ch.c.NextBucket = bucket
			ch.c.NextKey = cloneBytes(k)
			return false
		}
	}
	ch.bytes += size
	ch.c.Pairs = append(ch.c.Pairs, &minimonv1.ExportChunk_Pair{
		Bucket: bucket, Key: cloneBytes(k), Value: cloneBytes(v),
	})
	return true
}

func (ch *chunker) finish() *minimonv1.ExportChunk {
	ch.c.Done = true
	return ch.c
}

// ClearTransaction returns a transaction that erases every bucket of s except those named in
// keep (sync wipes the store this way, keeping meta with its sync_in_progress marker, before
// importing). Build and apply it without writes in between.
func ClearTransaction(s Store, keep ...string) (*minimonv1.Transaction, error) {
	sizes, err := s.Sizes()
	if err != nil {
		return nil, err
	}
	tx := &minimonv1.Transaction{}
	for name := range sizes {
		if !slices.Contains(keep, name) {
			tx.Ops = append(tx.Ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE_RANGE, Bucket: name})
		}
	}
	slices.SortFunc(tx.Ops, func(a, b *minimonv1.StoreOp) int { return strings.Compare(a.Bucket, b.Bucket) })
	return tx, nil
}
