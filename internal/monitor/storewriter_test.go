package monitor

import (
	"errors"
	"fmt"
	"testing"

	"go.uber.org/zap/zaptest"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
)

// gateStore blocks each Apply until the test lets it through, so writes can queue up.
type gateStore struct {
	*kvstore.Mem
	entered chan int // number of ops of the Apply that started
	release chan struct{}
	failOn  string // an Apply whose first op has this key fails
}

func (g *gateStore) Apply(tx *minimonv1.Transaction) error {
	g.entered <- len(tx.GetOps())
	<-g.release
	for _, op := range tx.GetOps() {
		if string(op.GetKey()) == g.failOn {
			return errors.New("disk on fire")
		}
	}
	return g.Mem.Apply(tx)
}

func putTx(key, val string) *minimonv1.Transaction {
	return &minimonv1.Transaction{Ops: []*minimonv1.StoreOp{{
		Kind: minimonv1.StoreOp_PUT, Bucket: "t", Key: []byte(key), Value: []byte(val)}}}
}

func TestStoreWriterOrderAndGroupCommit(t *testing.T) {
	st := &gateStore{Mem: kvstore.NewMem(), entered: make(chan int, 100), release: make(chan struct{})}
	posted := make(chan []func(), 100)
	w := newStoreWriter(st, zaptest.NewLogger(t), func(d []func()) bool { posted <- d; return true },
		func(err error) { t.Errorf("unexpected failure: %v", err) })
	defer w.Close()

	var order []int
	mk := func(i int) func() { return func() { order = append(order, i) } }
	// The first write enters Apply and blocks; the next nine queue behind it.
	if err := w.Persist(putTx("k", "0"), mk(0)); err != nil {
		t.Fatal(err)
	}
	if n := <-st.entered; n != 1 {
		t.Fatalf("first Apply has %d ops, want 1", n)
	}
	for i := 1; i < 10; i++ {
		if err := w.Persist(putTx("k", fmt.Sprint(i)), mk(i)); err != nil {
			t.Fatal(err)
		}
	}
	st.release <- struct{}{}
	// The nine queued writes go as one Update.
	if n := <-st.entered; n != 9 {
		t.Fatalf("second Apply has %d ops, want the 9 queued writes in one batch", n)
	}
	st.release <- struct{}{}
	for got := 0; got < 10; {
		for _, d := range <-posted {
			d()
			got++
		}
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("completions out of order: %v", order)
		}
	}
	// Later ops of the batch win, as sequential applies would.
	v, err := st.Get("t", []byte("k"))
	if err != nil || string(v) != "9" {
		t.Fatalf("k = %q, %v; want 9", v, err)
	}
}

func TestStoreWriterFailureStops(t *testing.T) {
	st := &gateStore{Mem: kvstore.NewMem(), entered: make(chan int, 100), release: make(chan struct{}), failOn: "bad"}
	failed := make(chan error, 1)
	w := newStoreWriter(st, zaptest.NewLogger(t), func([]func()) bool { return true },
		func(err error) { failed <- err })
	defer w.Close()
	called := false
	if err := w.Persist(putTx("bad", "x"), func() { called = true }); err != nil {
		t.Fatal(err)
	}
	<-st.entered
	st.release <- struct{}{}
	if err := <-failed; err == nil {
		t.Fatal("no error reported")
	}
	if called {
		t.Fatal("done ran for a write that failed")
	}
	if err := w.Persist(putTx("k", "v"), nil); !errors.Is(err, errWriterClosed) {
		t.Fatalf("Persist after a failure = %v, want errWriterClosed", err)
	}
}
