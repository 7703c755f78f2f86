package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestJoinStoppedDuringHandshake: --join keeps probing an unreachable cluster; SIGTERM during
// that handshake is a clean stop (status 0) and leaves the store uninitialized.
func TestJoinStoppedDuringHandshake(t *testing.T) {
	addr, dead := freeAddr(t), freeAddr(t)
	dir := filepath.Join(t.TempDir(), "d")
	cmd := exec.Command(binPath, "--name", "d", "--data-dir", dir, "--addr", addr, "--join", dead)
	cmd.Env = cleanEnv("MINIMON_LOG_LEVEL=debug")
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Wait for a failed probe, so the signal lands inside the handshake.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "probe failed") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("no probe attempt logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after SIGTERM during --join: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("monitord did not exit within 10s of SIGTERM")
	}
	if !strings.Contains(logs.String(), "stopped during start-up") {
		t.Errorf("no start-up stop line:\n%s", logs.String())
	}
}
