package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/minimon/minimon/client/clienttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is written by a running watch while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type result struct {
	code        int
	out, errOut string
}

func runCtx(ctx context.Context, stdin string, args ...string) result {
	var out, errOut syncBuffer
	code := run(ctx, args, env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errOut,
		getenv: func(string) string { return "" }})
	return result{code, out.String(), errOut.String()}
}

func monctl(t *testing.T, addr string, args ...string) result {
	t.Helper()
	return runCtx(context.Background(), "", append([]string{"-m", addr, "--timeout", "5s"}, args...)...)
}

func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func TestPlainOutput(t *testing.T) {
	s := clienttest.New()
	addr := s.Start(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"mon", "stat"}, "e3: 3 mons at {a=127.0.0.1:6789,b=127.0.0.1:6790,c=127.0.0.1:6791}, election epoch 6, leader 0 a, quorum 0,1,2 a,b,c\n"},
		{[]string{"config-key", "set", "k1", "v1"}, "set k1\n"},
		{[]string{"config-key", "set", "k0", "v0"}, "set k0\n"},
		{[]string{"config-key", "get", "k1"}, "v1"}, // not a terminal: no newline
		{[]string{"config-key", "ls"}, "k0\nk1\n"},
		{[]string{"config-key", "exists", "k1"}, "key 'k1' exists\n"},
		{[]string{"config", "set", "osd", "debug_ms", "1"}, "set osd debug_ms\n"},
		{[]string{"config", "get", "osd.3", "debug_ms"}, "1"},
		{[]string{"health"}, "HEALTH_WARN clock skew detected on mon.c\n"},
		{[]string{"health", "detail"}, "HEALTH_WARN\n[WRN] MON_CLOCK_SKEW: clock skew detected on mon.c\n    mon.c clock skew 0.3s > max 0.05s\n"},
		{[]string{"mon", "dump"}, "epoch 3\nfsid 7d4b8e0e-0000-4000-8000-000000000001\nlast_changed 2026-01-02T00:00:00Z\ncreated 2026-01-01T00:00:00Z\n0: 127.0.0.1:6789 mon.a\n1: 127.0.0.1:6790 mon.b\n2: 127.0.0.1:6791 mon.c\n"},
		{[]string{"config-key", "rm", "k0"}, "key deleted\n"},
		{[]string{"config-key", "rm", "k0"}, "no such key 'k0'\n"},
	}
	for _, tc := range cases {
		r := monctl(t, addr, tc.args...)
		if r.code != 0 || r.out != tc.want {
			t.Errorf("%v: code %d out %q err %q, want %q", tc.args, r.code, r.out, r.errOut, tc.want)
		}
	}
	r := monctl(t, addr, "config", "dump")
	if r.code != 0 || !strings.Contains(r.out, "WHO") || !strings.Contains(r.out, "debug_ms") {
		t.Errorf("config dump: %+v", r)
	}
	r = monctl(t, addr, "status")
	if r.code != 0 || !strings.Contains(r.out, "quorum a,b,c, leader a, election epoch 6, monmap e3") {
		t.Errorf("status: %+v", r)
	}
}

func TestJSONOutput(t *testing.T) {
	s := clienttest.New()
	addr := s.Start(t)

	r := monctl(t, addr, "-f", "json", "quorum-status")
	var qs map[string]any
	if err := json.Unmarshal([]byte(r.out), &qs); err != nil || r.code != 0 {
		t.Fatalf("quorum-status: %v %+v", err, r)
	}
	for _, k := range []string{"election_epoch", "quorum", "quorum_names", "quorum_leader_name", "quorum_age", "monmap"} {
		if _, ok := qs[k]; !ok {
			t.Errorf("quorum-status lacks %q: %s", k, r.out)
		}
	}
	if _, ok := qs["election_epoch"].(float64); !ok {
		t.Errorf("election_epoch is not a JSON number: %s", r.out)
	}
	mm := qs["monmap"].(map[string]any)
	if e, ok := mm["epoch"].(float64); !ok || e != 3 {
		t.Errorf("monmap.epoch %v", mm["epoch"])
	}
	if mons := mm["mons"].([]any); len(mons) != 3 || mons[0].(map[string]any)["name"] != "a" {
		t.Errorf("mons %v", mm["mons"])
	}

	r = monctl(t, addr, "-f", "json", "status")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.out), &st); err != nil {
		t.Fatal(err, r.out)
	}
	px := st["paxos"].(map[string]any)
	if _, ok := px["last_committed"].(float64); !ok {
		t.Errorf("paxos.last_committed not a number: %s", r.out)
	}
	for _, k := range []string{"fsid", "health", "election_epoch", "quorum_names", "leader", "monmap_epoch"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status lacks %q", k)
		}
	}

	r = monctl(t, addr, "-f", "json", "mon-status")
	var ms map[string]any
	if err := json.Unmarshal([]byte(r.out), &ms); err != nil {
		t.Fatal(err, r.out)
	}
	// Zero values are present: rank 0 and an empty outside_quorum.
	if ms["rank"] != float64(0) || ms["state"] != "leader" || ms["outside_quorum"] == nil {
		t.Errorf("mon-status: %s", r.out)
	}

	monctl(t, addr, "config-key", "set", "b", "2")
	monctl(t, addr, "config-key", "set", "a", "1")
	if r = monctl(t, addr, "-f", "json", "config-key", "ls"); r.out != "[\"a\",\"b\"]\n" {
		t.Errorf("config-key ls json: %q", r.out)
	}
	monctl(t, addr, "config", "set", "global", "mon_lease", "5")
	r = monctl(t, addr, "-f", "json", "config", "dump")
	if r.out != `[{"section":"global","mask":"","name":"mon_lease","value":"5"}]`+"\n" {
		t.Errorf("config dump json: %q", r.out)
	}
	r = monctl(t, addr, "-f", "json-pretty", "mon", "dump")
	if !strings.Contains(r.out, "\n  \"epoch\": 3,\n") {
		t.Errorf("mon dump json-pretty: %s", r.out)
	}
}

func TestExitCodes(t *testing.T) {
	s := clienttest.New()
	s.MaxValueSize = 8
	addr := s.Start(t)
	noQuorum := clienttest.New()
	noQuorum.Intercept = func(string, proto.Message) error { return status.Error(codes.Unavailable, "no quorum") }
	nqAddr := noQuorum.Start(t)

	cases := []struct {
		name string
		args []string
		code int
	}{
		{"not found", []string{"-m", addr, "config-key", "get", "nope"}, 2},
		{"exists missing", []string{"-m", addr, "config-key", "exists", "nope"}, 2},
		{"option unset", []string{"-m", addr, "config", "get", "osd.1", "nope"}, 2},
		{"invalid", []string{"-m", addr, "config", "set", "osd", "Bad-Name", "1"}, 22},
		{"exists", []string{"-m", addr, "mon", "add", "a", "10.9.9.9:6789"}, 17},
		{"too big", []string{"-m", addr, "config-key", "set", "k", "123456789"}, 27},
		{"unreachable", []string{"-m", deadAddr(t), "--timeout", "300ms", "status"}, 110},
		{"no quorum", []string{"-m", nqAddr, "--timeout", "300ms", "config-key", "set", "k", "v"}, 110},
		{"bad format", []string{"-m", addr, "-f", "xml", "status"}, 22},
		{"bad args", []string{"-m", addr, "config", "set", "osd"}, 22},
		{"unknown command", []string{"-m", addr, "statsu"}, 22},
		{"unknown flag", []string{"-m", addr, "status", "--nope"}, 22},
		{"bad number", []string{"-m", addr, "config", "log", "x"}, 22},
	}
	for _, tc := range cases {
		r := runCtx(context.Background(), "", tc.args...)
		if r.code != tc.code {
			t.Errorf("%s: code %d, want %d (stderr %q)", tc.name, r.code, tc.code, r.errOut)
		}
		if !strings.HasPrefix(r.errOut, "monctl: ") || strings.Count(r.errOut, "\n") != 1 {
			t.Errorf("%s: stderr %q, want one line starting with monctl:", tc.name, r.errOut)
		}
	}
}

func TestConfigKeySetFromFile(t *testing.T) {
	s := clienttest.New()
	addr := s.Start(t)
	path := filepath.Join(t.TempDir(), "v.bin")
	val := []byte("line1\nline2\x00\xff")
	if err := os.WriteFile(path, val, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := monctl(t, addr, "config-key", "set", "bin", "-i", path); r.code != 0 || r.out != "set bin\n" {
		t.Fatalf("set -i: %+v", r)
	}
	if r := monctl(t, addr, "config-key", "get", "bin"); r.out != string(val) {
		t.Fatalf("get: %q", r.out)
	}
	r := runCtx(context.Background(), "from stdin", "-m", addr, "config-key", "set", "s", "-i", "-")
	if r.code != 0 {
		t.Fatalf("set -i -: %+v", r)
	}
	if r := monctl(t, addr, "config-key", "get", "s"); r.out != "from stdin" {
		t.Fatalf("get: %q", r.out)
	}
	if r := monctl(t, addr, "config-key", "set", "x", "v", "-i", path); r.code != 22 {
		t.Fatalf("VALUE and -i: %+v", r)
	}
	if r := monctl(t, addr, "config-key", "set", "x", "-i", filepath.Join(t.TempDir(), "missing")); r.code != 1 {
		t.Fatalf("missing file: %+v", r)
	}
}

func TestEnvMonHost(t *testing.T) {
	s := clienttest.New()
	addr := s.Start(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"mon", "stat", "--timeout", "5s"}, env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut,
		getenv: func(k string) string {
			if k == "MONCTL_MON_HOST" {
				return addr
			}
			return ""
		}})
	if code != 0 || !strings.HasPrefix(out.String(), "e3: ") {
		t.Fatalf("code %d out %q err %q", code, out.String(), errOut.String())
	}
}

func TestWatchConfigKey(t *testing.T) {
	for _, format := range []string{"plain", "json"} {
		t.Run(format, func(t *testing.T) {
			s := clienttest.New()
			s.SetKV("p/a", []byte("1"))
			addr := s.Start(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out, errOut syncBuffer
			done := make(chan int)
			go func() {
				done <- run(ctx, []string{"-m", addr, "-f", format, "watch", "config-key", "p/"},
					env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
			}()
			waitFor(t, &out, 1)
			monctl(t, addr, "config-key", "set", "p/b", "2")
			monctl(t, addr, "config-key", "set", "q/x", "3") // outside the prefix
			monctl(t, addr, "config-key", "rm", "p/a")
			waitFor(t, &out, 3)
			cancel() // Ctrl-C
			if code := <-done; code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if format == "plain" {
				want := []string{"2 (current): set p/a 1", "3: set p/b 2", "5: rm p/a"}
				if strings.Join(lines, "|") != strings.Join(want, "|") {
					t.Fatalf("lines %q, want %q", lines, want)
				}
				return
			}
			var ev struct {
				Version  uint64 `json:"version"`
				Snapshot bool   `json:"snapshot"`
			}
			if len(lines) != 3 {
				t.Fatalf("lines %q", lines)
			}
			if err := json.Unmarshal([]byte(lines[2]), &ev); err != nil || ev.Version != 5 || ev.Snapshot {
				t.Fatalf("last event %q: %v", lines[2], err)
			}
		})
	}
}

func TestWatchAttachTimeout(t *testing.T) {
	r := runCtx(context.Background(), "", "-m", deadAddr(t), "--timeout", "300ms", "watch", "monmap")
	if r.code != 110 {
		t.Fatalf("%+v", r)
	}
}

func waitFor(t *testing.T, b *syncBuffer, lines int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(b.String(), "\n") < lines {
		if time.Now().After(deadline) {
			t.Fatalf("waited for %d lines, have %q", lines, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCompletionAndHelp(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := runCtx(context.Background(), "", "completion", sh)
		if r.code != 0 || !strings.Contains(r.out, "monctl") || len(r.out) < 500 {
			t.Errorf("completion %s: code %d, %d bytes", sh, r.code, len(r.out))
		}
	}
	if r := runCtx(context.Background(), "", "completion", "bash"); !strings.Contains(r.out, "__start_monctl") {
		t.Errorf("bash completion lacks its entry function")
	}
	if r := runCtx(context.Background(), "", "completion", "powershell"); r.code != 22 {
		t.Errorf("completion powershell: %+v", r)
	}
	// Every command has an example, shown by --help.
	root := newRootCmd(&globalOpts{env: env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() != "help" && c.Example == "" {
			t.Errorf("%s has no Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	r := runCtx(context.Background(), "", "config-key", "set", "--help")
	if r.code != 0 || !strings.Contains(r.out, "Examples:") || !strings.Contains(r.out, "-i cert.pem") {
		t.Errorf("help: %+v", r)
	}
}
