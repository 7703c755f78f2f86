package kvstore

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// Mem is the in-memory Store with the semantics of DB (same validation, ordering, bucket
// lifetime and Export chunking). It is safe for concurrent use.
type Mem struct {
	mu      sync.RWMutex
	closed  bool
	buckets map[string]*memBucket
}

// memBucket keeps its keys sorted for ordered walks. Stored values are never modified in place
// (puts store a fresh copy), so Clone can share them.
type memBucket struct {
	keys []string // sorted
	vals map[string][]byte
}

// NewMem returns an empty in-memory store.
func NewMem() *Mem {
	return &Mem{buckets: map[string]*memBucket{}}
}

// Clone returns an open deep copy of m, also when m is closed: the simulator uses it to model
// a store that survives its monitor's crash.
func (m *Mem) Clone() *Mem {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := NewMem()
	for name, b := range m.buckets {
		c.buckets[name] = &memBucket{keys: slices.Clone(b.keys), vals: maps.Clone(b.vals)}
	}
	return c
}

// seek returns the index of the first key >= start.
func (b *memBucket) seek(start []byte) int {
	s := string(start)
	return sort.SearchStrings(b.keys, s)
}

func (b *memBucket) put(k, v []byte) {
	ks := string(k)
	if _, ok := b.vals[ks]; !ok {
		i := sort.SearchStrings(b.keys, ks)
		b.keys = slices.Insert(b.keys, i, ks)
	}
	b.vals[ks] = cloneBytes(v)
}

func (b *memBucket) erase(k []byte) {
	ks := string(k)
	if _, ok := b.vals[ks]; !ok {
		return
	}
	delete(b.vals, ks)
	i := sort.SearchStrings(b.keys, ks)
	b.keys = slices.Delete(b.keys, i, i+1)
}

func (b *memBucket) eraseRange(start, end []byte) {
	i := b.seek(start)
	j := i
	for j < len(b.keys) && inRange([]byte(b.keys[j]), end) {
		delete(b.vals, b.keys[j])
		j++
	}
	b.keys = slices.Delete(b.keys, i, j)
}

// Get implements Store.
func (m *Mem) Get(bucket string, key []byte) ([]byte, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	b := m.buckets[bucket]
	if b == nil {
		return nil, nil
	}
	v, ok := b.vals[string(key)]
	if !ok {
		return nil, nil
	}
	return cloneBytes(v), nil
}

// Apply implements Store. Validation runs first; after it nothing can fail, so a transaction
// is all or nothing.
func (m *Mem) Apply(tx *minimonv1.Transaction) error {
	if err := ValidateTransaction(tx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	touched := map[string]bool{}
	for _, op := range tx.GetOps() {
		name := op.GetBucket()
		b := m.buckets[name]
		switch op.GetKind() {
		case minimonv1.StoreOp_PUT:
			if b == nil {
				b = &memBucket{vals: map[string][]byte{}}
				m.buckets[name] = b
			}
			b.put(op.GetKey(), op.GetValue())
		case minimonv1.StoreOp_ERASE:
			if b != nil {
				touched[name] = true
				b.erase(op.GetKey())
			}
		case minimonv1.StoreOp_ERASE_RANGE:
			if b != nil {
				touched[name] = true
				b.eraseRange(op.GetKey(), op.GetEnd())
			}
		}
	}
	for name := range touched {
		if b := m.buckets[name]; b != nil && len(b.keys) == 0 {
			delete(m.buckets, name)
		}
	}
	return nil
}

// ForEach implements Store.
func (m *Mem) ForEach(bucket string, start []byte, fn func(k, v []byte) error) error {
	if err := checkBucket(bucket); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	b := m.buckets[bucket]
	if b == nil {
		return nil
	}
	for _, k := range b.keys[b.seek(start):] {
		if err := fn([]byte(k), cloneBytes(b.vals[k])); err != nil {
			return err
		}
	}
	return nil
}

// Export implements Store.
func (m *Mem) Export(bucket string, key []byte, maxBytes, maxKeys int) (*minimonv1.ExportChunk, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	names := slices.Sorted(maps.Keys(m.buckets))
	ch := newChunker(maxBytes, maxKeys)
	for _, name := range names[sort.SearchStrings(names, bucket):] {
		b := m.buckets[name]
		i := 0
		if name == bucket {
			i = b.seek(key)
		}
		for _, k := range b.keys[i:] {
			if !ch.add(name, []byte(k), b.vals[k]) {
				return ch.c, nil
			}
		}
	}
	return ch.finish(), nil
}

// Import implements Store.
func (m *Mem) Import(c *minimonv1.ExportChunk) error {
	if err := ValidateChunk(c); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, p := range c.GetPairs() {
		b := m.buckets[p.GetBucket()]
		if b == nil {
			b = &memBucket{vals: map[string][]byte{}}
			m.buckets[p.GetBucket()] = b
		}
		b.put(p.GetKey(), p.GetValue())
	}
	return nil
}

// Sizes implements Store.
func (m *Mem) Sizes() (map[string]int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	sizes := make(map[string]int64, len(m.buckets))
	for name, b := range m.buckets {
		var n int64
		for k, v := range b.vals {
			n += int64(len(k) + len(v))
		}
		sizes[name] = n
	}
	return sizes, nil
}

// Close implements Store. Closing twice is fine; the contents stay readable through Clone.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
