//go:build !linux

package e2e

import "syscall"

// procAttr: without Pdeathsig, cleanup relies on the harness killing every child.
func procAttr() *syscall.SysProcAttr { return nil }
