package e2e

import "syscall"

// procAttr makes the kernel kill a monitor when the process that started it dies, so a test
// binary killed by its timeout leaves no orphan monitors behind.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
