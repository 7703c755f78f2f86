package monitor

import (
	"errors"
	"os"
	"sync/atomic"

	"go.uber.org/zap"
)

// Failpoints: test-only crash points, compiled always and inert unless armed (gofail is not a
// dependency). A real process arms one with the environment variable MINIMON_FAILPOINT, read
// once at start: it then exits with status 1 at that point, like a kill -9 there. In-process
// tests arm one with armFailpoint: Run then returns errFailpoint instead (the loop stops as on
// a fatal store error).
const (
	// EnvFailpoint names the failpoint a monitor process arms at start.
	EnvFailpoint = "MINIMON_FAILPOINT"
	// FailpointCrashBeforeReply: the leader stops after a client write is chosen (the commit
	// condition holds) and before its reply goes out, so the client sees the outcome unknown
	// and resends the same WriteID elsewhere (dedup.go).
	FailpointCrashBeforeReply = "crash-before-reply"
)

// errFailpoint is what Run returns after an in-process failpoint fired.
var errFailpoint = errors.New("monitor: failpoint " + FailpointCrashBeforeReply + " fired")

// envFailpoint is read once, at process start.
var envFailpoint = os.Getenv(EnvFailpoint)

// Armed modes of a failpoint.
const (
	fpOff  int32 = iota
	fpExit       // exit the process
	fpStop       // stop Run with errFailpoint (in-process tests)
)

// failpoints is the armed state of one Monitor.
type failpoints struct {
	crashBeforeReply atomic.Int32
}

// armFailpoint arms name in-process (tests); false for an unknown name.
func (m *Monitor) armFailpoint(name string) bool {
	if name != FailpointCrashBeforeReply {
		return false
	}
	m.fp.crashBeforeReply.Store(fpStop)
	return true
}

// crashBeforeReply fires the failpoint of that name if armed (once). True: the caller must not
// send the reply (the monitor is stopping).
func (m *Monitor) crashBeforeReply() bool {
	mode := m.fp.crashBeforeReply.Swap(fpOff)
	if mode == fpOff && envFailpoint == FailpointCrashBeforeReply {
		mode = fpExit
	}
	switch mode {
	case fpExit:
		m.lg.Error("failpoint fired: exiting before the reply", zap.String("failpoint", FailpointCrashBeforeReply))
		_ = m.lg.Sync()
		os.Exit(1)
	case fpStop:
		m.lg.Warn("failpoint fired: stopping before the reply", zap.String("failpoint", FailpointCrashBeforeReply))
		select {
		case m.fatal <- errFailpoint:
		default:
		}
		return true
	}
	return false
}
