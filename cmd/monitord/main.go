// Command monitord runs one minimon monitor (design.md sections 1 and 6): it turns flags and
// MINIMON_ environment variables into a monitor.Config, validates it before anything opens the
// store, serves until SIGINT or SIGTERM, and optionally exposes /metrics, /healthz and /readyz
// on a separate listener.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at link time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		lookupEnv: os.LookupEnv,
		environ:   os.Environ(),
	})
	stop()
	os.Exit(code)
}

// env is what a run of monitord sees of its process.
type env struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	environ        []string
}

// run executes one monitord command line and returns its exit status: 0 after a clean stop
// (also when this monitor was removed from the member map, so a supervisor does not restart
// it), 1 with one line "monitord: <reason>" on stderr otherwise.
func run(ctx context.Context, args []string, e env) int {
	root := newRootCmd(e)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		// Validate reports every problem at once, joined by newlines; keep it one line so a
		// supervisor's log shows the whole reason.
		fmt.Fprintf(e.stderr, "monitord: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 1
	}
	return 0
}
