package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
)

// backupOf runs Backup on tm and returns the first chunk and the concatenated data.
func backupOf(ctx context.Context, tm *testMon) (*minimonv1.BackupChunk, []byte, error) {
	s, err := tm.c.Backup(ctx, &minimonv1.BackupRequest{})
	if err != nil {
		return nil, nil, err
	}
	var first *minimonv1.BackupChunk
	var data []byte
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return first, data, nil
		}
		if err != nil {
			return first, data, err
		}
		if first == nil {
			first = c
		} else if c.GetLastCommitted() != 0 || c.GetTotalBytes() != 0 || c.GetName() != "" {
			return first, data, fmt.Errorf("chunk at %d repeats the first chunk's fields", len(data))
		}
		data = append(data, c.GetData()...)
	}
}

type written struct {
	key, val string
	version  uint64
}

// TestBackupWhileWriting takes a backup of a peon while a writer commits through the leader:
// the copy opens as a store holding exactly the writes up to the reported last_committed.
func TestBackupWhileWriting(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	leader := mons[waitQuorum(t, mons)]
	peon := mons[(waitQuorum(t, mons)+1)%3]

	var mu sync.Mutex
	var writes []written
	record := func(w written) { mu.Lock(); writes = append(writes, w); mu.Unlock() }
	var n atomic.Int64
	put := func() {
		i := n.Add(1)
		w := written{key: fmt.Sprintf("w/%04d", i), val: fmt.Sprintf("value-%d", i)}
		w.version = kvSet(t, leader, w.key, w.val)
		record(w)
	}
	for range 20 {
		put()
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := rpcCtx(waitTimeout)
			i := n.Add(1)
			w := written{key: fmt.Sprintf("w/%04d", i), val: fmt.Sprintf("value-%d", i)}
			r, err := leader.c.KVSet(ctx, &minimonv1.KVSetRequest{Key: w.key, Value: []byte(w.val)})
			cancel()
			if err != nil {
				t.Errorf("writer: KVSet(%s): %v", w.key, err)
				return
			}
			w.version = r.GetVersion()
			record(w)
		}
	}()

	// Once the copy is taken: writes started now must be missing from it, and a second
	// backup is refused while this one runs.
	var after []written
	var secondErr error
	hook := func() {
		for range 3 {
			i := n.Add(1)
			w := written{key: fmt.Sprintf("w/%04d", i), val: fmt.Sprintf("value-%d", i)}
			ctx, cancel := rpcCtx(waitTimeout)
			r, err := leader.c.KVSet(ctx, &minimonv1.KVSetRequest{Key: w.key, Value: []byte(w.val)})
			cancel()
			if err != nil {
				t.Errorf("KVSet after the copy: %v", err)
				return
			}
			w.version = r.GetVersion()
			after = append(after, w)
		}
		ctx, cancel := rpcCtx(waitTimeout)
		defer cancel()
		_, _, secondErr = backupOf(ctx, peon)
	}
	peon.m.backup.spooled.Store(&hook)
	peon.m.backup.chunk.Store(4096) // several chunks
	for n.Load() < 40 && !t.Failed() {
		time.Sleep(5 * time.Millisecond) // the writer is under way
	}

	ctx, cancel := rpcCtx(waitTimeout)
	first, data, err := backupOf(ctx, peon)
	cancel()
	close(stop)
	wg.Wait()
	peon.m.backup.spooled.Store(nil)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if status.Code(secondErr) != codes.ResourceExhausted || status.Convert(secondErr).Message() != "a backup is already running" {
		t.Fatalf("second Backup while one runs: %v, want ResourceExhausted", secondErr)
	}
	lc := first.GetLastCommitted()
	if first.GetName() != peon.cfg.Name || first.GetTotalBytes() != uint64(len(data)) || lc == 0 {
		t.Fatalf("first chunk: name %q, total_bytes %d, last_committed %d; got %d bytes from %s",
			first.GetName(), first.GetTotalBytes(), lc, len(data), peon.cfg.Name)
	}

	path := filepath.Join(t.TempDir(), "store.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := kvstore.Open(path, kvstore.Options{})
	if err != nil {
		t.Fatalf("the backup does not open as a store: %v", err)
	}
	defer func() { _ = st.Close() }()
	if err := st.Check(); err != nil {
		t.Fatal(err)
	}
	if b, _ := st.Get(paxos.Bucket, []byte(paxos.KeyLastCommitted)); !bytes.Equal(b, kvstore.U64Key(lc)) {
		t.Fatalf("paxos last_committed in the copy %x, first chunk said %d", b, lc)
	}
	if b, _ := st.Get(kvstore.BucketMeta, []byte(kvstore.KeyName)); string(b) != peon.cfg.Name {
		t.Fatalf("meta name in the copy %q, want %q", b, peon.cfg.Name)
	}
	mu.Lock()
	all := append(writes, after...)
	mu.Unlock()
	var in, out int
	for _, w := range all {
		got, err := st.Get(kvstore.BucketKV, []byte(w.key))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case w.version <= lc && string(got) != w.val:
			t.Errorf("%s (version %d <= %d): %q in the copy, want %q", w.key, w.version, lc, got, w.val)
		case w.version > lc && got != nil:
			t.Errorf("%s (version %d > %d) is in the copy", w.key, w.version, lc)
		case w.version <= lc:
			in++
		default:
			out++
		}
	}
	if len(after) != 3 || out < len(after) {
		t.Fatalf("%d writes after the copy, %d missing from it: the writes did not go on", len(after), out)
	}
	if len(data) <= 4096 {
		t.Fatalf("backup of %d bytes: want several chunks", len(data))
	}
	t.Logf("backup at version %d: %d bytes, %d writes in, %d after", lc, len(data), in, out)

	// The slot is free again.
	ctx, cancel = rpcCtx(waitTimeout)
	defer cancel()
	if _, _, err := backupOf(ctx, leader); err != nil {
		t.Fatalf("a later backup: %v", err)
	}
}
