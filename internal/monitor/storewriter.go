package monitor

import (
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
)

// Group commit bounds: one bbolt Update (one fsync) carries at most this many queued
// transactions or ops. Enough to absorb a burst without making one write huge.
const (
	maxBatchTxs = 128
	maxBatchOps = 16384
)

var errWriterClosed = errors.New("monitor: store writer closed")

// storeWrite is one Persist request of the node: tx must be durable before done runs.
type storeWrite struct {
	tx   *minimonv1.Transaction
	done func()
}

// storeWriter applies transactions to the store on its own goroutine, in issue order, so the
// event loop never waits for an fsync (design.md 4.6: the leader writes its accept while
// BEGIN is on the wire). Transactions that queue up while a write is in progress ride the next
// Update together (group commit); each one stays atomic because the batch is a single bbolt
// transaction whose ops keep their order. Completions go back in issue order through post.
type storeWriter struct {
	st   kvstore.Store
	lg   *zap.Logger
	post func(dones []func()) bool // hands completions to the loop; false once it is gone
	fail func(err error)           // a write failed: the monitor must stop (never guess)

	mu      sync.Mutex
	queue   []storeWrite
	closed  bool
	wake    chan struct{} // capacity 1: "the queue is not empty"
	stopped chan struct{}

	batches, txs uint64 // written by the writer goroutine only; read after stop in tests
}

func newStoreWriter(st kvstore.Store, lg *zap.Logger, post func([]func()) bool, fail func(error)) *storeWriter {
	w := &storeWriter{
		st: st, lg: lg, post: post, fail: fail,
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	go w.run()
	return w
}

// Persist queues tx; it never blocks (the loop must not wait on the writer, which waits on
// the loop to take completions). It returns errWriterClosed after Close or a failed write.
func (w *storeWriter) Persist(tx *minimonv1.Transaction, done func()) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errWriterClosed
	}
	w.queue = append(w.queue, storeWrite{tx: tx, done: done})
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// Close stops accepting writes, lets the writer finish the batch in hand and waits for it.
// Queued writes not yet started are dropped: their completions (and the messages that
// depend on them) never happen, which the protocol treats like a crash before the write.
func (w *storeWriter) Close() {
	w.mu.Lock()
	w.closed = true
	w.queue = nil
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.stopped
}

func (w *storeWriter) run() {
	defer close(w.stopped)
	for range w.wake {
		for {
			batch, ok := w.take()
			if !ok {
				return
			}
			if len(batch) == 0 {
				break
			}
			if err := w.apply(batch); err != nil {
				w.mu.Lock()
				w.closed = true
				w.queue = nil
				w.mu.Unlock()
				w.fail(err)
				return
			}
			dones := make([]func(), 0, len(batch))
			for _, b := range batch {
				if b.done != nil {
					dones = append(dones, b.done)
				}
			}
			if !w.post(dones) {
				return
			}
		}
	}
}

// take removes the next batch from the queue; ok is false once closed.
func (w *storeWriter) take() (batch []storeWrite, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, false
	}
	n, ops := 0, 0
	for n < len(w.queue) && n < maxBatchTxs {
		k := len(w.queue[n].tx.GetOps())
		if n > 0 && ops+k > maxBatchOps {
			break
		}
		ops += k
		n++
	}
	batch = w.queue[:n:n]
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		w.queue = nil // let the backing array go
	}
	return batch, true
}

// apply makes the batch durable in one Update. A batch that fails is retried one transaction
// at a time, so a bad transaction is reported alone rather than as its batch.
func (w *storeWriter) apply(batch []storeWrite) error {
	w.batches++
	w.txs += uint64(len(batch))
	if len(batch) == 1 {
		return w.applyOne(batch[0].tx)
	}
	n := 0
	for _, b := range batch {
		n += len(b.tx.GetOps())
	}
	merged := &minimonv1.Transaction{Ops: make([]*minimonv1.StoreOp, 0, n)}
	for _, b := range batch {
		merged.Ops = append(merged.Ops, b.tx.GetOps()...)
	}
	if err := w.st.Apply(merged); err == nil {
		return nil
	} else if !errors.Is(err, kvstore.ErrInvalidTransaction) {
		return fmt.Errorf("monitor: store write failed: %w", err)
	}
	for _, b := range batch {
		if err := w.applyOne(b.tx); err != nil {
			return err
		}
	}
	return nil
}

func (w *storeWriter) applyOne(tx *minimonv1.Transaction) error {
	if err := w.st.Apply(tx); err != nil {
		return fmt.Errorf("monitor: store write failed: %w", err)
	}
	return nil
}
