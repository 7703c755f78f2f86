package kvstore

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// Child modes: the test binary re-executes itself with these in the environment.
const (
	envChild = "KVSTORE_TEST_CHILD"
	envPath  = "KVSTORE_TEST_PATH"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "":
		os.Exit(m.Run())
	case "writer":
		os.Exit(childWriter(os.Getenv(envPath)))
	case "lock":
		os.Exit(childLock(os.Getenv(envPath)))
	default:
		fmt.Fprintln(os.Stderr, "unknown child mode")
		os.Exit(2)
	}
}

const (
	seqBucket  = "seq"
	counterKey = "counter"
)

// childWriter applies numbered transactions until killed: transaction n writes seq/n and sets
// meta/counter = n, then reports n on stdout (so the parent knows n is durable).
func childWriter(path string) int {
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	counter, err := readCounter(s)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rng := rand.New(rand.NewPCG(counter, 3))
	for n := counter + 1; ; n++ {
		// Values up to 16 KiB so transactions span pages and the kill often lands mid-write.
		v := make([]byte, rng.IntN(16<<10))
		for i := range v {
			v[i] = byte(n)
		}
		err := s.Apply(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
			{Kind: minimonv1.StoreOp_PUT, Bucket: seqBucket, Key: U64Key(n), Value: v},
			{Kind: minimonv1.StoreOp_PUT, Bucket: BucketMeta, Key: []byte(counterKey), Value: U64Key(n)},
		}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintln(os.Stdout, n)
	}
}

func readCounter(s Store) (uint64, error) {
	v, err := s.Get(BucketMeta, []byte(counterKey))
	if err != nil || v == nil {
		return 0, err
	}
	return ParseU64Key(v)
}

// childLock tries to open a store another process holds and reports the error it got.
func childLock(path string) int {
	s, err := Open(path, Options{Timeout: 100 * time.Millisecond})
	if err != nil {
		fmt.Println(err)
		if errors.Is(err, ErrLocked) {
			return 3
		}
		return 1
	}
	_ = s.Close()
	fmt.Println("opened")
	return 0
}

func child(t *testing.T, mode, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// GORACE: the race runtime otherwise sleeps 1s at exit.
	cmd.Env = append(os.Environ(), envChild+"="+mode, envPath+"="+path, "GORACE=atexit_sleep_ms=0")
	return cmd
}

// TestKillMidStream kills a writer with SIGKILL while it commits and checks that the store
// opens and holds exactly a prefix of the transactions, including every acknowledged one.
func TestKillMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	var acked uint64
	for round := range 3 {
		cmd := child(t, "writer", path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after a seeded number of further acknowledged transactions.
		target := acked + 20 + uint64(round*7)
		sc := bufio.NewScanner(out)
		for acked < target && sc.Scan() {
			n, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			acked = n
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if acked < target {
			t.Fatalf("round %d: writer stopped at %d before %d: %s", round, acked, target, stderr.String())
		}

		s, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("round %d: store does not open after SIGKILL: %v", round, err)
		}
		counter, err := readCounter(s)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		err = s.ForEach(seqBucket, nil, func(k, v []byte) error {
			n, err := ParseU64Key(k)
			if err != nil {
				return err
			}
			if len(v) > 0 && v[0] != byte(n) {
				return fmt.Errorf("seq %d holds a value of seq %d", n, v[0])
			}
			seqs = append(seqs, n)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if counter < acked {
			t.Fatalf("round %d: counter %d lost acknowledged transaction %d", round, counter, acked)
		}
		if uint64(len(seqs)) != counter {
			t.Fatalf("round %d: counter %d but %d seq keys", round, counter, len(seqs))
		}
		for i, n := range seqs {
			if n != uint64(i+1) {
				t.Fatalf("round %d: seq keys are not 1..%d: position %d holds %d", round, counter, i, n)
			}
		}
		t.Logf("round %d: acked %d, store holds %d", round, acked, counter)
		acked = counter
	}
}

// TestSecondProcessLocked checks that a second process gets a clear error, not a hang, while
// the store is open, and can open it once it is closed.
func TestSecondProcessLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := child(t, "lock", path).Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("second process: err %v, output %q; want ErrLocked (exit 3)", err, out)
	}
	if want := fmt.Sprintf("store %s is locked by another process", path); !strings.Contains(string(out), want) {
		t.Fatalf("lock error %q does not say %q", out, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out, err = child(t, "lock", path).Output()
	if err != nil || strings.TrimSpace(string(out)) != "opened" {
		t.Fatalf("after close: err %v, output %q", err, out)
	}
}

func TestOpenCorruptFile(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	random := make([]byte, 64<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	// A real store whose two meta pages are overwritten.
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	d, err := Open(good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, d, put("kv", "a", "1"))
	_ = d.Close()
	smashed, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := os.Getpagesize()
	for i := 16; i < 2*pageSize && i < len(smashed); i++ {
		smashed[i] ^= 0x5a
	}
	cases := map[string][]byte{
		"text":          []byte("this is not a bbolt file\n"),
		"random":        random,
		"smashed-metas": smashed,
		"zeros":         make([]byte, 4*pageSize),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".db")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err == nil {
				_ = s.Close()
				t.Fatal("corrupt file opened")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q is not ErrCorrupt naming the file", err)
			}
			t.Logf("%v", err)
		})
	}
}
