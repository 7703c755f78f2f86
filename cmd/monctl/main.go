// Command monctl is minimon's command-line client (design.md section 5).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/minimon/minimon/client"
)

// Exit codes, like the ceph CLI's (errno values).
const (
	exitOK       = 0
	exitFailure  = 1
	exitENOENT   = 2
	exitEEXIST   = 17
	exitEINVAL   = 22
	exitEFBIG    = 27
	exitETIMEOUT = 110
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{
		stdin:      os.Stdin,
		stdout:     os.Stdout,
		stderr:     os.Stderr,
		getenv:     os.Getenv,
		isTerminal: isTerminal(os.Stdout),
	})
	stop()
	os.Exit(code)
}

// env is what a run of monctl sees of its process, so tests can run it in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	isTerminal     bool // stdout is a terminal: `get` values end with a newline
}

// run executes one monctl command and returns its exit status.
func run(ctx context.Context, args []string, e env) int {
	root := newRootCmd(&globalOpts{env: e})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(e.stderr, "monctl: %v\n", err)
	return exitCode(err)
}

// exitCode maps an error to the ceph CLI's exit statuses.
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, client.ErrTimeout), errors.Is(err, client.ErrNoQuorum):
		return exitETIMEOUT // no monitor reachable, or none in a quorum, within --timeout
	case errors.Is(err, client.ErrNotFound):
		return exitENOENT
	case errors.Is(err, client.ErrInvalid):
		return exitEINVAL
	case errors.Is(err, client.ErrExists):
		return exitEEXIST
	case errors.Is(err, client.ErrTooBig):
		return exitEFBIG
	}
	return exitFailure
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
