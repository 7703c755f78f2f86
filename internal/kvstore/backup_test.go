package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

func putOp(bucket string, key, val []byte) *minimonv1.StoreOp {
	return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: bucket, Key: key, Value: val}
}

// commitVersion writes kv/<v> and paxos/last_committed = v in one transaction, as a commit does.
func commitVersion(t testing.TB, d *DB, v uint64) error {
	t.Helper()
	return d.Apply(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
		putOp(BucketKV, U64Key(v), []byte(fmt.Sprintf("value-%d", v))),
		putOp(BucketPaxos, []byte(keyPaxosLastCommitted), U64Key(v)),
	}})
}

// gateWriter holds the first Write until the test lets it go, so the snapshot's read
// transaction is provably open while the writer below commits.
type gateWriter struct {
	once    sync.Once
	started chan struct{}
	release chan struct{}
	buf     bytes.Buffer
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.once.Do(func() { close(g.started); <-g.release })
	return g.buf.Write(p)
}

func TestSnapshotConsistentWhileWriting(t *testing.T) {
	dir := t.TempDir()
	src := openDB(t, filepath.Join(dir, "store.db"))
	// Ballast, then freed: the file and its mapping are large enough that the commits below
	// reuse free pages instead of growing the file (a remap waits for every read transaction).
	var ops []*minimonv1.StoreOp
	for i := range 512 {
		ops = append(ops, putOp("ballast", U64Key(uint64(i)), make([]byte, 4096)))
	}
	if err := src.Apply(&minimonv1.Transaction{Ops: ops}); err != nil {
		t.Fatal(err)
	}
	if err := src.Apply(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{{Kind: minimonv1.StoreOp_ERASE_RANGE, Bucket: "ballast"}}}); err != nil {
		t.Fatal(err)
	}
	const before, during = 50, 20
	for v := uint64(1); v <= before; v++ {
		if err := commitVersion(t, src, v); err != nil {
			t.Fatal(err)
		}
	}

	g := &gateWriter{started: make(chan struct{}), release: make(chan struct{})}
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-g.started
		defer close(g.release)
		for v := uint64(before + 1); v <= before+during; v++ {
			if werr = commitVersion(t, src, v); werr != nil {
				return
			}
		}
	}()
	var began SnapshotInfo
	info, n, err := src.Snapshot(g, func(i SnapshotInfo) error { began = i; return nil })
	wg.Wait()
	if err != nil || werr != nil {
		t.Fatalf("snapshot: %v; writer: %v", err, werr)
	}
	if info != began || info.LastCommitted != before || info.SyncInProgress {
		t.Fatalf("info %+v (begin saw %+v), want last_committed %d", info, began, before)
	}
	if n != info.Size || int64(g.buf.Len()) != n {
		t.Fatalf("wrote %d bytes, buffer %d, size said %d", n, g.buf.Len(), info.Size)
	}
	if lc, _ := src.Get(BucketPaxos, []byte(keyPaxosLastCommitted)); !bytes.Equal(lc, U64Key(before+during)) {
		t.Fatalf("source last_committed %x, want %d: the writes did not go on during the copy", lc, before+during)
	}

	path := filepath.Join(dir, "copy.db")
	if err := os.WriteFile(path, g.buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := openDB(t, path)
	if err := cp.Check(); err != nil {
		t.Fatal(err)
	}
	if lc, _ := cp.Get(BucketPaxos, []byte(keyPaxosLastCommitted)); !bytes.Equal(lc, U64Key(before)) {
		t.Fatalf("copy last_committed %x, want %d", lc, before)
	}
	// The copy equals the source at that version: exactly versions 1..before.
	var got uint64
	err = cp.ForEach(BucketKV, nil, func(k, v []byte) error {
		got++
		if want := U64Key(got); !bytes.Equal(k, want) || string(v) != fmt.Sprintf("value-%d", got) {
			return fmt.Errorf("kv entry %d: %x=%q", got, k, v)
		}
		return nil
	})
	if err != nil || got != before {
		t.Fatalf("copy kv: %d entries, err %v; want %d", got, err, before)
	}
}

func TestSnapshotBeginAborts(t *testing.T) {
	d := openDB(t, filepath.Join(t.TempDir(), "store.db"))
	if err := d.Apply(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{putOp(BucketMeta, []byte(KeySyncInProgress), []byte{1})}}); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	var buf bytes.Buffer
	info, n, err := d.Snapshot(&buf, func(i SnapshotInfo) error {
		if !i.SyncInProgress || i.LastCommitted != 0 {
			t.Errorf("info %+v, want a sync in progress and no last_committed", i)
		}
		return stop
	})
	if !errors.Is(err, stop) || n != 0 || buf.Len() != 0 || !info.SyncInProgress {
		t.Fatalf("err %v, n %d, buffered %d, info %+v", err, n, buf.Len(), info)
	}
}

func TestWriteToClosed(t *testing.T) {
	d := openDB(t, filepath.Join(t.TempDir(), "store.db"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteTo(&bytes.Buffer{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteTo on a closed store: %v, want ErrClosed", err)
	}
}
