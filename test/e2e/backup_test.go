package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
)

// TestBackupLive: `monctl backup` from a live 3-monitor cluster while a client writes. The file
// passes `monitord check` as a data dir's store.db, and holds every write acknowledged at a
// version up to the backup's last_committed.
func TestBackupLive(t *testing.T) {
	tc := newCluster(t, Options{})
	tc.start()
	ctx := tc.ctx()

	type ack struct {
		val     string
		version uint64
	}
	var mu sync.Mutex
	acked := map[string]ack{}
	write := func(i int) error {
		k, v := fmt.Sprintf("bk-%04d", i), fmt.Sprintf("value-%d", i)
		r, err := tc.cl.KVSet(ctx, k, []byte(v))
		if err != nil {
			return fmt.Errorf("set %s: %w", k, err)
		}
		mu.Lock()
		acked[k] = ack{v, r.GetVersion()}
		mu.Unlock()
		return nil
	}
	for i := range 30 {
		if err := write(i); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		for i := 30; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if werr = write(i); werr != nil {
				return
			}
		}
	})

	dir := filepath.Join(tc.Dir, "restore")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "store.db")
	code, out, errOut := tc.monctl("-f", "json", "--timeout", "20s", "backup", "--out", file)
	close(stop)
	wg.Wait()
	if code != 0 || werr != nil {
		t.Fatalf("monctl backup: exit %d, stdout %q, stderr %q; writer: %v", code, out, errOut, werr)
	}
	var rep struct {
		File          string `json:"file"`
		Bytes         int64  `json:"bytes"`
		LastCommitted uint64 `json:"last_committed"`
		Mon           string `json:"mon"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("backup json %q: %v", out, err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Size() != rep.Bytes || rep.File != file || tc.Proc(rep.Mon) == nil || rep.LastCommitted == 0 {
		t.Fatalf("report %+v; file %v, %v", rep, fi, err)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("FILE.tmp left behind: %v", err)
	}

	// The copy is a whole store of that monitor at that version.
	code, out, errOut = monitordTool(t, ctx, "check", "--data-dir", dir)
	want := fmt.Sprintf(", name %s, paxos ", rep.Mon)
	if code != 0 || !strings.HasPrefix(out, "ok: fsid ") || !strings.Contains(out, want) ||
		!strings.Contains(out, fmt.Sprintf("..%d, monmap epoch", rep.LastCommitted)) {
		t.Fatalf("monitord check of the backup (last_committed %d): exit %d, stdout %q, stderr %q", rep.LastCommitted, code, out, errOut)
	}

	st, err := kvstore.Open(file, kvstore.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	if b, _ := st.Get(paxos.Bucket, []byte(paxos.KeyLastCommitted)); !bytes.Equal(b, kvstore.U64Key(rep.LastCommitted)) {
		t.Fatalf("paxos last_committed %x in the copy, report says %d", b, rep.LastCommitted)
	}
	mu.Lock()
	defer mu.Unlock()
	var in, after int
	for k, a := range acked {
		got, err := st.Get(kvstore.BucketKV, []byte(k))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case a.version <= rep.LastCommitted && string(got) != a.val:
			t.Errorf("%s acknowledged at version %d <= %d: %q in the copy, want %q", k, a.version, rep.LastCommitted, got, a.val)
		case a.version > rep.LastCommitted && got != nil:
			t.Errorf("%s acknowledged at version %d > %d is in the copy", k, a.version, rep.LastCommitted)
		case a.version <= rep.LastCommitted:
			in++
		default:
			after++
		}
	}
	if in < 30 {
		t.Fatalf("only %d acknowledged writes in the copy", in)
	}
	t.Logf("backup of mon.%s at version %d: %d bytes, %d acknowledged writes in it, %d after", rep.Mon, rep.LastCommitted, rep.Bytes, in, after)
}
