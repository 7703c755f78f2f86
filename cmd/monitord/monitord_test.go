package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// testVersion is linked into the test binary the way the Makefile links the release version,
// so TestVersion also checks the -X variable's name.
const testVersion = "v0.0.0-monitordtest"

// binPath is monitord built once for the whole package by TestMain.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "monitord-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "monitord")
	build := exec.Command("go", "build", "-o", binPath, "-ldflags", "-X main.version="+testVersion, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building monitord:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// cleanEnv is the test process's environment without MINIMON_ variables, plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MINIMON_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// monitord runs the binary to completion (bounded) and returns its exit code and output.
func monitord(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = cleanEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			code = ee.ExitCode()
		default:
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("monitord %q did not exit; stderr:\n%s", args, errb.String())
	}
	return code, out.String(), errb.String()
}

func TestHelp(t *testing.T) {
	code, out, errOut := monitord(t, nil, "--help")
	if code != 0 {
		t.Fatalf("--help exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"--initial-members", "--metrics-addr", "--log-format", "MINIMON_",
		// design.md section 1's three-monitor example
		"monitord --name a --data-dir /var/lib/minimon/a --addr 10.0.0.1:6789",
		"a=10.0.0.1:6789,b=10.0.0.2:6789,c=10.0.0.3:6789",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, errOut := monitord(t, nil, "version")
	if code != 0 || strings.TrimSpace(out) != "monitord "+testVersion {
		t.Fatalf("version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestConfigErrors: a bad setting exits 1 with one line naming it, before the data dir is
// touched.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string // substrings of the one stderr line
	}{
		{"env bad duration", []string{"MINIMON_MON_LEASE=fast"}, nil,
			[]string{"MINIMON_MON_LEASE", "--mon-lease"}},
		{"flag bad duration", nil, []string{"--mon-lease=fast"}, []string{"--mon-lease"}},
		{"timing inequality", nil, []string{"--mon-lease-ack-timeout-factor=0.5"},
			[]string{"--mon-lease-ack-timeout-factor"}},
		{"bad log format", nil, []string{"--log-format=xml"}, []string{"--log-format"}},
		{"missing name", nil, []string{"--name="}, []string{"--name is required"}},
		{"misspelt env named", []string{"MINIMON_NAM=a"}, []string{"--name="},
			[]string{"--name is required", "MINIMON_NAM"}},
		{"unknown command", nil, []string{"frobnicate"}, []string{"frobnicate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "a")
			args := append([]string{"--name", "a", "--data-dir", dataDir, "--addr", "127.0.0.1:1",
				"--initial-members", "a=127.0.0.1:1"}, tc.args...)
			if tc.name == "unknown command" {
				args = tc.args
			}
			code, _, errOut := monitord(t, tc.env, args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.HasPrefix(errOut, "monitord: ") || strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr is not one line \"monitord: <reason>\": %q", errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q does not mention %q", errOut, w)
				}
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("data dir touched before validation (stat: %v)", err)
			}
		})
	}
}

// freeAddr reserves a loopback port and releases it for the child to bind.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// syncBuffer collects a child's stderr while the test reads it.
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

func httpGet(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestServeSingleMember runs a one-member cluster with --metrics-addr: it becomes ready, serves
// metrics, and stops with status 0 on SIGTERM.
func TestServeSingleMember(t *testing.T) {
	addr, maddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(binPath, "--name", "a", "--data-dir", filepath.Join(t.TempDir(), "a"),
		"--addr", addr, "--initial-members", "a="+addr, "--metrics-addr", maddr)
	cmd.Env = cleanEnv("MINIMON_LOG_LEVEL=debug", "MINIMON_NO_SUCH_OPTION=1")
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("monitord stderr:\n%s", logs.String())
		}
	})
	hc := &http.Client{Timeout: 2 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	base := "http://" + maddr

	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _, err := httpGet(hc, base+"/readyz")
		if err == nil && code == http.StatusOK {
			break
		}
		if err == nil && code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz = %d, want 200 or 503", code)
		}
		select {
		case err := <-done:
			exited = true
			t.Fatalf("monitord exited early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 by the deadline (last: %d, %v)", code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body, err := httpGet(hc, base+"/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("/healthz = %d %q, %v", code, body, err)
	}
	code, body, err := httpGet(hc, base+"/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics = %d, %v", code, err)
	}
	for _, want := range []string{"minimon_quorum_size 1", "minimon_is_leader 1", "minimon_paxos_commits_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Fatalf("after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("monitord did not exit within 10s of SIGTERM")
	}

	// Every log line is JSON (the default encoding), and the warnings and lifecycle lines are there.
	var sawWarn, sawReady, sawStopped bool
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			t.Errorf("log line is not JSON: %q", line)
		}
		sawWarn = sawWarn || strings.Contains(line, "MINIMON_NO_SUCH_OPTION")
		sawReady = sawReady || strings.Contains(line, `"msg":"monitor ready"`)
		sawStopped = sawStopped || strings.Contains(line, `"msg":"monitord stopped"`)
	}
	if !sawWarn || !sawReady || !sawStopped {
		t.Errorf("logs: unknown-env warning %v, ready line %v, stopped line %v", sawWarn, sawReady, sawStopped)
	}
	// The listener is gone with the process.
	if _, _, err := httpGet(hc, base+"/healthz"); err == nil {
		t.Error("/healthz still answers after exit")
	}
}
